"""--output_dir for one run: who owns what in it, when it may be reused, and the lock held while training."""

import contextlib
import errno
import fcntl
import json
import os
import re
from pathlib import Path

from .checkpointing import (
    ABANDONED_PREFIX,
    STATE_FILE,
    complete_checkpoints,
    discard_checkpoint,
    foreign_checkpoints,
    latest_checkpoint,
    remove_stale_temporaries,
)
from .log_dir import LOG_FILES, SAMPLE_GRID, check_logging_dir, claim_logging_dir, remove_owned_files, run_logging_dir

LOCK_FILE = ".train_ncsn.lock"


# Entries a previous run of this script may leave in --output_dir; anything else means the folder is someone else's.
OWN_ENTRIES = {"unet", "scheduler", "samples", "logs", "model_index.json", "README.md", "training_args.json"}


OWN_ENTRIES |= {".gitattributes", ".gitignore", ".git", ".cache", ".huggingface", LOCK_FILE}
NEVER_WRITTEN = {".git", ".cache", ".huggingface"}  # a Hub clone's: tolerated, never written or searched
OWN_ENTRIES |= {"distillation.json"}  # --objective consistency_distillation's record (distillation_record.py)
# A single saved model (--objective noise_classifier's classifier, `save_pretrained` of a ModelMixin).
MODEL_ENTRIES = ("config.json", "diffusion_pytorch_model.safetensors")
OWN_ENTRIES |= set(MODEL_ENTRIES)


# A saved pipeline: never replaced unless --overwrite_output_dir or the run resumes a checkpoint of this folder.
PIPELINE_ENTRIES = ("model_index.json", "unet", "scheduler", "README.md", *MODEL_ENTRIES)


# The files of a saved model that --overwrite_output_dir deletes at the start, whatever objective saved them: a
# pipeline's index, card and each component's config, weights and the copy of its class's module that diffusers
# saves beside them, or a single model's (`save_pretrained`).
SAVED_MODEL_FILES = (
    r"model_index\.json|README\.md|distillation\.json|(({components})/)?(config\.json|scheduler_config\.json|"
    r"diffusion_pytorch_model[^/]*\.(safetensors|bin|json)|{modules})"
)
# The modules of the package's component classes, which diffusers copies beside their config.
PACKAGE_MODULES = sorted(
    {
        p.name
        for folder in ("models", "schedulers")
        for p in (Path(__file__).resolve().parents[1] / folder).glob("*.py")
    }
    - {"__init__.py"}
)


def saved_model_files(output_dir: Path) -> re.Pattern:
    """[`SAVED_MODEL_FILES`] for the components `output_dir/model_index.json` names (and `unet`, `scheduler`)."""
    components = {"unet", "scheduler"}
    try:
        index = json.loads((output_dir / "model_index.json").read_text())
        components |= {k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)}
    except (OSError, ValueError, AttributeError):
        pass
    names = "|".join(re.escape(name) for name in sorted(components) if "/" not in name)
    modules = "|".join(map(re.escape, PACKAGE_MODULES))
    return re.compile(rf"^({SAVED_MODEL_FILES.format(components=names, modules=modules)})$")


def symlinks_in(folder: Path, names) -> list[Path]:
    """The symbolic links among `folder/<name>` for `names` and everything under those that are real folders: writing
    there would follow a link out of `folder` and change the files it points to."""
    links = []
    for name in names:
        path = folder / name
        if path.is_symlink():
            links.append(path)
        elif path.is_dir():
            for root, dirs, files in os.walk(path):  # never follows links
                links += [Path(root, entry) for entry in dirs + files if os.path.islink(os.path.join(root, entry))]
    return sorted(links)


def refuse_symlinks(folder: Path, names, flag: str):
    """Raises a `ValueError` naming the [`symlinks_in`] `folder` (the folder of `flag`); changes nothing."""
    links = symlinks_in(folder, names)
    if links:
        shown = ", ".join(f"{link.relative_to(folder)} -> {os.readlink(link)}" for link in links[:5])
        raise ValueError(
            f"{flag} {folder} holds symbolic links where this run writes ({shown}): it would write through them into "
            "the files they point to. Replace each link by a real folder or file, or pass another folder."
        )


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
            fd = os.open(self.path, os.O_RDONLY)  # a link is refused by check_output_dir
        except FileNotFoundError:
            return
        try:
            self._lock_or_raise(fd)
        finally:
            os.close(fd)  # closing drops the probe's lock

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
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


