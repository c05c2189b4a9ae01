"""Ctrl-C in `train_ncsn.py`: one line saying how to continue, exit status 130, no traceback.

Bug caught: a KeyboardInterrupt during training printed a 45-line traceback and no word on resuming.
"""

import pytest

import train_ncsn
from ncsn_diffusers.training.checkpointing import STATE_FILE

TINY = ["--model_preset", "tiny", "--resolution", "8", "--max_train_steps", "4", "--report_to", "none"]


def interrupted_run(monkeypatch, capsys, output_dir):
    def train(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_ncsn, "train", train)
    with pytest.raises(SystemExit) as exit_info:
        train_ncsn.main([*TINY, "--output_dir", str(output_dir)])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_ctrl_c_names_the_checkpoint_to_resume_from(monkeypatch, capsys, tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / STATE_FILE).write_text(f'{{"step": {step}}}')
    code, lines = interrupted_run(monkeypatch, capsys, tmp_path)
    assert code == 130
    assert len(lines) == 1 and "checkpoint-4" in lines[0] and "--resume_from_checkpoint latest" in lines[0]


def test_ctrl_c_before_the_first_checkpoint_says_so(monkeypatch, capsys, tmp_path):
    code, lines = interrupted_run(monkeypatch, capsys, tmp_path / "run")
    assert code == 130
    assert lines == [
        "Interrupted. To continue from the start (no checkpoint was written yet), rerun the same command with "
        "--resume_from_checkpoint latest."
    ]
