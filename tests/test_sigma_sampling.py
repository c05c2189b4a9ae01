"""train_ncsn.py --sigma_sampling: discrete draws are levels of the ladder, log_uniform draws cover [sigma_L, sigma_1]
log-uniformly, and both are functions of (seed, micro-step) alone, so a resumed or multi-process run draws the same."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.training_utils import BatchOrder

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("train_ncsn", REPO / "train_ncsn.py")
train_ncsn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_ncsn)

LADDER = ["--sigma_max", "2.0", "--sigma_min", "0.02", "--num_noise_levels", "5"]


@pytest.fixture(scope="module")
def digits8():
    return load_digits_images(resolution=8, split="train")[0]


def setup(sigma_sampling, digits8, batch=512):
    args = train_ncsn.parse_args(["--model_preset", "tiny", "--resolution", "8", "--sigma_sampling", sigma_sampling,
                                  "--train_batch_size", str(batch), *LADDER])  # fmt: skip
    scheduler = train_ncsn.build_noise_scheduler(args, digits8)
    return args, scheduler, BatchOrder(len(digits8), batch, seed=0)


def draw_levels(args, scheduler, order, digits8, micro_step, seed=0, process_index=0, num_processes=1):
    return train_ncsn.draw_batch(digits8, order, micro_step, seed, scheduler, args, process_index, num_processes)[2]


def test_log_uniform_draws_cover_the_range_log_uniformly():
    """u = log(sigma / sigma_L) / log(sigma_1 / sigma_L) must be U(0, 1): every tenth of the log range holds 10% of
    200,000 draws (binomial std 0.07%, asserted 0.5%) and the extremes come within 1e-3 of both ends. Drawing
    sigma itself uniformly would put 99% of the draws in the top two tenths; drawing u on the ladder's L levels only
    would leave most bins empty."""
    ladder = torch.tensor([2.0, 0.6, 0.2, 0.06, 0.02])
    sigma = train_ncsn.log_uniform_sigmas(ladder, 200_000, torch.Generator().manual_seed(0), "cpu")
    assert sigma.dtype == torch.float32 and sigma.shape == (200_000,)
    assert sigma.min() >= 0.02 * (1 - 1e-6) and sigma.max() <= 2.0 * (1 + 1e-6)
    u = (sigma.double() / 0.02).log() / math.log(100.0)
    assert u.min() < 1e-3 and u.max() > 1 - 1e-3
    fractions = torch.histc(u, bins=10, min=0.0, max=1.0) / len(u)
    torch.testing.assert_close(fractions, torch.full((10,), 0.1, dtype=fractions.dtype), atol=5e-3, rtol=0)
    assert len(sigma.unique()) > 190_000  # continuous (float32 rounding merges a few), not a ladder of 5


def test_log_uniform_draws_are_a_function_of_seed_and_step_and_split_across_processes(digits8):
    args, scheduler, order = setup("log_uniform", digits8, batch=64)
    first = draw_levels(args, scheduler, order, digits8, micro_step=7)
    assert first.is_floating_point() and first.shape == (64,)
    assert (first >= 0.02 * (1 - 1e-6)).all() and (first <= 2.0 * (1 + 1e-6)).all()
    # The same (seed, step) again, after other steps were drawn (as after a resume): the same sigmas.
    draw_levels(args, scheduler, order, digits8, micro_step=8)
    torch.testing.assert_close(draw_levels(args, scheduler, order, digits8, micro_step=7), first, rtol=0, atol=0)
    # Two processes draw the global batch and keep their halves: together, one process's batch.
    halves = [draw_levels(args, scheduler, order, digits8, 7, process_index=r, num_processes=2) for r in (0, 1)]
    torch.testing.assert_close(torch.cat(halves), first, rtol=0, atol=0)
    assert not torch.equal(draw_levels(args, scheduler, order, digits8, micro_step=8), first)
    assert not torch.equal(draw_levels(args, scheduler, order, digits8, micro_step=7, seed=1), first)


def test_discrete_draws_only_ladder_levels_and_all_of_them(digits8):
    args, scheduler, order = setup("discrete", digits8)
    levels = draw_levels(args, scheduler, order, digits8, micro_step=0)
    assert levels.dtype == torch.long
    assert set(levels.tolist()) == set(range(5))  # 512 draws over 5 levels: each appears
    sigma = scheduler.sigmas[levels]
    assert set(sigma.tolist()) <= set(scheduler.sigmas.tolist())
    torch.testing.assert_close(draw_levels(args, scheduler, order, digits8, micro_step=0), levels, rtol=0, atol=0)


def test_a_log_uniform_sigma_on_a_level_gives_that_levels_loss(digits8):
    """training_losses reads float `levels` as sigmas and integer ones as ladder indices: the same sigma either way
    gives the same loss, to the bit, and another sigma gives another loss."""
    args, scheduler, order = setup("discrete", digits8, batch=16)
    torch.manual_seed(0)
    net = train_ncsn.build_unet(args).eval()
    clean, noise, levels = train_ncsn.draw_batch(digits8, order, 0, 0, scheduler, args)
    with torch.no_grad():
        by_index = train_ncsn.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)
        by_value = train_ncsn.training_losses(net, scheduler, clean, noise, scheduler.sigmas[levels], scheduler.sigmas)
        between = train_ncsn.training_losses(net, scheduler, clean, noise, scheduler.sigmas[levels] * 1.3, None)
    assert torch.equal(by_index[0], by_value[0]) and torch.equal(by_index[1], by_value[1])
    assert not torch.isclose(between[0], by_index[0])


def test_log_uniform_with_the_epsilon_objective_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--objective", "epsilon", "--sigma_sampling", "log_uniform"])
    assert "--sigma_sampling log_uniform draws VE sigmas" in capsys.readouterr().err


def test_ncsn_v1_and_its_recipe_train_and_sample_on_the_ladder_only(capsys):
    # NCSN v1 embeds the index of a trained level: continuous sigmas or a PC ladder would leave its table.
    args = train_ncsn.parse_args(["--model_type", "ncsn_v1"])
    assert (args.sigma_sampling, args.sampler) == ("discrete", "annealed_langevin")
    args = train_ncsn.parse_args(["--recipe", "ncsnv2"])
    assert (args.sigma_sampling, args.sampler) == ("discrete", "annealed_langevin")
    assert train_ncsn.parse_args([]).sigma_sampling == "log_uniform"  # the U-Net's default
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--model_type", "ncsn_v1", "--sigma_sampling", "log_uniform"])
    assert "--sigma_sampling discrete" in capsys.readouterr().err
