"""`train_ncsn.py --recipe`: the authors' update rule, reproduced by the real script, and the recipe tables."""

import dataclasses
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

import train_ncsn
from ncsn_diffusers import NCSNRefineNet, NCSNv2Model
from ncsn_diffusers.training import TrainingConfig, data, networks, objectives
from ncsn_diffusers.training.batch_order import BatchOrder
from ncsn_diffusers.training.recipes import OFFICIAL_CONFIGS, adam_epsilon_for_pixel_mean_loss

REPO = Path(__file__).resolve().parents[2]

STEPS = 3
# Tiny overrides of the recipe's scale (explicit flags win); everything else is the recipe's.
TINY = ["--resolution", "8", "--base_channels", "4", "--train_batch_size", "6", "--max_train_steps", str(STEPS),
        "--num_sample_images", "2", "--steps_per_level", "1", "--report_to", "none", "--logging_steps", "1",
        "--checkpointing_steps", "1000"]  # fmt: skip
TINY_CONFIG = dict(resolution=8, base_channels=4, train_batch_size=6, max_train_steps=STEPS, num_sample_images=2)
TINY_CONFIG.update(steps_per_level=1, report_to="none", logging_steps=1, checkpointing_steps=1000)


def _run_main(argv):
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    train_ncsn.main(argv)


