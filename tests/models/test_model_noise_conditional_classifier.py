"""NoiseConditionalClassifier: the diffusers model contract (config, safetensors round trip) and its conditioning on
sigma; and NCSNPipeline saving and loading it as its optional `classifier` component."""

import json

import pytest
import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel, NoiseConditionalClassifier

TINY = dict(sample_size=8, block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"))


def tiny_classifier(**kwargs):
    torch.manual_seed(0)
    return NoiseConditionalClassifier(**{**TINY, **kwargs})


def test_logits_shape_and_conditioning_on_sigma():
    classifier = tiny_classifier(num_classes=3)
    x = torch.randn(4, 1, 8, 8)
    logits = classifier(x, 0.5).logits
    assert logits.shape == (4, 3)
    # one sigma per sample gives each sample the logits of its own sigma
    per_sample = classifier(x, torch.tensor([0.5, 2.0, 0.5, 2.0])).logits
    torch.testing.assert_close(per_sample[::2], logits[::2])
    assert not torch.allclose(per_sample[1::2], logits[1::2])  # sigma reaches the blocks (a bug would ignore it)
    assert torch.equal(classifier(x, 0.5, return_dict=False)[0], logits)


def test_save_and_load_round_trip_is_exact(tmp_path):
    classifier = tiny_classifier()
    classifier.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["num_classes"] == 10
    loaded = NoiseConditionalClassifier.from_pretrained(tmp_path)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x, 0.3).logits, classifier(x, 0.3).logits)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"down_block_types": ("DownBlock2D",)}, "need one entry per resolution"),
        ({"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")}, "unsupported blocks"),
        ({"norm_num_groups": 3}, "must divide every entry"),
        ({"num_classes": 1}, "must be an integer >= 2"),
    ],
)
def test_bad_config_names_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseConditionalClassifier(**{**TINY, **kwargs})


def test_wrong_channels_name_the_fix():
    with pytest.raises(ValueError, match="expected \\(batch, 1, height, width\\)"):
        tiny_classifier()(torch.randn(2, 3, 8, 8), 1.0)


def make_pipeline(classifier=None):
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny", sample_size=8)
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNPipeline(unet, scheduler, classifier=classifier)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guided(pipe, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        batch_size=2,
        num_inference_steps=6,
        class_labels=[3, 7],
        guidance_scale=2.0,
        generator=generator,
        output_type="pt",
    ).images


def test_pipeline_saves_and_loads_its_classifier(tmp_path):
    pipe = make_pipeline(tiny_classifier())
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["classifier"][1] == "NoiseConditionalClassifier"
    loaded = NCSNPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.classifier, NoiseConditionalClassifier)
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(guided(loaded), guided(pipe))
    assert not torch.equal(
        guided(pipe),
        make_pipeline()
        .__call__(batch_size=2, num_inference_steps=6, generator=torch.Generator().manual_seed(0), output_type="pt")
        .images,
    )


def test_classifier_is_added_to_a_saved_score_pipeline(tmp_path):
    # the form: NCSNPipeline.from_pretrained(score_dir, classifier=NoiseConditionalClassifier.from_pretrained(d))
    make_pipeline().save_pretrained(tmp_path / "score")
    tiny_classifier().save_pretrained(tmp_path / "classifier")
    assert NCSNPipeline.from_pretrained(tmp_path / "score").classifier is None
    pipe = NCSNPipeline.from_pretrained(
        tmp_path / "score", classifier=NoiseConditionalClassifier.from_pretrained(tmp_path / "classifier")
    )
    pipe.set_progress_bar_config(disable=True)
    assert torch.equal(guided(pipe), guided(make_pipeline(tiny_classifier())))


def guided_half_precision_pipeline(tmp_path, how: str):
    torch.manual_seed(0)
    scheduler = AnnealedLangevinScheduler(sigma_max=1.0, sigma_min=0.1, num_noise_levels=2, steps_per_level=1)
    pipe = NCSNPipeline(NCSNUNet2DModel.from_preset("tiny", sample_size=8), scheduler, tiny_classifier(num_classes=2))
    pipe.set_progress_bar_config(disable=True)
    if how == "to":
        return pipe.to(torch.bfloat16)
    if how == "layerwise":
        for model in (pipe.unet, pipe.classifier):
            model.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
        return pipe
    pipe.save_pretrained(tmp_path)  # from_pretrained keeps `sigma_proj` in float32
    return NCSNPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)


@pytest.mark.parametrize("how", ["to", "from_pretrained", "layerwise"])
def test_guided_sampling_runs_in_half_precision(tmp_path, how):
    """Bug caught: guidance cast x to the dtype of the classifier's first parameter (`sigma_proj`, kept in float32, or
    the bfloat16 storage of layerwise casting), so a bfloat16 pipeline raised `mat1 and mat2 must have the same dtype`
    at its first guided step."""
    pipe = guided_half_precision_pipeline(tmp_path, how)
    generator = torch.Generator().manual_seed(0)
    guided = pipe(batch_size=2, generator=generator, class_labels=1, output_type="pt").images
    assert guided.shape == (2, 1, 8, 8) and guided.isfinite().all()
    unguided = pipe(batch_size=2, generator=generator.manual_seed(0), output_type="pt").images
    assert not torch.equal(guided, unguided)  # the classifier's gradient reached the chain
