"""The plain JSON-lines training log, kept consistent across kills and resumes."""

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class JsonLog:
    """The plain training log, <logging folder>/train_log.jsonl (see `run_logging_dir`): one JSON object per
    logging step.

    On resume the entries past the checkpoint (written by the killed run) are dropped, and so is a torn last line (a
    power loss or a full disk mid-write), with a warning; the file is rewritten atomically, so no earlier line is ever
    lost.
    """

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            lines = path.read_bytes().decode(errors="replace").splitlines()
            kept = []
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    step = json.loads(line)["step"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    if number < len(lines):
                        raise ValueError(
                            f"{path} line {number} is not a log record ({line[:80]!r}); repair or delete that line."
                        ) from None
                    logger.warning(f"{path} ends in a partial line ({line[:80]!r}), left by a crash; dropped it.")
                    continue
                if step <= resume_step:
                    kept.append(line)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, path)

    def write(self, record: dict):
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
