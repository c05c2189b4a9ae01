"""One progress bar for a long evaluation: an overall count (images) with the network calls made so far, refreshed
while a batch runs, so that minutes-long solves and sampling chains show they are alive."""

import contextlib
import time

import torch
from tqdm.auto import tqdm

REFRESH_SECONDS = 1.0


@contextlib.contextmanager
def overall_progress(total: int, desc: str, model: torch.nn.Module | None = None, disable: bool = False):
    """A tqdm bar over `total` images (the caller updates it per batch); with `model`, its forward calls counted in
    the bar's postfix and shown at most once a second. Yields the bar."""
    bar = tqdm(total=total, desc=desc, unit="image", disable=disable)
    calls, last = 0, time.monotonic()

    def count(*_):
        nonlocal calls, last
        calls += 1
        bar.set_postfix_str(f"{calls} network calls", refresh=False)
        if time.monotonic() - last >= REFRESH_SECONDS:
            bar.refresh()
            last = time.monotonic()

    handle = model.register_forward_hook(count) if model is not None and not disable else None
    try:
        yield bar
    finally:
        if handle is not None:
            handle.remove()
        bar.close()
