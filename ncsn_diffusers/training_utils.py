"""What `train_ncsn.py` needs beyond the model and the scheduler: crash-safe checkpoints, an exclusive lock on the
output folder, the training images, and a deterministic, resumable order of batches and noise.

Checkpoints are written as `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` once complete, so a folder with
the final name is always whole: a run killed at any moment leaves at worst a `*.tmp` folder, which is ignored and
removed. A checkpoint holds safetensors files and one JSON file only (no pickle is ever written or read), with the
SHA-256 of each file, so a damaged one is named instead of half-loaded. Random draws of the training loop (batch order, noise, levels, flips, dequantisation) are pure functions of
(seed, step), so a resumed run repeats exactly what the uninterrupted one would have done, on any number of
processes.
"""

import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np
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
    r"^((model|optimizer|lr_scheduler|ema)\.safetensors|rng_state_\d+\.safetensors|" + re.escape(STATE_FILE) + r")$"
)
LOCK_FILE = ".train_ncsn.lock"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


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
        for name, obj in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler), ("ema", ema)):
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


def load_checkpoint(checkpoint: str | os.PathLike, accelerator, *, model, optimizer=None, lr_scheduler=None, ema=None):
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

    accelerator.unwrap_model(model).load_state_dict(tensors("model.safetensors"))
    for name, obj in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler), ("ema", ema)):
        if obj is not None:
            if name not in state:
                raise ValueError(f"{checkpoint} holds no {name} state; resume it with the settings that wrote it.")
            obj.load_state_dict(decode_state(state[name], tensors(f"{name}.safetensors")))
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


def compare_run_settings(checkpoint: str | os.PathLike, saved: dict, current: dict, must_match) -> list[str]:
    """Checks a resumed run's settings against those its checkpoint was trained with.

    Raises a `ValueError` naming the flag for a setting in `must_match` (the model or the objective would not fit
    the saved weights); returns a warning for every other differing setting (the run goes on, but it is no longer
    the continuation of the original one). Settings a checkpoint does not record are not compared.
    """
    for name in must_match:
        if name in saved and name in current and saved[name] != current[name]:
            raise ValueError(
                f"{checkpoint} was trained with {_flag(name, saved[name])}, this run has {_flag(name, current[name])}. "
                f"Pass {_flag(name, saved[name])} to resume it, or start a new run in another --output_dir."
            )
    return [
        f"{checkpoint} was trained with {_flag(name, saved[name])}, this run has {_flag(name, current[name])}: the "
        "resumed run is not the continuation the original settings would give."
        for name in current
        if name not in must_match and name in saved and saved[name] != current[name]
    ]


def _flag(name: str, value) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


class OutputDirLock:
    """An exclusive `fcntl.flock` on `<folder>/.train_ncsn.lock`, held for the whole run.

    The kernel drops the lock when its holder dies (even by kill -9), so a lock file left behind never blocks; the
    file holds the holder's pid for the message. `release` unlinks the file while still holding the lock, and
    `acquire` re-checks that the file it locked is still the one at the path, so two runs never both hold it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_FILE
        self.fd = None

    def check_free(self):
        """Raises the holder's error if a running process holds the lock; creates nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            self._lock_or_raise(fd)
        finally:
            os.close(fd)  # closing drops the probe's lock

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._lock_or_raise(fd)
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder unlinked the file we opened: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _lock_or_raise(self, fd: int):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RuntimeError(
                f"{self.path.parent} is in use by another training run (pid {holder}, holding {self.path}). Wait "
                "for it to finish or stop it, or pass another --output_dir."
            ) from None


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
    `abandoned-checkpoint-<step>-<time>` (with a warning), never deleted. A folder without `STATE_FILE` is refused."""
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


def end_distributed_run(accelerator):
    """Ends a run explicitly, so that no process hangs at exit: a last barrier, accelerate's references to the
    prepared (DDP-wrapped) model and optimizer dropped and collected, then the trackers closed and the process group
    destroyed (`end_training`). Left to interpreter exit, DDP's reducer may be freed after the gloo process group,
    whose destructor then blocks forever (issue 20, "A hang"). The caller drops its own references first.
    """
    import gc

    accelerator.wait_for_everyone()
    accelerator.free_memory()
    gc.collect()  # the reducer goes now, while the process group is alive
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------------------
# What a run owns outside its checkpoints (docs/security.md, "Ownership")
# ---------------------------------------------------------------------------------------------------------------------

LOG_FILE = "train_log.jsonl"
TRACKER_PROJECT = "train_ncsn"  # accelerate's trackers write under <logging folder>/train_ncsn/
# Marks a logging folder outside --output_dir as this run's: it holds the resolved --output_dir.
LOG_CLAIM_FILE = ".train_ncsn_output_dir"
SAMPLE_GRID = re.compile(r"^step_\d{6}\.png$")  # samples/step_<step>.png
# Files of a logging folder a run writes: the JSON-lines log, and TensorBoard's event files and hparams.yml (at
# train_ncsn/ and in the per-launch subfolder named by time.time() that accelerate's add_hparams creates).
LOG_FILES = re.compile(
    rf"^({re.escape(LOG_FILE)}(\.tmp)?|{re.escape(LOG_CLAIM_FILE)}|"
    rf"{TRACKER_PROJECT}/(\d+(\.\d+)?/)?(events\.out\.tfevents\.[^/]+|hparams\.yml))$"
)


def run_logging_dir(output_dir: str | os.PathLike, logging_dir: str | os.PathLike) -> tuple[Path, bool]:
    """Where a run's logs go, and whether that folder lies outside `output_dir`.

    A relative `logging_dir` that stays inside `output_dir` is used as is (the output folder's rules protect it). One
    outside it (absolute, or `../`) may be shared by many runs, as TensorBoard's `--logdir` expects: the run writes
    to its own subfolder there, named after `output_dir`, and claims it with [`LOG_CLAIM_FILE`].
    """
    output_dir = Path(output_dir)
    root, path = output_dir.resolve(), (output_dir / logging_dir).resolve()
    if root in path.parents:
        return output_dir / logging_dir, False
    if path == root:
        raise ValueError(
            f"--logging_dir {logging_dir} is --output_dir itself; pass a subfolder (default: logs) or a folder outside."
        )
    return path / root.name, True


def check_logging_dir(folder: Path, output_dir: str | os.PathLike):
    """Refuses an outside logging folder (see [`run_logging_dir`]) that holds another run's logs; changes nothing."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    claim = folder / LOG_CLAIM_FILE
    owner = claim.read_text().strip() if claim.is_file() else None
    if owner != str(Path(output_dir).resolve()):
        whose = f"the run of --output_dir {owner}" if owner else "another program (no " + LOG_CLAIM_FILE + ")"
        raise ValueError(
            f"--logging_dir: {folder} holds the logs of {whose}, which this run would mix with its own; pass "
            "another --logging_dir, or an --output_dir of another name (the subfolder is named after it)."
        )


def claim_logging_dir(folder: Path, output_dir: str | os.PathLike):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOG_CLAIM_FILE).write_text(str(Path(output_dir).resolve()) + "\n")


