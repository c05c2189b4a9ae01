"""FD_DINOv2 through the real loading path (`from_pretrained(folder)`) with a tiny randomly initialised DINOv2."""

import json
import sys

import numpy as np
import pytest
import torch

from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.evaluation import compute_dinov2_metrics, dinov2_feature_function, load_dinov2
from ncsn_diffusers.evaluation.__main__ import parse_args, run

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> str:
    """A 2-layer DINOv2 (hidden size 32, 4x4 patches) and its processor (16x16 crops), saved as the Hub holds them."""
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4, image_size=16
    )
    torch.manual_seed(0)
    model = transformers.Dinov2Model(config)
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 16},
        crop_size={"height": 16, "width": 16},
        resample=3,  # bicubic, as facebook/dinov2-large
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    folder = tmp_path_factory.mktemp("tiny_dinov2")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def digits():
    images, _ = load_digits_images(8, split="test")
    return images[:120]  # (120, 1, 8, 8)


def test_features_are_the_cls_token_of_the_processed_rgb_images(tiny_dinov2, digits):
    features = dinov2_feature_function(tiny_dinov2, batch_size=7, progress=False)(digits)
    assert features.shape == (120, 32) and features.dtype == torch.float32

    model, processor = load_dinov2(tiny_dinov2)
    rgb = (digits[:5].expand(-1, 3, -1, -1) * 255).round().to(torch.uint8)
    pixels = processor(images=list(rgb), input_data_format="channels_first", return_tensors="pt")["pixel_values"]
    assert pixels.shape == (5, 3, 16, 16)
    with torch.no_grad():
        cls = model(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(features[:5], cls, rtol=1e-5, atol=1e-5)
    # Grayscale is replicated to RGB: the same features as the 3-channel copy.
    rgb_features = dinov2_feature_function(tiny_dinov2, batch_size=7, progress=False)(digits.expand(-1, 3, -1, -1))
    torch.testing.assert_close(rgb_features, features, rtol=0, atol=0)


def test_metrics_do_not_depend_on_the_batch_size(tiny_dinov2, digits):
    noisy = (digits + 0.1 * torch.randn(digits.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    small = compute_dinov2_metrics(noisy, digits, tiny_dinov2, batch_size=4, kid_subset_size=50, progress=False)
    large = compute_dinov2_metrics(noisy, digits, tiny_dinov2, batch_size=64, kid_subset_size=50, progress=False)
    assert small.keys() == large.keys()
    for key in ("fd_dinov2", "kid_mean", "kid_std", "density"):
        assert small[key] == pytest.approx(large[key], rel=1e-4, abs=1e-8), key
    for key in ("precision", "recall", "coverage"):
        assert small[key] == large[key], key


def test_fd_of_a_set_against_itself_is_zero_and_grows_with_noise(tiny_dinov2, digits):
    same = compute_dinov2_metrics(digits, digits, tiny_dinov2, progress=False)
    assert same["fd_dinov2"] == pytest.approx(0.0, abs=1e-6)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0

    noise = torch.randn(digits.shape, generator=torch.Generator().manual_seed(1))
    distances = [
        compute_dinov2_metrics((digits + s * noise).clamp(0, 1), digits, tiny_dinov2, progress=False)["fd_dinov2"]
        for s in (0.05, 0.1, 0.2, 0.4, 0.8)
    ]
    assert all(a < b for a, b in zip([0.0, *distances], distances)), distances


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[eval\]"'):
        load_dinov2("facebook/dinov2-large")


def test_weights_not_found_offline_name_feature_model(tmp_path):
    with pytest.raises(OSError, match="--feature_model"):
        load_dinov2("ncsn-diffusers-tests/no-such-dinov2")
    with pytest.raises(OSError, match="--feature_model"):
        load_dinov2(str(tmp_path))  # an empty folder


def test_non_finite_samples_are_named_before_the_model_runs(tiny_dinov2, digits):
    broken = digits.clone()
    broken[[0, 3, 9]] = float("nan")
    with pytest.raises(ValueError, match="3 of 120 samples are not finite"):
        compute_dinov2_metrics(broken, digits, tiny_dinov2, progress=False)


def test_cli_fd_dinov2(tmp_path, tiny_dinov2, digits):
    np.save(tmp_path / "samples.npy", digits[:60, 0].numpy())
    np.save(tmp_path / "reference.npy", digits[60:, 0].numpy())
    out = tmp_path / "scores.json"
    argv = ["--metric", "fd_dinov2", "--samples", str(tmp_path / "samples.npy"), "--batch_size", "16"]
    run(
        parse_args(
            [
                *argv,
                "--reference_dir",
                str(tmp_path / "reference.npy"),
                "--feature_model",
                tiny_dinov2,
                "--json",
                str(out),
            ]
        )
    )
    results = json.loads(out.read_text())
    assert results["metric"] == "fd_dinov2"
    assert set(results["samples"]) == {
        "fd_dinov2", "precision", "recall", "density", "coverage", "kid_mean", "kid_std", "num_samples",
        "num_reference", "feature_model",
    }  # fmt: skip
    assert results["samples"]["num_samples"] == 60 and results["samples"]["feature_model"] == tiny_dinov2
    assert results["samples"]["fd_dinov2"] > 0
    with pytest.raises(ValueError, match="reference_dir"):
        run(parse_args(argv))