def check_output_dir(args) -> bool:
    """Refuses an --output_dir that holds someone else's files, an earlier run's checkpoints without a resume, or a
    saved pipeline this run would replace. Changes nothing; returns whether an earlier run's files are to be cleared
    (--overwrite_output_dir)."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file; pass a folder.")
    logging_dir, outside = run_logging_dir(output_dir, args.logging_dir)
    if outside:
        check_logging_dir(logging_dir, output_dir)
    if not output_dir.is_dir():
        return False
    not_ours = foreign_checkpoints(output_dir)
    if not_ours:
        raise ValueError(
            f"--output_dir {output_dir} holds {', '.join(p.name for p in not_ours[:3])}, which train_ncsn.py did not "
            f"write (no {STATE_FILE}): this run would replace it. Move it out of {output_dir} or pass another "
            "--output_dir; it is never deleted, not even with --overwrite_output_dir."
        )
    own = OWN_ENTRIES if outside else OWN_ENTRIES | {Path(args.logging_dir).parts[0]}
    foreign = sorted(
        p.name
        for p in output_dir.iterdir()
        if p.name not in own and not p.name.startswith(("checkpoint-", ABANDONED_PREFIX + "checkpoint-"))
    )
    if foreign:
        raise ValueError(
            f"--output_dir {output_dir} holds files this script did not write ({', '.join(foreign[:5])}); "
            "pass an empty or new folder."
        )
    # Complete checkpoints are never written into (one linked from another disk is pruned as a link).
    written = [p.name for p in output_dir.iterdir() if p.name in own - NEVER_WRITTEN]
    refuse_symlinks(output_dir, written, "--output_dir")
    if args.overwrite_output_dir:
        return True
    has_checkpoints = any(p.name.startswith("checkpoint-") for p in output_dir.iterdir())
    if has_checkpoints and args.resume_from_checkpoint is None:
        raise ValueError(
            f"--output_dir {output_dir} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
            "to continue it, or --overwrite_output_dir to start afresh."
        )
    pipeline = [name for name in PIPELINE_ENTRIES if (output_dir / name).exists()]
    target = resume_path(args) if args.resume_from_checkpoint is not None else None
    resumes_here = target is not None and any(
        path.resolve() == target.resolve() for _, path in complete_checkpoints(output_dir)
    )
    if pipeline and not resumes_here:
        raise ValueError(
            f"--output_dir {output_dir} holds a saved pipeline ({', '.join(pipeline)}) that this run would overwrite; "
            "pass a new folder, --resume_from_checkpoint to continue the run that saved it, or --overwrite_output_dir "
            "to replace it."
        )
    return False


def clear_earlier_run(output_dir: Path, logging_dir: Path):
    """--overwrite_output_dir: deletes what an earlier run wrote: the files of its saved model (pipeline or single
    model, whichever objective saved it, so none is left beside this run's), checkpoints, sample grids and logs,
    recognised by content and name (docs/security.md, "Ownership"). A file someone else put there (samples/mine.png,
    logs/notes.txt, unet/notes.txt) stays; so do moved-aside checkpoints."""
    remove_owned_files(output_dir, saved_model_files(output_dir))
    for _, checkpoint in complete_checkpoints(output_dir):
        discard_checkpoint(checkpoint)
    remove_owned_files(output_dir / "samples", SAMPLE_GRID)
    remove_owned_files(logging_dir, LOG_FILES)


def resume_path(args) -> Path | None:
    """The checkpoint --resume_from_checkpoint names: `latest` of --output_dir, a folder, or a name in --output_dir."""
    if args.resume_from_checkpoint == "latest":
        return latest_checkpoint(args.output_dir)
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir() and (Path(args.output_dir) / path.name).is_dir():
        path = Path(args.output_dir) / path.name
    return path


class OutputDirClaim:
    """--output_dir for the whole run: checked, created and locked by `take` (main process), released at the end.

    A refused folder is left untouched: the checks only read, and the lock file is created after them. When the run
    fails, `failed` removes the folders this run created and left empty; nothing else.
    """

    def __init__(self, args):
        self.args, self.output_dir = args, Path(args.output_dir)
        self.lock, self.before, self.existing = OutputDirLock(self.output_dir), [], set()

    def take(self):
        self.lock.check_free()  # a live run first: its checkpoints are not "an earlier run's"
        clear = check_output_dir(self.args)
        self.before = [self.output_dir, *self.output_dir.parents]
        self.existing = {p for p in self.before if p.exists()}
        self.existing |= {p for p in self.output_dir.rglob("*") if p.is_dir()}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        logging_dir, outside = run_logging_dir(self.output_dir, self.args.logging_dir)
        if clear:
            clear_earlier_run(self.output_dir, logging_dir)
        if outside:
            claim_logging_dir(logging_dir, self.output_dir)
        remove_stale_temporaries(self.output_dir)

    def failed(self):
        if not self.before:  # not taken: nothing was created
            return
        self.release()
        created = [p for p in (*self.output_dir.rglob("*"), *self.before) if p.is_dir() and p not in self.existing]
        for path in sorted(created, key=lambda p: len(p.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty

    def release(self):
        self.lock.release()
