"""NCSNRefineNet (NCSN v1) and NCSNv2Model: contracts, the sigma conventions, and the authors' parameter counts."""

import pytest
import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNRefineNet, NCSNv2Model
from ncsn_diffusers.models.refinenet_blocks import ConditionalInstanceNormPlusPlus2d


def _v1(**config):
    torch.manual_seed(0)
    return NCSNRefineNet(sample_size=8, in_channels=1, base_channels=4, num_noise_levels=5, **config).eval()


def _v2(variant="ncsnv2", **config):
    torch.manual_seed(0)
    return NCSNv2Model.from_variant(variant, sample_size=8, in_channels=1, base_channels=4, **config).eval()


def test_v1_maps_every_rung_of_its_ladder_to_its_level():
    model = _v1()
    ladder = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.01, num_noise_levels=5).sigmas
    assert model.noise_level_index(ladder, 5).tolist() == [0, 1, 2, 3, 4]
    assert model.noise_level_index(float(ladder[3]), 2).tolist() == [3, 3]  # a python float of the same rung


@pytest.mark.parametrize("sigma", [0.5, 0.011, 2.0])
def test_v1_rejects_a_sigma_off_its_ladder(sigma):
    with pytest.raises(ValueError, match="not on this network's ladder"):
        _v1()(torch.rand(1, 1, 8, 8), sigma)


def test_v1_output_depends_on_the_level_through_the_embeddings_only():
    model = _v1()
    x = torch.rand(2, 1, 8, 8)
    sigmas = model.sigmas
    with torch.no_grad():
        a, b = model(x, sigmas[0]).sample, model(x, sigmas[1]).sample
        assert not torch.allclose(a, b)
        for module in model.modules():  # same embedding row for every level -> same output
            if isinstance(module, ConditionalInstanceNormPlusPlus2d):
                module.embed.weight[1] = module.embed.weight[0]
        torch.testing.assert_close(model(x, sigmas[1]).sample, a, rtol=0, atol=0)


def test_v2_is_f_theta_over_sigma():
    # Technique 3: the network never sees sigma, so sigma * s(x, sigma) is the same at every sigma.
    model = _v2()
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        f = model(x, 1.0).sample
        torch.testing.assert_close(model(x, 0.25).sample * 0.25, f)
        per_sample = torch.tensor([0.5, 2.0, 7.0])
        torch.testing.assert_close(model(x, per_sample).sample * per_sample.view(-1, 1, 1, 1), f)


@pytest.mark.parametrize("factory", [_v1, _v2])
def test_rescale_input_is_the_official_2x_minus_1(factory):
    x = torch.rand(2, 1, 8, 8)
    on, off = factory(), factory(rescale_input=False)
    sigma = on.sigmas[2] if isinstance(on, NCSNRefineNet) else 0.3
    with torch.no_grad():
        torch.testing.assert_close(on(x, sigma).sample, off(2 * x - 1, sigma).sample, rtol=0, atol=0)


