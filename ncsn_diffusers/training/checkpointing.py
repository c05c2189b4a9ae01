"""Crash-safe training checkpoints: safetensors + one JSON file, written under a temporary name and renamed last.

Checkpoints are written as `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` once complete, so a folder with
the final name is always whole: a run killed at any moment leaves at worst a `*.tmp` folder, which is ignored and
removed. A checkpoint holds safetensors files and one JSON file only (no pickle is ever written or read), with the
SHA-256 of each file, so a damaged one is named instead of half-loaded.
"""

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


TMP_SUFFIX = ".tmp"


STATE_FILE = "training_state.json"


# 1: accelerate's `save_state` (pickles, never loaded: a pickle can run code); 2: safetensors + training_state.json.
CHECKPOINT_FORMAT = 2


ABANDONED_PREFIX = "abandoned-"

# The files `save_checkpoint` writes into a checkpoint folder: the only ones ever deleted from one.
CHECKPOINT_FILE = re.compile(
    r"^((model|optimizer|lr_scheduler|ema|objective)\.safetensors|rng_state_\d+\.safetensors|"
    + re.escape(STATE_FILE)
    + r")$"
)


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The complete checkpoints `checkpoint-<step>` of `output_dir` as (step, path), oldest first.

    A checkpoint counts only if its name has no suffix (the rename happens last) and it holds the state file written
    just before the rename.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step, or `None` when there is none."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resume_hint(output_dir: str | os.PathLike) -> str:
    """One line for a run stopped by the user (Ctrl-C): what is kept and how to continue."""
    checkpoint = latest_checkpoint(output_dir) if Path(output_dir).is_dir() else None
    where = f"from {checkpoint}" if checkpoint else "from the start (no checkpoint was written yet)"
    return f"Interrupted. To continue {where}, rerun the same command with --resume_from_checkpoint latest."


def remove_stale_temporaries(output_dir: str | os.PathLike) -> list[Path]:
    """Removes the `checkpoint-*.tmp*` folders left by a killed run; returns those removed.

    Only the files [`save_checkpoint`] writes are deleted ([`CHECKPOINT_FILE`] names); a folder that still holds
    anything else is left in place, with a warning naming it.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    stale = [p for p in output_dir.iterdir() if p.name.startswith("checkpoint-") and TMP_SUFFIX in p.name]
    removed = []
    for path in stale:
        if path.is_dir() and not remove_checkpoint_files(path):
            removed.append(path)
        elif path.is_dir():
            logger.warning(f"Left {path} in place: it holds files train_ncsn.py did not write.")
    return removed


def foreign_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-*` entries of `output_dir` that no run of train_ncsn.py wrote: files, or folders without
    `STATE_FILE` (every checkpoint [`save_checkpoint`] renames into place holds one). `*.tmp*` folders are not
    counted: they are temporaries, of which only our own files are ever removed."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    return sorted(
        p
        for p in output_dir.iterdir()
        if p.name.startswith("checkpoint-") and TMP_SUFFIX not in p.name and not (p / STATE_FILE).is_file()
    )


def remove_checkpoint_files(folder: Path) -> list[Path]:
    """Deletes the files of `folder` that [`save_checkpoint`] writes, then the folder if it is empty.

    Returns:
        `list[Path]`: what is left (files someone else put there), never deleted.
    """
    for path in folder.iterdir():
        if path.is_file() and not path.is_symlink() and CHECKPOINT_FILE.match(path.name):
            path.unlink()
    left = sorted(folder.iterdir())
    if not left:
        folder.rmdir()
    return left


def read_training_state(checkpoint: str | os.PathLike) -> dict:
    """The JSON state (at least `{"step": int}`) stored in a complete checkpoint."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ValueError(
            f"{checkpoint} is not a complete checkpoint (no {STATE_FILE}); pass a `checkpoint-<step>` folder written "
            "by train_ncsn.py, or `latest`."
        )
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointDamagedError(checkpoint, f"{STATE_FILE} is not valid JSON ({err})") from err


