"""train_ncsn.py --sigma_sampling: discrete draws are levels of the ladder, log_uniform draws cover [sigma_L, sigma_1]
log-uniformly, log_normal draws log sigma ~ N(P_mean, P_std^2) truncated to [log sigma_L, log sigma_1], and all are
functions of (seed, micro-step) alone, so a resumed or multi-process run draws the same."""

import json
import math
from pathlib import Path

import pytest
import torch

import train_ncsn
from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.training import TrainingConfig, data, networks, objectives
from ncsn_diffusers.training.batch_order import BatchOrder

REPO = Path(__file__).resolve().parents[2]

LADDER = ["--sigma_max", "2.0", "--sigma_min", "0.02", "--num_noise_levels", "5"]
LADDER_CONFIG = dict(sigma_max=2.0, sigma_min=0.02, num_noise_levels=5)


@pytest.fixture(scope="module")
def digits8():
    return load_digits_images(resolution=8, split="train")[0]


def setup(sigma_sampling, digits8, batch=512, extra=None):
    fields = dict(model_preset="tiny", resolution=8, sigma_sampling=sigma_sampling, train_batch_size=batch)
    args = TrainingConfig(**fields, **LADDER_CONFIG, **(extra or {})).resolve()
    scheduler = objectives.build_objective(args, digits8).noise_scheduler
    return args, scheduler, BatchOrder(len(digits8), batch, seed=0)


def draw_levels(args, scheduler, order, digits8, micro_step, seed=0, process_index=0, num_processes=1):
    objective = objectives.OBJECTIVES[args.objective](args, scheduler)
    return data.draw_batch(digits8, order, micro_step, seed, objective, args, process_index, num_processes)[2]


def test_log_uniform_draws_cover_the_range_log_uniformly():
    """u = log(sigma / sigma_L) / log(sigma_1 / sigma_L) must be U(0, 1): every tenth of the log range holds 10% of
    200,000 draws (binomial std 0.07%, asserted 0.5%) and the extremes come within 1e-3 of both ends. Drawing
    sigma itself uniformly would put 99% of the draws in the top two tenths; drawing u on the ladder's L levels only
    would leave most bins empty."""
    ladder = torch.tensor([2.0, 0.6, 0.2, 0.06, 0.02])
    sigma = objectives.log_uniform_sigmas(ladder, 200_000, torch.Generator().manual_seed(0), "cpu")
    assert sigma.dtype == torch.float32 and sigma.shape == (200_000,)
    assert sigma.min() >= 0.02 * (1 - 1e-6) and sigma.max() <= 2.0 * (1 + 1e-6)
    u = (sigma.double() / 0.02).log() / math.log(100.0)
    assert u.min() < 1e-3 and u.max() > 1 - 1e-3
    fractions = torch.histc(u, bins=10, min=0.0, max=1.0) / len(u)
    torch.testing.assert_close(fractions, torch.full((10,), 0.1, dtype=fractions.dtype), atol=5e-3, rtol=0)
    assert len(sigma.unique()) > 190_000  # continuous (float32 rounding merges a few), not a ladder of 5


def test_log_normal_draws_have_the_requested_mean_and_std_of_log_sigma():
    """With bounds far out in the tails (+-8 P_std) truncation is invisible: 200,000 draws of log sigma have mean
    P_mean and std P_std (standard errors 0.003 and 0.002, asserted 0.01). Catches a swapped mean and std, a variance
    taken for the std, log10 for ln, or sigma returned as log sigma."""
    mean, std = -0.8, 1.2
    ladder = torch.tensor([math.exp(mean + 8 * std), math.exp(mean - 8 * std)])
    sigma = objectives.log_normal_sigmas(ladder, mean, std, 200_000, torch.Generator().manual_seed(0), "cpu")
    assert sigma.dtype == torch.float32 and sigma.shape == (200_000,) and (sigma > 0).all()
    log_sigma = sigma.double().log()
    assert abs(log_sigma.mean().item() - mean) < 0.01 and abs(log_sigma.std().item() - std) < 0.01


