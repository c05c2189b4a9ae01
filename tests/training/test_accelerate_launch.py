"""What the README says of `accelerate launch`'s warnings, checked in accelerate's own launch code: without a config it
warns that it defaulted `--num_processes` (to a value that depends on the machine's GPUs and accelerate's version);
after `accelerate config default` (which writes the default config file) it does not, and with `OMP_NUM_THREADS` set
nothing is defaulted at all. Also: the suite reads no accelerate config or cache of the user running it."""

import logging
import os
import re

import pytest
from accelerate.commands import launch
from accelerate.commands.config import config_args
from accelerate.commands.config.default import write_basic_config


def launch_warnings(caplog) -> str:
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
    """Bug caught: the test pinned accelerate's wording of the defaulted value (`0` on one machine, `1` on another)."""
    assert re.search(r"`--num_processes` was set to a value of `\d+`", launch_warnings(caplog))
    write_basic_config(save_location=str(default_config))  # what `accelerate config default` runs
    assert "num_processes" not in launch_warnings(caplog)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "were not passed" not in launch_warnings(caplog)


def test_the_suite_reads_no_accelerate_config_or_cache_of_the_user():
    """Bug caught: accelerate's config and the Hugging Face and evaluator caches were the user's own (~/.cache), so a
    developer's `accelerate config` changed what `accelerate launch` ran in the end-to-end tests."""
    home = os.path.expanduser("~")
    for path in (config_args.default_config_file, launch.default_config_file, os.environ["HF_HOME"]):
        assert not path.startswith(home), path
    assert not os.environ["NCSN_DIFFUSERS_CACHE"].startswith(home)
    assert not any(name.startswith("ACCELERATE_") for name in os.environ)