def _official_training(args, steps, their_eps):
    """The authors' loop (anneal_dsm_score_estimation, torch.optim.Adam, EMAHelper) on the script's own batches."""
    set_seed(args.seed)  # as main(): the initial weights come from the same draws
    images = data.load_training_images(args)
    objective = objectives.build_objective(args, images)
    scheduler = objective.noise_scheduler
    model = networks.build_paper_unet(args, scheduler)
    order = BatchOrder(len(images), args.train_batch_size, args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=(0.9, 0.999), eps=their_eps)
    shadow = [p.detach().clone() for p in model.parameters()]
    for step in range(steps):
        x, z, labels = data.draw_batch(images, order, step, args.seed, objective, args)
        used_sigmas = scheduler.sigmas[labels].view(-1, 1, 1, 1)
        perturbed = x + z * used_sigmas
        target = -z / used_sigmas
        scores = model(perturbed, scheduler.sigmas[labels]).sample
        # 1/2 ||s - target||^2 summed over pixels, times sigma^2 (anneal_power 2), averaged over the batch
        loss = (0.5 * ((scores - target) ** 2).flatten(1).sum(-1) * used_sigmas.flatten() ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for s, p in zip(shadow, model.parameters()):
                s.copy_(0.001 * p + 0.999 * s)
    return model, shadow


# NCSNv2 with FFHQ's Adam epsilon 1e-3, where the rescaling to our pixel-mean loss matters; v1 with its 1e-8.
@pytest.mark.parametrize(("recipe", "their_eps"), [("ncsnv2", 1e-3), ("ncsn_v1", 1e-8)])
def test_recipe_steps_equal_the_official_update_rule(recipe, their_eps, tmp_path, monkeypatch):
    # Without --recipe_dataset the recipe takes the CIFAR-10 config's optimiser; give it FFHQ's epsilon here.
    cifar10 = OFFICIAL_CONFIGS[recipe]["cifar10"]
    monkeypatch.setitem(OFFICIAL_CONFIGS[recipe], "cifar10", dataclasses.replace(cifar10, adam_eps=their_eps))
    argv = ["--recipe", recipe, *TINY, "--output_dir", str(tmp_path / "run")]
    args = train_ncsn.parse_args(argv)
    assert args.model_type == recipe and args.max_grad_norm == 0 and args.lr_scheduler == "constant"
    assert args.adam_epsilon == pytest.approx(their_eps * 2 / (1 * 8 * 8))
    _run_main(argv)
    trained = load_file(tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors")

    model, shadow = _official_training(args, STEPS, their_eps)
    # NCSNv2 saves its EMA weights (their sampler uses them); v1 has no EMA.
    expected = shadow if recipe == "ncsnv2" else [p.detach() for p in model.parameters()]
    names = [name for name, _ in model.named_parameters()]
    initial = networks.build_paper_unet(
        args, networks.build_noise_scheduler(args, data.load_training_images(args), "ve")
    )
    moved = 0
    for name, value, start in zip(names, expected, initial.parameters()):
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6, msg=name)
        moved += not torch.equal(value, start.detach())
    assert moved > len(names) // 2  # the comparison is between trained weights, not two copies of the start


def test_recipe_sets_the_authors_settings_and_flags_override():
    args = train_ncsn.parse_args(["--recipe", "ncsnv2", "--recipe_dataset", "cifar10"])
    cifar = OFFICIAL_CONFIGS["ncsnv2"]["cifar10"]
    assert (args.sigma_max, args.sigma_min, args.num_noise_levels) == (50.0, 0.01, 232)
    assert (args.steps_per_level, args.langevin_epsilon, args.final_denoise) == (5, 6.2e-6, True)
    assert (args.resolution, args.channels, args.base_channels, args.ncsnv2_variant) == (32, 3, 128, "ncsnv2")
    assert (args.learning_rate, args.train_batch_size, args.max_train_steps) == (1e-4, 128, cifar.n_iters)
    assert args.use_ema and not args.ema_warmup and args.ema_max_decay == 0.999 and not args.dequantize
    assert args.adam_epsilon == adam_epsilon_for_pixel_mean_loss(1e-8, 3 * 32 * 32)
    assert data.model_data_range(args) == (0.0, 1.0)

    ffhq = train_ncsn.parse_args(["--recipe", "ncsnv2", "--recipe_dataset", "ffhq", "--learning_rate", "3e-4"])
    assert ffhq.learning_rate == 3e-4 and ffhq.train_batch_size == 32 and ffhq.ncsnv2_variant == "ncsnv2_deepest"
    assert ffhq.adam_epsilon == pytest.approx(1e-3 * 2 / (3 * 256 * 256))

    v1 = train_ncsn.parse_args(["--recipe", "ncsn_v1", "--recipe_dataset", "mnist"])
    assert (v1.resolution, v1.channels, v1.base_channels, v1.learning_rate) == (28, 1, 64, 1e-3)
    assert (v1.num_noise_levels, v1.steps_per_level, v1.langevin_epsilon) == (10, 100, 2e-5)
    assert not v1.use_ema and v1.dequantize and not v1.final_denoise

    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--recipe", "ncsn_v1", "--recipe_dataset", "ffhq"])


def test_adam_epsilon_rescaling_makes_updates_equal():
    # A loss c times larger with epsilon c times larger: the same Adam step, as the recipe relies on.
    torch.manual_seed(0)
    c = 96.0
    a, b = torch.randn(5, requires_grad=True), None
    b = a.detach().clone().requires_grad_(True)
    opt_a = torch.optim.Adam([a], lr=0.1, eps=1e-3)
    opt_b = torch.optim.Adam([b], lr=0.1, eps=1e-3 / c)
    for _ in range(3):
        for p, opt, scale in ((a, opt_a, c), (b, opt_b, 1.0)):
            opt.zero_grad()
            (scale * (p**2).sum()).backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_official_networks_are_built():
    args = TrainingConfig(recipe="ncsn_v1", **TINY_CONFIG).resolve()
    scheduler = networks.build_noise_scheduler(args, data.load_training_images(args), "ve")
    net = networks.build_paper_unet(args, scheduler)
    assert isinstance(net, NCSNRefineNet) and net.config.rescale_input
    assert torch.equal(net.sigmas, scheduler.sigmas)
    args = TrainingConfig(model_type="ncsnv2", **TINY_CONFIG).resolve()  # no recipe: data in [-1, 1], no 2x - 1
    net = networks.build_paper_unet(args, networks.build_noise_scheduler(args, torch.rand(4, 1, 8, 8), "ve"))
    assert isinstance(net, NCSNv2Model) and not net.config.rescale_input
