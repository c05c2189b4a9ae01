import json
import logging
import sys

import pytest
import torch

from ncsn_diffusers.models.unet_ncsn import PRESETS, NCSNUNet2DModel


def tiny(**overrides):
    torch.manual_seed(0)
    return NCSNUNet2DModel.from_preset("tiny", **overrides).eval()


def images(batch_size=4, channels=1, size=16, seed=1):
    return torch.randn(batch_size, channels, size, size, generator=torch.Generator().manual_seed(seed))


def public_config(model):
    return json.loads(json.dumps({key: value for key, value in model.config.items() if not key.startswith("_")}))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_score_has_the_shape_of_the_sample(channels, size):
    model = tiny(in_channels=channels)
    sample = images(channels=channels, size=size)
    with torch.no_grad():
        output = model(sample, 0.5)
        (as_tuple,) = model(sample, 0.5, return_dict=False)
    assert output.sample.shape == sample.shape
    assert torch.equal(output.sample, as_tuple)


def test_score_is_raw_network_output_divided_by_sigma():
    scaled = tiny()
    raw = NCSNUNet2DModel.from_config(scaled.config, scale_output_by_sigma=False).eval()
    raw.load_state_dict(scaled.state_dict())
    sample, sigma = images(), torch.tensor([0.01, 0.1, 1.0, 50.0])
    with torch.no_grad():
        score = scaled(sample, sigma).sample
        network_output = raw(sample, sigma).sample
    assert torch.equal(score, network_output / sigma[:, None, None, None])
    # Technique 3's point: the raw output has order one at every sigma, so the score grows like 1/sigma.
    assert score[0].abs().mean() > 1000 * score[3].abs().mean()


def test_edm_preconditioning_is_the_denoiser_c_skip_x_plus_c_out_f_of_c_in_x():
    """Catches a wrong c_in, c_skip or c_out, or the denoiser returned as the score: with F_theta = 0 the model is
    exactly the score of N(0, sigma_data^2 I) data, -x / (sigma^2 + sigma_data^2); with F_theta its plain output,
    score = (c_skip x + c_out F(c_in x) - x) / sigma^2."""
    model = tiny(preconditioning="edm", sigma_data=0.7)
    raw = NCSNUNet2DModel.from_config(model.config, preconditioning=None, scale_output_by_sigma=False).eval()
    raw.load_state_dict(model.state_dict())
    sample, sigma = images(), torch.tensor([0.02, 0.3, 1.0, 40.0])
    sigma_b, var = sigma[:, None, None, None], sigma[:, None, None, None] ** 2 + 0.49
    with torch.no_grad():
        score = model(sample, sigma).sample
        network = raw(sample / var.sqrt(), sigma).sample  # F_theta(c_in x, log sigma)
    denoised = 0.49 / var * sample + sigma_b * 0.7 / var.sqrt() * network
    torch.testing.assert_close(sigma_b**2 * score, denoised - sample, rtol=1e-5, atol=1e-5)  # D - x, in x's units
    torch.nn.init.zeros_(model.conv_out.weight)
    torch.nn.init.zeros_(model.conv_out.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(sample, sigma).sample, -sample / var)


@pytest.mark.parametrize("sigma_embedding_type", ["fourier", "positional"])
def test_network_is_conditioned_on_log_sigma(sigma_embedding_type):
    model = tiny(sigma_embedding_type=sigma_embedding_type, scale_output_by_sigma=False)
    seen = []
    model.sigma_proj.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    sample = images(batch_size=1).expand(2, -1, -1, -1)
    sigma = torch.tensor([0.1, 1.0])
    with torch.no_grad():
        output = model(sample, sigma).sample
    assert torch.equal(seen[0], torch.log(sigma))
    # Without the 1/sigma division only the embedding can make the two noise levels differ.
    assert (output[0] - output[1]).abs().max() > 1e-3


def test_per_sample_sigmas_equal_one_sample_at_a_time():
    model = tiny()
    sample, sigma = images(), torch.tensor([0.02, 0.3, 1.0, 7.0])
    with torch.no_grad():
        batched = model(sample, sigma).sample
        one_by_one = torch.cat([model(sample[i : i + 1], sigma[i]).sample for i in range(4)])
    # Only float rounding may differ (batched convolutions sum in another order); a sigma given to the wrong sample
    # would change the score by order one.
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-4)