def owned_files(folder: Path, pattern: re.Pattern) -> list[Path]:
    """The regular files under `folder` whose path relative to it matches `pattern` (no symlinks followed)."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and pattern.match(p.relative_to(folder).as_posix())
    )


def remove_owned_files(folder: Path, pattern: re.Pattern) -> list[Path]:
    """Deletes [`owned_files`], then the folders they leave empty (`folder` included); everything else stays.

    Returns:
        `list[Path]`: the deleted files.
    """
    doomed = owned_files(folder, pattern)
    for path in doomed:
        path.unlink()
    parents = {p.parent for p in doomed} | ({folder} if doomed else set())
    for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):  # deepest first
        while parent != folder.parent and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return doomed


# ---------------------------------------------------------------------------------------------------------------------
# Training images
# ---------------------------------------------------------------------------------------------------------------------


def preprocess_image(image, resolution: int, channels: int, center_crop: bool, rng: np.random.Generator):
    """Converts a PIL image to a uint8 array of shape (channels, resolution, resolution).

    Any mode is accepted (L, RGB, RGBA, P, I;16, ...): palette and alpha images are flattened via RGBA (transparent
    pixels keep their colour values, as `convert("RGB")` does), then converted to L (`channels=1`) or RGB. The
    shorter side is resized to `resolution` (bicubic, as diffusers' example) and the square is cut from the centre
    (`center_crop=True`) or at a position drawn once from `rng`.
    """
    from PIL import Image

    if image.mode in ("P", "PA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grayscale: rescale to 8 bits before "L"
        array = np.asarray(image, dtype=np.float64)
        span = max(array.max() - array.min(), 1e-12)
        image = Image.fromarray(((array - array.min()) / span * 255).round().astype(np.uint8), mode="L")
    image = image.convert("L" if channels == 1 else "RGB")

    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, resample=Image.Resampling.BICUBIC)
    width, height = image.size
    if center_crop:
        left, top = (width - resolution) // 2, (height - resolution) // 2
    else:
        left, top = int(rng.integers(0, width - resolution + 1)), int(rng.integers(0, height - resolution + 1))
    image = image.crop((left, top, left + resolution, top + resolution))

    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, R, R)


def decode_images(
    sources, resolution: int, channels: int, center_crop: bool, seed: int = 0
) -> tuple[torch.Tensor, list[str]]:
    """Decodes and preprocesses images once, skipping unreadable ones with a warning that names the file.

    Args:
        sources (iterable of `(name, opener)`):
            `opener()` returns a PIL image; `name` is what a warning reports.
        resolution, channels, center_crop: see [`preprocess_image`].
        seed (`int`, defaults to 0):
            Seed of the random crops.

    Returns:
        `tuple[torch.Tensor, list[str]]`: uint8 images of shape (N, channels, resolution, resolution) and the names
        of the skipped files.
    """
    from PIL import Image, UnidentifiedImageError

    rng = np.random.default_rng(seed)
    arrays, skipped = [], []
    for name, opener in sources:
        try:
            image = opener()
            image.load()
            arrays.append(preprocess_image(image, resolution, channels, center_crop, rng))
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
            logger.warning(f"Skipping corrupt or unreadable image {name}: {err}")
            skipped.append(str(name))
    if not arrays:
        raise ValueError(f"None of the {len(skipped)} images could be read (first: {skipped[:3]}).")
    return torch.from_numpy(np.stack(arrays)), skipped


def image_folder_sources(train_data_dir: str | os.PathLike, cache_dir: str | None = None):
    """The images of a folder (recursively) through `datasets`' imagefolder, as `(path, opener)` pairs."""
    from PIL import Image

    root = Path(train_data_dir)
    if not root.is_dir():
        raise ValueError(f"--train_data_dir {root} does not exist or is not a folder; pass a folder of images.")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.rglob("*") if p.is_file()):
        raise ValueError(
            f"--train_data_dir {root} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            "put the training images there (subfolders are fine)."
        )
    import datasets

    dataset = datasets.load_dataset("imagefolder", data_dir=str(root), split="train", cache_dir=cache_dir)
    # Decoding ourselves lets one corrupt file be skipped and named instead of failing the whole run mid-training.
    dataset = dataset.cast_column("image", datasets.Image(decode=False))
    for record in dataset["image"]:
        path = record["path"]
        yield path, (lambda path=path: Image.open(path))


