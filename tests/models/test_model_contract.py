"""The contract every network of the package runs (the score networks and the noise-conditional classifier): save/load
gives the same outputs, and a half-precision input computes in that precision close to float32."""

import pytest
import torch

from ncsn_diffusers import NCSNppModel, NCSNRefineNet, NCSNUNet2DModel, NCSNv2Model, NoiseConditionalClassifier

# score_sde's NCSN++ (VE, Fourier features, FIR, BigGAN blocks) at 8x8; init_scale 1 so that no branch starts at zero
TINY_NCSNPP = dict(sample_size=8, in_channels=1, base_channels=4, channel_multipliers=(1, 2), num_res_blocks=1,
                   attention_resolutions=(4,), init_scale=1.0)  # fmt: skip


def models():
    torch.manual_seed(0)
    return {
        "NCSNUNet2DModel": NCSNUNet2DModel.from_preset("tiny", sample_size=8),
        "NCSNRefineNet": NCSNRefineNet(sample_size=8, in_channels=1, base_channels=4, num_noise_levels=5),
        "NCSNv2Model": NCSNv2Model.from_variant("ncsnv2", sample_size=8, in_channels=1, base_channels=4),
        "NCSNppModel": NCSNppModel(**TINY_NCSNPP),
        "NCSNppModel-subvp": NCSNppModel(
            **TINY_NCSNPP, sde="subvp", scale_by_sigma=False, embedding_type="positional"
        ),
        "NoiseConditionalClassifier": NoiseConditionalClassifier(
            sample_size=8, num_classes=3, block_out_channels=(8, 16), down_block_types=("DownBlock2D",) * 2
        ),
    }


NAMES = list(models())


def on_ladder(model) -> float:
    """A sigma every model accepts: a rung of the RefineNet's ladder, any value for the others."""
    return float(model.sigmas[1]) if isinstance(model, NCSNRefineNet) else 0.3


def output(model, x: torch.Tensor) -> torch.Tensor:
    """The model's output at x: the score networks' `sample`, the classifier's `logits`."""
    return model(x, on_ladder(model))[0]


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_outputs(name, tmp_path):
    model = models()[name].eval()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(output(loaded, x), output(model, x))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_computes_in_bfloat16_close_to_float32(name):
    model = models()[name].eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        reference = output(model, x)
        half = output(model.to(torch.bfloat16), x.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16 and half.shape == reference.shape
    error = (half.float() - reference).norm() / reference.norm()
    assert error < 0.05, error
