"""What a run owns outside its checkpoints: its logging folder, its sample grids and log files, recognised by content
and name (docs/security.md, "Ownership"), so a shared or reused folder never loses another run's files."""

import os
import re
from pathlib import Path

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