def test_log_normal_draws_are_truncated_to_the_ladder_not_clipped():
    """Bounds at P_mean -+ 1 P_std: every draw lies in [sigma_L, sigma_1], and each eighth of the log range holds the
    truncated normal's own mass, Phi-differences over Phi(1) - Phi(-1) (binomial std < 0.1%, asserted 0.5%). Clipping
    would pile 32% of the draws on the two bounds; rejection-free U(log range) would make the bins equal."""
    mean, std = 0.0, 1.0
    ladder = torch.tensor([math.e, 1 / math.e])
    sigma = objectives.log_normal_sigmas(ladder, mean, std, 200_000, torch.Generator().manual_seed(0), "cpu")
    log_sigma = sigma.double().log()
    assert log_sigma.min() >= -1 - 1e-6 and log_sigma.max() <= 1 + 1e-6
    assert (log_sigma.abs() > 1 - 1e-4).double().mean() < 1e-3  # no pile-up at the bounds
    normal = torch.distributions.Normal(0.0, 1.0)
    edges = torch.linspace(-1, 1, 9, dtype=torch.float64)
    expected = (normal.cdf(edges[1:]) - normal.cdf(edges[:-1])) / (normal.cdf(edges[-1:]) - normal.cdf(edges[:1]))
    fractions = torch.histc(log_sigma, bins=8, min=-1.0, max=1.0) / len(log_sigma)
    torch.testing.assert_close(fractions, expected, atol=5e-3, rtol=0)


@pytest.mark.parametrize(
    "sigma_sampling, extra",
    [("log_uniform", None), ("log_normal", dict(log_sigma_mean=-1.0, log_sigma_std=1.5))],
)
def test_continuous_draws_are_a_function_of_seed_and_step_and_split_across_processes(digits8, sigma_sampling, extra):
    args, scheduler, order = setup(sigma_sampling, digits8, batch=64, extra=extra)
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
    net = networks.build_ncsn_unet(args).eval()
    objective = objectives.OBJECTIVES[args.objective](args, scheduler)
    clean, noise, levels = data.draw_batch(digits8, order, 0, 0, objective, args)
    with torch.no_grad():
        by_index = objectives.training_losses(net, scheduler, clean, noise, levels, scheduler.sigmas)
        by_value = objectives.training_losses(net, scheduler, clean, noise, scheduler.sigmas[levels], scheduler.sigmas)
        between = objectives.training_losses(net, scheduler, clean, noise, scheduler.sigmas[levels] * 1.3, None)
    assert torch.equal(by_index[0], by_value[0]) and torch.equal(by_index[1], by_value[1])
    assert not torch.isclose(between[0], by_index[0])


@pytest.mark.parametrize("sigma_sampling", ["log_uniform", "log_normal"])
def test_continuous_sigmas_with_the_epsilon_objective_are_refused(capsys, sigma_sampling):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--objective", "epsilon", "--sigma_sampling", sigma_sampling])
    assert f"--sigma_sampling {sigma_sampling} draws VE sigmas" in capsys.readouterr().err


@pytest.mark.parametrize("std", ["0", "-1"])
def test_a_non_positive_log_sigma_std_is_refused(capsys, std):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--sigma_sampling", "log_normal", "--log_sigma_std", std])
    assert "--log_sigma_std (P_std) must be a positive number" in capsys.readouterr().err


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


def test_a_log_normal_run_records_p_mean_and_p_std_in_its_arguments_and_model_card(tmp_path):
    """Two optimizer steps end to end: the run trains on log-normal sigmas and says so with P_mean and P_std, so a
    saved model tells how it was trained (a card listing only `log_normal` would hide the distribution's centre)."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    out = tmp_path / "run"
    train_ncsn.main(["--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--max_train_steps", "2",
                     "--num_sample_images", "2", "--sampling_calls", "4", "--report_to", "none", "--logging_steps", "1",
                     "--sigma_sampling", "log_normal", "--log_sigma_mean", "-0.5", "--log_sigma_std", "0.7",
                     *LADDER, "--output_dir", str(out)])  # fmt: skip
    arguments = json.loads((out / "training_args.json").read_text())
    assert arguments["sigma_sampling"] == "log_normal"
    assert (arguments["log_sigma_mean"], arguments["log_sigma_std"]) == (-0.5, 0.7)
    card = (out / "README.md").read_text()
    assert "log_normal" in card and "`log_sigma_mean`" in card and "-0.5" in card and "`log_sigma_std`" in card