class CheckpointDamagedError(ValueError):
    """A complete-looking checkpoint whose files are missing or do not match their recorded SHA-256.

    The message names the file and offers the previous complete checkpoint of the same folder.
    """

    def __init__(self, checkpoint: str | os.PathLike, problem: str):
        checkpoint = Path(checkpoint)
        earlier = [path for step, path in complete_checkpoints(checkpoint.parent) if path.name != checkpoint.name]
        match = CHECKPOINT_PATTERN.match(checkpoint.name)
        if match:
            earlier = [path for path in earlier if int(path.name.split("-")[1]) < int(match.group(1))]
        offer = (
            f"resume from the previous complete checkpoint with --resume_from_checkpoint {earlier[-1]}"
            if earlier
            else "there is no earlier complete checkpoint: start afresh with --overwrite_output_dir"
        )
        super().__init__(f"Checkpoint {checkpoint} is damaged: {problem}. Delete it and {offer}.")


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    state: dict,
    total_limit: int | None,
    *,
    model,
    optimizer=None,
    lr_scheduler=None,
    ema=None,
    objective=None,
):
    """Atomically writes `output_dir/checkpoint-<step>` as safetensors + JSON, then prunes old ones.

    Every process must call it (each saves its own torch RNG state, which dropout draws from). The files go to
    `checkpoint-<step>.tmp`; the main process adds `STATE_FILE` (the JSON parts and every file's SHA-256) last and
    renames the folder, so a kill at any moment leaves either the previous checkpoints untouched or the new one
    complete. Pruning keeps the `total_limit` newest complete checkpoints, renaming each victim to a `.tmp` name
    before deleting it so that a half-deleted folder is never taken for a checkpoint; abandoned checkpoints (see
    [`abandon_later_checkpoints`]) are never pruned.

    Args:
        model, optimizer, lr_scheduler, ema: what to save (prepared or not); `ema` is a diffusers `EMAModel`.
        objective: an objective whose `state_dict()` is saved when it is not empty (a distillation's target network).

    Returns:
        `Path`: the final checkpoint folder.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f"checkpoint-{step}{TMP_SUFFIX}"
    if accelerator.is_main_process:
        if tmp.exists() and remove_checkpoint_files(tmp):
            raise RuntimeError(f"{tmp} holds files train_ncsn.py did not write; move them away and resume.")
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_file(rng_state(), tmp / f"rng_state_{accelerator.process_index}.safetensors")
    if accelerator.is_main_process:
        parts = {}
        save_file(_contiguous(accelerator.unwrap_model(model).state_dict()), tmp / "model.safetensors")
        stateful = {"optimizer": optimizer, "lr_scheduler": lr_scheduler, "ema": ema}
        if objective is not None and objective.state_dict():  # an objective with models of its own
            stateful["objective"] = objective
        for name, obj in stateful.items():
            if obj is not None:
                parts[name], tensors = encode_state(obj.state_dict())
                if tensors:
                    save_file(tensors, tmp / f"{name}.safetensors")
        if accelerator.scaler is not None:  # fp16's loss scale
            parts["grad_scaler"], _ = encode_state(accelerator.scaler.state_dict())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # No fsync: kill -9 loses nothing the kernel holds, and after a power loss the hashes name a file that did not
        # reach the disk, so resuming offers the previous checkpoint instead of loading it.
        files = {path.name: _sha256(path) for path in sorted(tmp.iterdir())}
        record = {**state, "step": step, "checkpoint_format": CHECKPOINT_FORMAT, **parts, "files": files}
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=1))
        if final.exists():  # a re-run from an older checkpoint overwrites the later one it reaches again
            discard_checkpoint(final)
        os.replace(tmp, final)
        if total_limit is not None:
            for _, old in complete_checkpoints(output_dir)[:-total_limit]:
                discard_checkpoint(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(
    checkpoint: str | os.PathLike, accelerator, *, model, optimizer=None, lr_scheduler=None, ema=None, objective=None
):
    """Restores what [`save_checkpoint`] wrote, reading only its safetensors files and `STATE_FILE`.

    Every file is checked against the SHA-256 recorded in `STATE_FILE` before anything is loaded; files the
    checkpoint does not list (a `*.pkl` or `*.bin` placed there, say) are never opened, only named in a warning.
    A checkpoint of format 1 (accelerate's pickles, written by older versions of train_ncsn.py) is refused.

    Returns:
        `dict`: the JSON state (`step`, `epoch`, the run's settings, ...).
    """
    checkpoint = Path(checkpoint)
    state = read_training_state(checkpoint)
    if state.get("checkpoint_format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{checkpoint} was written by an older train_ncsn.py in accelerate's pickle format, which is not loaded "
            "because unpickling can run arbitrary code. Start a new run (--overwrite_output_dir or another "
            "--output_dir), or resume it with the version of train_ncsn.py that wrote it."
        )
    files = state.get("files", {})
    for name, digest in files.items():
        path = checkpoint / name
        if not path.is_file():
            raise CheckpointDamagedError(checkpoint, f"{name} is missing")
        if _sha256(path) != digest:
            raise CheckpointDamagedError(checkpoint, f"{name} does not match its SHA-256 in {STATE_FILE}")
    unknown = sorted(p.name for p in checkpoint.iterdir() if p.name not in files and p.name != STATE_FILE)
    if unknown:
        logger.warning(f"Ignoring files that {checkpoint} does not list (never opened): {', '.join(unknown)}")

    def tensors(name: str) -> dict:
        return load_file(checkpoint / name) if name in files else {}

    try:
        accelerator.unwrap_model(model).load_state_dict(tensors("model.safetensors"))
    except RuntimeError as err:  # missing, unexpected or differently shaped weights
        raise ValueError(
            f"{checkpoint} holds another network than this run builds (its weights do not fit: "
            f"{str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}). Resume it with the "
            "network flags it was trained with (its run's training_args.json lists them: --model_preset, "
            "--model_type, --base_channels, --ncsnv2_variant, the v1 ladder), or start a new run in another "
            "--output_dir."
        ) from None
    for name, obj in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler), ("ema", ema)):
        if obj is not None:
            if name not in state:
                raise ValueError(f"{checkpoint} holds no {name} state; resume it with the settings that wrote it.")
            obj.load_state_dict(decode_state(state[name], tensors(f"{name}.safetensors")))
    if objective is not None and "objective" in state:
        objective.load_state_dict(decode_state(state["objective"], tensors("objective.safetensors")))
    elif objective is not None and objective.state_dict():
        raise ValueError(f"{checkpoint} holds no objective state; resume it with the --objective that wrote it.")
    if accelerator.scaler is not None and "grad_scaler" in state:
        accelerator.scaler.load_state_dict(decode_state(state["grad_scaler"], {}))
    rng_name = f"rng_state_{accelerator.process_index}.safetensors"
    if rng_name in files:
        set_rng_state(tensors(rng_name))
    return state


def rng_state() -> dict[str, torch.Tensor]:
    """The global torch generators (CPU and every CUDA device) that dropout draws from, as uint8 tensors."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_rng_state(state: dict[str, torch.Tensor]):
    torch.set_rng_state(state["cpu"])
    cuda = [state[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in state]
    if cuda and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def encode_state(obj, prefix: str = "") -> tuple:
    """Splits a state dict into a JSON-able structure and a flat dict of tensors for safetensors.

    Tensors become `{"tensor": key}`; tuples `{"tuple": [...]}`; dicts whose keys are not all strings (an
    optimizer's parameter ids) `{"items": [[key, value], ...]}`. [`decode_state`] inverts it exactly (floats
    round-trip through JSON bit for bit).

    Returns:
        `tuple[object, dict[str, torch.Tensor]]`
    """
    tensors = {}

    def encode(value, key):
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
            return {"tensor": key}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {"dict": {k: encode(v, f"{key}.{k}") for k, v in value.items()}}
            return {"items": [[k, encode(v, f"{key}.{k}")] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            encoded = [encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return {"tuple": encoded} if isinstance(value, tuple) else encoded
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"Cannot store {type(value).__name__} at {key!r} as JSON or safetensors.")

    return encode(obj, prefix or "state"), tensors


def decode_state(encoded, tensors: dict[str, torch.Tensor]):
    """Inverts [`encode_state`]: rebuilds the state dict from its JSON structure and tensors."""
    if isinstance(encoded, list):
        return [decode_state(v, tensors) for v in encoded]
    if isinstance(encoded, dict):
        if "tensor" in encoded:
            return tensors[encoded["tensor"]]
        if "tuple" in encoded:
            return tuple(decode_state(v, tensors) for v in encoded["tuple"])
        if "items" in encoded:
            return {k: decode_state(v, tensors) for k, v in encoded["items"]}
        return {k: decode_state(v, tensors) for k, v in encoded["dict"].items()}
    return encoded


def abandon_later_checkpoints(output_dir: str | os.PathLike, step: int) -> list[tuple[Path, Path]]:
    """Moves the checkpoints past `step` aside, to `abandoned-checkpoint-<step>-<UTC time>`, when a run resumes from
    an earlier checkpoint: they belong to the abandoned continuation, so `latest` must not find them and the new run's
    pruning must not delete them. Returns the (old, new) paths.
    """
    moved = []
    for later_step, path in complete_checkpoints(output_dir):
        if later_step > step:
            target = _abandoned_name(path)
            os.replace(path, target)
            moved.append((path, target))
    return moved


def _abandoned_name(path: Path) -> Path:
    """A free `abandoned-<name>-<UTC time>[-n]` beside `path`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, suffix = path.with_name(f"{ABANDONED_PREFIX}{path.name}-{stamp}"), 1
    while target.exists():
        target, suffix = path.with_name(f"{ABANDONED_PREFIX}{path.name}-{stamp}-{suffix}"), suffix + 1
    return target


def _contiguous(state_dict: dict) -> dict:
    return {k: v.detach().contiguous() for k, v in state_dict.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discard_checkpoint(path: Path):
    """Deletes a checkpoint written by [`save_checkpoint`]; files someone else put in it are moved aside with it to
    `abandoned-checkpoint-<step>-<time>` (with a warning), never deleted. A folder without `STATE_FILE` is refused.
    A symlinked checkpoint loses its link only: what it points to is never touched."""
    if path.is_symlink():
        path.unlink()
        return
    if not (path / STATE_FILE).is_file():
        raise RuntimeError(
            f"{path} was not written by train_ncsn.py (no {STATE_FILE}) and is in the way of this run's checkpoint; "
            "move it out of --output_dir and resume."
        )
    doomed = path.with_name(path.name + TMP_SUFFIX + "-delete")
    os.replace(path, doomed)
    (doomed / STATE_FILE).unlink()  # first: a half-deleted folder is never taken for a checkpoint
    if remove_checkpoint_files(doomed):
        target = _abandoned_name(path)
        os.replace(doomed, target)
        logger.warning(f"{path} held files train_ncsn.py did not write; moved them aside to {target}, not deleted.")
