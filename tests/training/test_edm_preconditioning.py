"""train_ncsn.py --preconditioning edm: the U-Net predicts EDM's denoiser through c_skip / c_out / c_in and DSM is
weighted into EDM's loss, while the saved model still returns the score that every sampler of the package takes."""

import json

import pytest
import torch

import train_ncsn
from ncsn_diffusers import NCSNPipeline, NCSNUNet2DModel
from ncsn_diffusers.losses import dsm_loss, edm_loss_weight
from ncsn_diffusers.training import TrainingConfig, data, networks, objectives
from ncsn_diffusers.training.batch_order import BatchOrder

LADDER = dict(sigma_max=2.0, sigma_min=0.02, num_noise_levels=5)


def test_weighted_dsm_is_edms_loss_on_the_denoiser():
    """Catches a weight that is not EDM's lambda(sigma) sigma^2 (its inverse, or lambda alone): the weighted DSM
    loss must equal lambda(sigma) ||D_theta(x + sigma z) - x||^2 with lambda = (sigma^2 + sigma_data^2) / (sigma
    sigma_data)^2, computed from the model's own denoiser D = x~ + sigma^2 s."""
    torch.manual_seed(0)
    model = NCSNUNet2DModel.from_preset("tiny", in_channels=1, preconditioning="edm", sigma_data=0.5).eval()
    generator = torch.Generator().manual_seed(1)
    clean, noise = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1, torch.randn(6, 1, 8, 8, generator=generator)
    sigma = torch.tensor([0.02, 0.1, 0.5, 1.0, 3.0, 20.0])
    noisy = clean + sigma[:, None, None, None] * noise
    with torch.no_grad():
        score = model(noisy, sigma).sample
    denoised = noisy + sigma[:, None, None, None] ** 2 * score
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    expected = (lam[:, None, None, None] * (denoised - clean) ** 2).mean()
    torch.testing.assert_close(dsm_loss(score, noise, sigma, edm_loss_weight(sigma, 0.5)), expected, rtol=1e-4, atol=0)


def test_the_run_builds_a_preconditioned_network_and_weights_its_loss():
    """Catches the flag not reaching the network or the loss: the built U-Net carries EDM's preconditioning with the
    run's sigma_data, and the objective's loss is the weighted one (differs from plain DSM on the same batch)."""
    digits = torch.rand(64, 1, 8, 8)
    fields = dict(model_preset="tiny", resolution=8, train_batch_size=16, **LADDER)
    args = TrainingConfig(**fields, preconditioning="edm", sigma_data=0.4).resolve()
    net = networks.build_ncsn_unet(args).eval()
    assert (net.config.preconditioning, net.config.sigma_data) == ("edm", 0.4)
    plain_args = TrainingConfig(**fields).resolve()
    assert networks.build_ncsn_unet(plain_args).config.preconditioning is None
    objective = objectives.build_objective(args, digits)
    clean, noise, levels = data.draw_batch(digits, BatchOrder(64, 16, seed=0), 0, 0, objective, args)
    plain = objectives.OBJECTIVES["dsm"](plain_args, objective.noise_scheduler)
    with torch.no_grad():
        weighted_loss = objective.losses(net, clean, noise, levels, micro_step=0)[0]
        plain_loss = plain.losses(net, clean, noise, levels, micro_step=0)[0]
        score = net(objective.noise_scheduler.add_noise(clean, noise, levels), levels).sample
    torch.testing.assert_close(weighted_loss, dsm_loss(score, noise, levels, edm_loss_weight(levels, 0.4)))
    assert weighted_loss > plain_loss  # every weight is > 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--objective", "ssm"], "--preconditioning edm trains the score U-Net with DSM"),
        (["--model_type", "ncsnv2"], "--preconditioning edm trains the score U-Net with DSM"),
    ],
)
def test_preconditioning_outside_dsm_on_the_unet_is_refused(capsys, argv, message):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--preconditioning", "edm", *argv])
    assert message in capsys.readouterr().err


def test_sigma_data_without_preconditioning_is_refused_on_a_dsm_run(capsys):
    with pytest.raises(SystemExit):
        train_ncsn.parse_args(["--sigma_data", "0.3"])
    assert "--sigma_data only apply to --objective consistency_distillation" in capsys.readouterr().err
    assert train_ncsn.parse_args(["--preconditioning", "edm", "--sigma_data", "0.3"]).sigma_data == 0.3


def test_a_preconditioned_run_saves_a_score_model_every_sampler_loads(tmp_path):
    """Two optimizer steps end to end: the saved U-Net keeps its preconditioning, and the folder loads and samples."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    out = tmp_path / "run"
    train_ncsn.main(["--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "8", "--max_train_steps", "2",
                     "--num_sample_images", "2", "--sampling_calls", "4", "--report_to", "none",
                     "--sigma_max", "2.0", "--sigma_min", "0.02", "--num_noise_levels", "5",
                     "--preconditioning", "edm", "--sigma_sampling", "log_normal", "--output_dir", str(out)])  # fmt: skip
    assert json.loads((out / "training_args.json").read_text())["preconditioning"] == "edm"
    assert json.loads((out / "unet" / "config.json").read_text())["preconditioning"] == "edm"
    pipe = NCSNPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0))
    assert images.images.shape == (2, 8, 8, 1) and images.images.std() > 0