def test_scalar_sigma_forms_agree():
    model = tiny()
    sample = images()
    with torch.no_grad():
        reference = model(sample, 0.25).sample
        for sigma in (torch.tensor(0.25), torch.full((4,), 0.25), torch.full((4, 1, 1, 1), 0.25, dtype=torch.float64)):
            assert torch.equal(model(sample, sigma).sample, reference)


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model = tiny(sigma_embedding_type="positional", scale_output_by_sigma=False, resnet_time_scale_shift="scale_shift")
    model.save_pretrained(tmp_path / "unet")
    files = sorted(path.name for path in (tmp_path / "unet").iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors", "unet_ncsn.py"]
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["sigma_embedding_type"] == "positional" and config["scale_output_by_sigma"] is False
    assert config["auto_map"] == {"AutoModel": "unet_ncsn.NCSNUNet2DModel"}

    sample, sigma = images(), torch.tensor([0.05, 0.5, 1.0, 3.0])
    with torch.no_grad():
        expected = model(sample, sigma).sample
        for loaded in (
            NCSNUNet2DModel.from_pretrained(tmp_path / "unet"),
            NCSNUNet2DModel.from_pretrained(tmp_path, subfolder="unet"),
        ):
            assert public_config(loaded) == public_config(model)
            assert torch.equal(loaded.eval()(sample, sigma).sample, expected)


def test_saved_folder_loads_without_this_package_through_automodel(tmp_path, monkeypatch):
    model = tiny(resnet_time_scale_shift="scale_shift")
    model.save_pretrained(tmp_path / "unet")
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    diffusers_logger = logging.getLogger("diffusers")  # diffusers does not propagate to the root logger
    diffusers_logger.addHandler(handler)
    try:
        NCSNUNet2DModel.from_pretrained(tmp_path / "unet")
    finally:
        diffusers_logger.removeHandler(handler)
    assert not [w for w in warnings if "auto_map" in w]  # auto_map is not an argument of __init__

    from diffusers import AutoModel

    for name in [name for name in sys.modules if name.split(".")[0] == "ncsn_diffusers"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import ncsn_diffusers` now fails, as without the package
    loaded = AutoModel.from_pretrained(str(tmp_path / "unet"), trust_remote_code=True).eval()
    assert type(loaded).__name__ == "NCSNUNet2DModel" and type(loaded) is not NCSNUNet2DModel
    assert public_config(loaded) == public_config(model)
    sample, sigma = images(), torch.tensor([0.05, 0.5, 1.0, 3.0])
    with torch.no_grad():
        assert torch.equal(loaded(sample, sigma).sample, model(sample, sigma).sample)


def test_bfloat16_forward_matches_float32():
    model = tiny()
    frequencies = model.sigma_proj.weight.clone()
    sample, sigma = images(), torch.tensor([0.01, 0.5, 1.0, 50.0])
    with torch.no_grad():
        expected = model(sample, sigma).sample
        output = model.to(torch.bfloat16)(sample.to(torch.bfloat16), sigma).sample
    assert output.dtype == torch.bfloat16
    assert (output.float() - expected).norm() < 0.05 * expected.norm()
    # Rounding the frequencies w to bfloat16 would move the phases 2 pi w log(sigma) by up to radians.
    assert model.sigma_proj.weight.dtype == torch.float32 and torch.equal(model.sigma_proj.weight, frequencies)


def test_from_pretrained_in_bfloat16_keeps_the_sigma_embedding_in_float32(tmp_path):
    tiny().save_pretrained(tmp_path)
    model = NCSNUNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert model.sigma_proj.weight.dtype == torch.float32
    assert model.dtype == model.conv_in.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(images().to(torch.bfloat16), 0.3).sample.dtype == torch.bfloat16


def test_from_preset_applies_overrides_and_rejects_unknown_names():
    model = tiny(in_channels=3, sigma_embedding_type="positional")
    assert model.config.in_channels == 3 and model.config.block_out_channels == (16, 32)
    assert model.config.sigma_embedding_type == "positional"
    with pytest.raises(ValueError, match="'cifar10', 'digits', 'tiny'"):
        NCSNUNet2DModel.from_preset("mnist")


def test_preset_sizes():
    model = tiny()
    # conv_in: 1 -> 16 channels, 3x3 kernel, with bias; conv_out back to 1 channel.
    assert sum(p.numel() for p in model.conv_in.parameters()) == 1 * 16 * 9 + 16
    assert sum(p.numel() for p in model.conv_out.parameters()) == 16 * 1 * 9 + 1
    # Random Fourier frequencies are fixed, not trained.
    assert not model.sigma_proj.weight.requires_grad
    assert sum(p.numel() for p in model.parameters()) < 200_000
    with torch.device("meta"):
        cifar10 = NCSNUNet2DModel.from_preset("cifar10")
    assert 34e6 < sum(p.numel() for p in cifar10.parameters()) < 37e6  # DDPM's CIFAR-10 network has 35.7M
    assert set(PRESETS) == {"tiny", "digits", "cifar10"}


def test_bad_samples_raise_value_errors_naming_the_fix():
    model = tiny()
    with pytest.raises(ValueError, match="divisible by 2"):
        model(images(size=15), 0.5)
    with pytest.raises(ValueError, match="in_channels"):
        model(images(channels=3), 0.5)
    with pytest.raises(ValueError, match="in_channels"):
        model(images()[:, 0], 0.5)
    digits = NCSNUNet2DModel.from_preset("digits")
    with pytest.raises(ValueError, match="divisible by 4"):
        digits(images(size=18), 0.5)


@pytest.mark.parametrize("sigma", [0.0, -1.0, torch.tensor([0.5, 0.5, 0.0, 0.5]), torch.tensor(float("nan"))])
def test_non_positive_sigma_raises(sigma):
    with pytest.raises(ValueError, match="`sigma` must be positive"):
        tiny()(images(), sigma)


def test_sigma_count_must_match_batch():
    with pytest.raises(ValueError, match="one per sample"):
        tiny()(images(), torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sigma_embedding_type": "learned"}, "sigma_embedding_type"),
        ({"block_out_channels": (16, 32, 64)}, "one entry per resolution"),
        ({"down_block_types": ("DownBlock2D", "SkipDownBlock2D")}, "down_block_types"),
        ({"norm_num_groups": 12}, "norm_num_groups"),
        ({"preconditioning": "karras"}, "preconditioning"),
        ({"preconditioning": "edm", "sigma_data": 0.0}, "sigma_data"),
    ],
)
def test_bad_configs_raise_value_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        NCSNUNet2DModel.from_preset("tiny", **overrides)
