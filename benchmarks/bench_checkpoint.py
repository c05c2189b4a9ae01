"""Seconds to write and to load one training checkpoint: safetensors + JSON with SHA-256 (`save_checkpoint`,
`load_checkpoint`) against accelerate's pickle-based `save_state` / `load_state`, for a U-Net preset with AdamW and EMA.

    python benchmarks/bench_checkpoint.py --model_preset cifar10
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from ncsn_diffusers.unet_ncsn import PRESETS

from ncsn_diffusers import NCSNUNet2DModel
from ncsn_diffusers.training_utils import load_checkpoint, save_checkpoint


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    accelerator = Accelerator(cpu=True)
    model = NCSNUNet2DModel(**PRESETS[args.model_preset])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=10, num_training_steps=100)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    for p in model.parameters():  # give AdamW its moments without a forward pass
        p.grad = torch.randn_like(p)
    optimizer.step()
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True)
    accelerator.register_for_checkpointing(ema)
    objects = dict(model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema)
    n = sum(p.numel() for p in model.parameters())

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        ours_save = best_of(args.repeats, lambda: save_checkpoint(accelerator, root / "ours", 1, {}, 1, **objects))
        ours_load = best_of(
            args.repeats, lambda: load_checkpoint(root / "ours" / "checkpoint-1", accelerator, **objects)
        )

        def pickle_save():
            shutil.rmtree(root / "pickle", ignore_errors=True)
            accelerator.save_state(str(root / "pickle"))

        theirs_save = best_of(args.repeats, pickle_save)
        theirs_load = best_of(args.repeats, lambda: accelerator.load_state(str(root / "pickle")))
        size = sum(p.stat().st_size for p in (root / "ours" / "checkpoint-1").iterdir()) / 2**20

    print(
        f"preset {args.model_preset!r}: {n / 1e6:.1f}M parameters, checkpoint {size:.0f} MiB, best of {args.repeats}"
    )
    print(f"  save: safetensors + JSON + SHA-256 {ours_save:.2f} s   accelerate save_state {theirs_save:.2f} s")
    print(f"  load: SHA-256 check + safetensors {ours_load:.2f} s   accelerate load_state {theirs_load:.2f} s")


if __name__ == "__main__":
    main()
