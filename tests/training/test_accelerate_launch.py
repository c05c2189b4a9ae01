"""What the README says of `accelerate launch`'s warnings, checked in accelerate's own launch code:
without a config it warns that `--num_processes` was defaulted to 0 (the GPU count); after `accelerate config default`
(which writes the default config file) it does not, and with `OMP_NUM_THREADS` set nothing is defaulted at all."""

import logging

import pytest
from accelerate.commands import launch
from accelerate.commands.config import config_args
from accelerate.commands.config.default import write_basic_config


def launch_warnings(caplog, monkeypatch) -> str:
    """The warnings `accelerate launch script.py` logs before it starts the script."""
    caplog.clear()
    args = launch.launch_command_parser().parse_args(["script.py"])
    with caplog.at_level(logging.WARNING):
        launch._validate_launch_command(args)
    return caplog.text


@pytest.fixture
def default_config(tmp_path, monkeypatch):
    path = tmp_path / "accelerate" / "default_config.yaml"
    for module in (launch, config_args):  # where launch looks for the config, and where it loads it from
        monkeypatch.setattr(module, "default_config_file", str(path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    return path


def test_config_default_removes_the_num_processes_warning(default_config, caplog, monkeypatch):
    assert "`--num_processes` was set to a value of `0`" in launch_warnings(caplog, monkeypatch)
    write_basic_config(save_location=str(default_config))  # what `accelerate config default` runs
    assert "num_processes" not in launch_warnings(caplog, monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "were not passed" not in launch_warnings(caplog, monkeypatch)