def hub_dataset_sources(dataset_name: str, dataset_config_name: str | None = None, cache_dir: str | None = None):
    """The images of a `datasets` dataset (Hub id or local script/folder), as `(index, opener)` pairs.

    Raises a `ValueError` at once, without network retries, when the Hub is unreachable and the dataset is not cached.
    """
    import datasets

    if not Path(dataset_name).exists() and not datasets.config.HF_HUB_OFFLINE and not hub_reachable():
        raise ValueError(
            f"--dataset_name {dataset_name!r}: the Hub ({hub_endpoint()}) is unreachable. Connect to the network, "
            "or, if the dataset is already in the local cache, set HF_HUB_OFFLINE=1 to load it from there."
        )
    try:
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, split="train", cache_dir=cache_dir)
    except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError, DatasetNotFoundError)
        raise ValueError(f"--dataset_name {dataset_name!r} could not be loaded: {err}") from err
    column = next((name for name, f in dataset.features.items() if isinstance(f, datasets.Image)), None)
    if column is None:
        raise ValueError(
            f"--dataset_name {dataset_name!r} has no image column (columns: {list(dataset.features)}); "
            "pass a dataset with a `datasets.Image` feature."
        )
    dataset = dataset.cast_column(column, datasets.Image(decode=False))
    from io import BytesIO

    from PIL import Image

    for index, record in enumerate(dataset[column]):
        name = record.get("path") or f"{dataset_name}[{index}]"
        if record.get("bytes") is not None:
            yield name, (lambda data=record["bytes"]: Image.open(BytesIO(data)))
        else:
            yield name, (lambda path=record["path"]: Image.open(path))


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within `timeout` seconds (no retries)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic, resumable randomness
# ---------------------------------------------------------------------------------------------------------------------


def derived_seed(seed: int, *counters: int) -> int:
    """A well-mixed 63-bit seed for the stream (seed, *counters), e.g. (seed, stream id, step)."""
    return int(np.random.SeedSequence([seed, *counters]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class BatchOrder:
    """Which training images each micro-batch uses: a fresh permutation per epoch, cut into global batches.

    Micro-batch k (counted over the whole run) belongs to epoch k // batches_per_epoch; its global batch of
    `global_batch_size` indices is split into `num_processes` consecutive shards, so N processes with batch B each
    see together exactly what one process with batch N * B sees. The last incomplete batch of an epoch is dropped.
    """

    def __init__(self, num_images: int, global_batch_size: int, seed: int):
        if global_batch_size > num_images:
            raise ValueError(
                f"The global batch (train_batch_size x processes = {global_batch_size}) is larger than the "
                f"{num_images} training images; lower --train_batch_size."
            )
        self.num_images = num_images
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.batches_per_epoch = num_images // global_batch_size
        self._epoch, self._permutation = None, None

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch

    def indices(self, micro_step: int, process_index: int = 0, num_processes: int = 1) -> torch.Tensor:
        epoch = self.epoch_of(micro_step)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 0, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_images, generator=generator)
        start = (micro_step % self.batches_per_epoch) * self.global_batch_size
        shard = self.global_batch_size // num_processes
        start += process_index * shard
        return self._permutation[start : start + shard]


def num_update_steps(num_epochs: int, batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in `num_epochs` epochs (an update may straddle two epochs)."""
    return math.ceil(num_epochs * batches_per_epoch / gradient_accumulation_steps)
