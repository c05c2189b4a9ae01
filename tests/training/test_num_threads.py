"""Torch threads of a training run: one for the embedded digits, whatever `accelerate launch` or the machine offers.

Bug caught: `accelerate launch train_ncsn.py` gave each CPU process all the cores (2 threads on 2), so the default run
crawled on a busy machine (38 s a step against 4.8 s at one thread, benchmarks/bench_threads.py) and its grid was not
the README's, which is bit-identical at one thread only.
"""

import pytest
import torch

import train_ncsn
from ncsn_diffusers.training import TrainingConfig


def test_the_default_run_resolves_to_one_thread_and_other_data_to_torchs_choice(tmp_path):
    assert TrainingConfig().resolve().num_threads == 1
    assert train_ncsn.parse_args([]).num_threads == 1
    assert TrainingConfig(num_threads=3).resolve().num_threads == 3
    assert TrainingConfig(train_data_dir=str(tmp_path)).resolve().num_threads is None
    with pytest.raises(ValueError, match="--num_threads must be an integer >= 1"):
        TrainingConfig(num_threads=0).resolve()


def test_a_digits_run_trains_at_one_thread_and_gives_the_callers_threads_back(tmp_path):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what accelerate launch gives a process on 2 cores
    try:
        train_ncsn.main([
            "--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--max_train_steps", "2",
            "--num_sample_images", "1", "--sampler", "annealed_langevin", "--sigma_sampling", "discrete",
            "--num_noise_levels", "2", "--steps_per_level", "1", "--report_to", "none",
            "--output_dir", str(tmp_path / "run"),
        ])  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    card = (tmp_path / "run" / "README.md").read_text(encoding="utf-8")
    assert "| `num_threads` | 1 |" in card  # measured inside the run, at its end