def test_instance_norm_plus_plus_keeps_the_standardised_channel_means():
    # With gamma = 1, beta = 0: spatial mean of channel k = alpha_k * (mu_k - mean(mu)) / std(mu) (unbiased std).
    norm = ConditionalInstanceNormPlusPlus2d(3, num_noise_levels=1)
    with torch.no_grad():
        norm.embed.weight[0] = torch.tensor([1.0, 1, 1, 2, 3, 4, 0, 0, 0])  # gamma | alpha | beta
    x = torch.randn(1, 3, 4, 4) + torch.tensor([1.0, 2.0, 6.0]).view(1, 3, 1, 1)
    mu = x.mean(dim=(2, 3))[0]
    expected = torch.tensor([2.0, 3.0, 4.0]) * (mu - mu.mean()) / (mu.var() + 1e-5).sqrt()
    out = norm(x, torch.zeros(1, dtype=torch.long))
    torch.testing.assert_close(out.mean(dim=(2, 3))[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["ncsnv2", "ncsnv2_deeper", "ncsnv2_deepest"])
def test_v2_variants_keep_the_shape(variant):
    model = _v2(variant)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert model(x, 1.0).sample.shape == x.shape


@pytest.mark.parametrize("factory", [_v1, _v2])
def test_save_load_roundtrip_is_bit_exact(factory, tmp_path):
    model = factory()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = type(model).from_pretrained(tmp_path).eval()
    x = torch.rand(2, 1, 8, 8)
    sigma = model.sigmas[1] if isinstance(model, NCSNRefineNet) else 0.7
    with torch.no_grad():
        expected = model(x, sigma).sample
        assert torch.equal(loaded(x, sigma).sample, expected)
        assert torch.equal(loaded(x, sigma, return_dict=False)[0], expected)


@pytest.mark.parametrize("factory", [_v1, _v2])
def test_pipeline_pairs_them_with_the_ve_score_scheduler_only(factory, tmp_path):
    model = factory()
    scheduler = AnnealedLangevinScheduler(num_noise_levels=5, steps_per_level=2)
    pipe = NCSNPipeline(unet=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()
    pipe.save_pretrained(tmp_path)
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    again = loaded(batch_size=2, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="returns the score"):
        NCSNPipeline(unet=model, scheduler=AnnealedLangevinScheduler(prediction_type="epsilon"))


def test_v1_pipeline_needs_the_networks_ladder():
    with pytest.raises(ValueError, match="same three values"):
        NCSNPipeline(unet=_v1(), scheduler=AnnealedLangevinScheduler(num_noise_levels=10))


def test_v1_keeps_float32_rungs_in_bfloat16():
    model = _v1().to(torch.bfloat16)
    sigma = AnnealedLangevinScheduler(num_noise_levels=5).sigmas[2]
    assert model.noise_level_index(sigma, 1).tolist() == [2]
    assert model(torch.rand(1, 1, 8, 8, dtype=torch.bfloat16), sigma).sample.dtype == torch.bfloat16


def test_parameter_counts_equal_the_authors_cifar10_networks():
    # Counted on the authors' classes built from their configs: CondRefineNetDilated (anneal.yml, CIFAR-10, ngf 128)
    # and NCSNv2 (ncsnv2/configs/cifar10.yml); see docs/papers.md.
    with torch.device("meta"):
        v1 = NCSNRefineNet(sample_size=32, in_channels=3, base_channels=128)
        v2 = NCSNv2Model.from_variant("ncsnv2", sample_size=32, in_channels=3, base_channels=128)
    assert sum(p.numel() for p in v1.parameters()) == 30_117_635
    assert sum(p.numel() for p in v2.parameters()) == 29_694_083


@pytest.mark.parametrize(("shape", "message"), [((2, 3, 8, 8), "expected"), ((2, 1, 9, 9), "multiples of 2")])
def test_bad_samples_are_rejected(shape, message):
    with pytest.raises(ValueError, match=message):
        _v2()(torch.rand(shape), 1.0)


def test_v1_is_refused_by_the_edm_schedulers():
    from diffusers import EDMEulerScheduler

    with pytest.raises(ValueError, match="knows only the levels"):
        NCSNPipeline(unet=_v1(), scheduler=EDMEulerScheduler(sigma_min=0.01, sigma_max=1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_a_half_precision_sigma_on_the_ladder_finds_its_rung(dtype):
    """Bug caught: a bf16 or fp16 rung was refused (a tolerance of 1e-5 whatever the dtype)."""
    model = NCSNRefineNet(sample_size=8, in_channels=1, base_channels=4, num_noise_levels=5)
    ladder = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.01, num_noise_levels=5).sigmas
    assert model.noise_level_index(ladder.to(dtype), 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="not on this network's ladder"):
        model.noise_level_index(torch.tensor([0.5], dtype=dtype), 1)
