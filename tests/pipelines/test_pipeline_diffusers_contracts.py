"""Contracts of diffusers that NCSNPipeline and NCSNUNet2DModel keep: the generic loader, save variants and shards,
layerwise casting, and the U-Net/scheduler pairing however the components were set."""

import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, EDMEulerScheduler
from tiny_models import tiny_ddpm_unet

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, seed=0):
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=6, output_type="pt")


def assert_same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def test_diffusion_pipeline_from_pretrained_loads_an_ncsn_folder(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)  # diffusers' generic entry point, `_class_name` resolved
    assert type(loaded) is NCSNPipeline
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(sample(loaded).images, sample(pipe).images)


def test_pipeline_save_forwards_variant_to_the_unet(pipe, tmp_path):
    pipe.save_pretrained(tmp_path, variant="fp16")  # a file-name label: the weights stay float32
    assert sorted(path.name for path in (tmp_path / "unet").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.fp16.safetensors",
        "unet_ncsn.py",  # still written: AutoModel's remote code
    ]
    for loader in (NCSNPipeline, DiffusionPipeline):
        assert_same_weights(loader.from_pretrained(tmp_path, variant="fp16").unet, pipe.unet)


def test_pipeline_save_forwards_max_shard_size_to_the_unet(pipe, tmp_path):
    pipe.save_pretrained(tmp_path, max_shard_size="100KB")  # the tiny preset is ~0.5 MB in float32
    assert len(list((tmp_path / "unet").glob("diffusion_pytorch_model-*.safetensors"))) > 1
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    assert_same_weights(NCSNPipeline.from_pretrained(tmp_path).unet, pipe.unet)


def test_layerwise_casting_float8_storage_bfloat16_compute():
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    reference = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    stored = unet.state_dict()
    assert stored["conv_in.weight"].dtype == torch.float8_e4m3fn
    # The same float8-rounded weights, computed in float32: what the cast model approximates in bfloat16.
    reference.load_state_dict({name: tensor.float() for name, tensor in stored.items()})
    x = torch.randn(2, 1, 8, 8)
    sigma = torch.tensor([0.05, 0.7])
    out = unet(x.to(torch.bfloat16), sigma).sample
    assert out.dtype == torch.bfloat16
    expected = reference(x, sigma).sample
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05 * expected.abs().max().item())


def test_swapped_components_are_checked_at_call_time(pipe):
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    pipe.scheduler = AnnealedLangevinScheduler(prediction_type="epsilon")  # VE, but for an epsilon network
    with pytest.raises(ValueError, match="NCSNUNet2DModel returns the score"):
        sample(pipe)
    pipe.scheduler = AnnealedLangevinScheduler.from_config(DDPMScheduler().config)  # VP
    with pytest.raises(ValueError, match="NCSNUNet2DModel returns the score"):
        sample(pipe)
    pipe.scheduler = DDPMScheduler()
    with pytest.raises(ValueError, match="DDPMScheduler calls the network at integer DDPM timesteps"):
        sample(pipe)
    assert calls == []  # refused before the first U-Net call
    pipe.scheduler = AnnealedLangevinScheduler()
    pipe.unet = tiny_ddpm_unet()
    with pytest.raises(ValueError, match="takes integer DDPM timesteps"):
        sample(pipe)
    pipe.scheduler = EDMEulerScheduler()
    with pytest.raises(ValueError, match="drives a score model through the denoiser"):
        sample(pipe)


def test_unet_without_sample_size_names_the_fix(pipe):
    pipe.unet.register_to_config(sample_size=None)
    with pytest.raises(ValueError, match=r"sample_size is None.*register_to_config\(sample_size="):
        sample(pipe)
    pipe.unet.register_to_config(sample_size=(8, 16))
    assert sample(pipe).images.shape == (2, 1, 8, 16)


def test_registration_never_shadows_a_diffusers_class():
    import diffusers

    from ncsn_diffusers.diffusers_registration import register_with_diffusers

    stock = diffusers.DDPMPipeline
    register_with_diffusers(type("DDPMPipeline", (NCSNPipeline,), {}))
    assert diffusers.DDPMPipeline is stock and diffusers.NCSNPipeline is NCSNPipeline
