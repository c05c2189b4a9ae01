import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.evaluation.__main__ import parse_args, run
from ncsn_diffusers.evaluation.classifier import classifier_outputs, load_digits_classifier, train_digits_classifier
from ncsn_diffusers.evaluation.digits_metrics import evaluate_samples, reference_floor
from ncsn_diffusers.evaluation.fid import compute_fid_metrics, digits_feature_function, inception_feature_function
from ncsn_diffusers.evaluation.image_io import load_images
from ncsn_diffusers.evaluation.metrics import (
    class_coverage,
    classifier_confidence,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_score,
    nearest_neighbour_memorisation,
)
from ncsn_diffusers.evaluation.sampling import process_share, sample_pipeline

RESOLUTION = 8  # native digits: the classifier trains fastest here


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("classifier_cache"))


@pytest.fixture(scope="module")
def trained(cache_dir):
    """The classifier, trained once for the module and cached in `cache_dir`."""
    return load_digits_classifier(RESOLUTION, seed=0, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def floor(trained, cache_dir):
    return reference_floor(RESOLUTION, cache_dir=cache_dir)


def gaussian_features(mean, covariance, n=50, seed=0):
    """n points whose empirical mean and unbiased covariance are exactly `mean` and `covariance`."""
    mean, covariance = np.asarray(mean, float), np.asarray(covariance, float)
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # empirical covariance I
    return x @ np.linalg.cholesky(covariance).T + mean


# Fréchet distance


def test_frechet_distance_of_one_dimensional_gaussians():
    # N(1, 4) vs N(3, 9): (1 - 3)^2 + (2 - 3)^2
    assert frechet_distance_from_statistics([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0, abs=1e-12)


def test_frechet_distance_of_non_commuting_2x2_covariances():
    # For 2x2 A, B: tr (AB)^(1/2) = sqrt(tr(AB) + 2 sqrt(det A det B)), since the eigenvalues of AB are positive.
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    b = np.array([[1.0, -0.3], [-0.3, 3.0]])
    mu_a, mu_b = np.array([0.5, -1.0]), np.array([1.5, 1.0])
    trace_sqrt = math.sqrt(np.trace(a @ b) + 2 * math.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    expected = 1.0**2 + 2.0**2 + np.trace(a) + np.trace(b) - 2 * trace_sqrt
    assert frechet_distance_from_statistics(mu_a, a, mu_b, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_features_matches_the_diagonal_closed_form():
    # Diagonal covariances: ||mu_a - mu_b||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    a_var, b_var = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    features_a = gaussian_features(mu_a, np.diag(a_var), seed=0)
    features_b = gaussian_features(mu_b, np.diag(b_var), n=80, seed=1)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a_var) - np.sqrt(b_var)) ** 2)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_zero_for_identical_sets_symmetric_and_agrees_with_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 16)) @ rng.standard_normal((16, 16))
    b = rng.standard_normal((300, 16)) * 2 + 0.5
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)
    # The formula as usually written, with scipy's general matrix square root.
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (
        np.sum((a.mean(0) - b.mean(0)) ** 2)
        + np.trace(sigma_a + sigma_b)
        - 2 * np.trace(scipy.linalg.sqrtm(sigma_a @ sigma_b).real)
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(np.zeros((5, 3)), np.ones((5, 4)))


# Confidence, coverage, Inception Score


def test_classifier_confidence_is_the_mean_largest_probability():
    probabilities = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    assert classifier_confidence(probabilities) == pytest.approx((0.9 + 0.5) / 2)


def test_class_coverage_of_known_histograms():
    single = class_coverage(torch.full((50,), 3))
    assert single["class_entropy"] == 0.0 and single["classes_missing"] == 9 and single["class_counts"][3] == 50

    uniform = class_coverage(torch.arange(10).repeat(7))
    assert uniform["class_entropy"] == pytest.approx(1.0) and uniform["classes_missing"] == 0

    # Half 0s, half 1s: entropy log 2, normalised by log 10.
    two = class_coverage(torch.tensor([0, 1, 0, 1]))
    assert two["class_entropy"] == pytest.approx(math.log(2) / math.log(10))
    assert two["class_counts"] == [2, 2, 0, 0, 0, 0, 0, 0, 0, 0] and two["classes_missing"] == 8


def test_inception_score_of_confident_predictions():
    # p(y|x) one-hot: KL(p(y|x) || p(y)) = -log p(y), so IS = K for K equally used classes and 1 for one class.
    confident = 60.0 * torch.eye(10).repeat(3, 1)  # (30, 10) logits
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-9)
    one_class = 60.0 * torch.eye(10)[[4] * 30]
    assert inception_score(one_class, splits=3) == pytest.approx((1.0, 0.0), abs=1e-9)
    # Uninformative p(y|x) = p(y): IS = 1.
    assert inception_score(torch.zeros(20, 10), splits=2)[0] == pytest.approx(1.0)


# Memorisation


def test_memorisation_flags_training_images_and_not_held_out_ones():
    train, _ = load_digits_images(RESOLUTION, split="train")
    test, _ = load_digits_images(RESOLUTION, split="test")
    copies = nearest_neighbour_memorisation(train[:100], train)
    assert copies["memorisation_fraction"] == 1.0 and copies["memorisation_median_ratio"] == pytest.approx(0, abs=1e-6)
    fresh = nearest_neighbour_memorisation(test, train)
    assert fresh["memorisation_fraction"] == 0.0
    assert 0.5 < fresh["memorisation_median_ratio"] < 2.0
    # Half copies, half fresh.
    mixed = nearest_neighbour_memorisation(torch.cat([train[:50], test[:50]]), train)
    assert mixed["memorisation_fraction"] == pytest.approx(0.5)


# The classifier


def test_classifier_accuracy_and_determinism(trained):
    classifier, info = trained
    assert info["test_accuracy"] >= 0.95
    assert info["resolution"] == RESOLUTION and info["feature_dim"] == 64

    retrained, retrained_info = train_digits_classifier(RESOLUTION, seed=0)
    assert retrained_info["test_accuracy"] == info["test_accuracy"]
    for name, tensor in classifier.state_dict().items():
        assert torch.equal(tensor, retrained.state_dict()[name]), name
    assert torch.get_num_threads() == 1  # the caller's settings come back


def test_cached_classifier_gives_identical_features(trained, cache_dir):
    classifier, _ = trained
    cached, info = load_digits_classifier(RESOLUTION, seed=0, cache_dir=cache_dir)
    assert cached is not classifier
    images, _ = load_digits_images(RESOLUTION, split="test")
    features, logits = classifier_outputs(classifier, images)
    cached_features, cached_logits = classifier_outputs(cached, images)
    assert torch.equal(features, cached_features) and torch.equal(logits, cached_logits)
    assert features.shape == (360, 64)


# The digits metrics


def test_floor_is_far_below_noise(floor, cache_dir):
    assert floor["num_samples"] == 360 and floor["num_reference"] == 1437
    assert floor["classes_missing"] == 0 and floor["class_entropy"] > 0.99
    assert floor["classifier_confidence"] > 0.9 and floor["memorisation_fraction"] == 0.0

    noise = torch.rand(360, 1, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
    noisy = evaluate_samples(noise, cache_dir=cache_dir)
    assert noisy["frechet_distance"] > 20 * floor["frechet_distance"]
    assert noisy["memorisation_fraction"] == 0.0


def test_held_out_images_score_zero_against_themselves(cache_dir):
    test, _ = load_digits_images(RESOLUTION, split="test")
    scores = evaluate_samples(test, cache_dir=cache_dir)
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
    assert scores["num_reference"] == 360


def test_a_missing_mode_shows_in_coverage(trained, cache_dir):
    # Langevin dynamics that never leaves the basin of one digit: only 3s.
    test, labels = load_digits_images(RESOLUTION, split="test")
    scores = evaluate_samples(test[labels == 3], cache_dir=cache_dir)
    assert scores["classes_missing"] >= 8 and scores["class_entropy"] < 0.1
    assert max(scores["class_counts"]) == scores["class_counts"][3]


def test_evaluate_samples_rejects_out_of_range_images(cache_dir):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_samples(2 * torch.rand(4, 1, 8, 8) - 1, cache_dir=cache_dir)
    with pytest.raises(ValueError, match="single-channel"):
        evaluate_samples(torch.rand(4, 3, 8, 8), cache_dir=cache_dir)


# FID / IS code path with the digits classifier in place of Inception


def test_fid_path_with_digits_features_reproduces_the_floor(trained, floor):
    classifier, _ = trained
    train, _ = load_digits_images(RESOLUTION, split="train")
    test, _ = load_digits_images(RESOLUTION, split="test")
    scores = compute_fid_metrics(test, train, feature_function=digits_feature_function(classifier))
    assert scores["fid"] == pytest.approx(floor["frechet_distance"], rel=1e-9)
    for key in ("precision", "recall", "density", "coverage", "kid_mean", "kid_std"):
        assert scores[key] == pytest.approx(floor[key], rel=1e-9), key
    assert scores["inception_score_mean"] > 8.0  # confident and near-uniform over 10 digits
    # RGB input is converted to luma: the same numbers for gray images stored as RGB.
    rgb = compute_fid_metrics(test.expand(-1, 3, -1, -1), train, feature_function=digits_feature_function(classifier))
    assert rgb["fid"] == pytest.approx(scores["fid"], rel=1e-5)


def test_missing_torch_fidelity_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        inception_feature_function()


# The command


def write_pngs(images: torch.Tensor, folder):
    folder.mkdir()
    for i, image in enumerate(images):
        array = (image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array, mode="L").save(folder / f"{i:04d}.png")


def test_cli_on_a_png_folder_writes_every_key(tmp_path, cache_dir, floor, capsys):
    test, _ = load_digits_images(RESOLUTION, split="test")
    write_pngs(test, tmp_path / "samples")
    out = tmp_path / "scores.json"
    run(parse_args(["--samples", str(tmp_path / "samples"), "--floor", "--json", str(out), "--cache_dir", cache_dir]))
    results = json.loads(out.read_text())
    expected_keys = {
        "resolution",
        "classifier_test_accuracy",
        "num_samples",
        "num_reference",
        "frechet_distance",
        "precision",
        "recall",
        "density",
        "coverage",
        "kid_mean",
        "kid_std",
        "classifier_confidence",
        "class_entropy",
        "class_counts",
        "classes_missing",
        "memorisation_fraction",
        "memorisation_median_ratio",
        "memorisation_threshold",
        "train_nn_distance",
        "rough_fraction",
        "rough_threshold",
    }
    assert results["metric"] == "digits"
    assert set(results["samples"]) == expected_keys and set(results["floor"]) == expected_keys
    for key, value in floor.items():  # pytest.approx takes no nested lists (class_counts)
        assert results["floor"][key] == (pytest.approx(value) if isinstance(value, float) else value), key
    # The held-out images themselves, up to 8-bit rounding: near zero, and below the floor.
    assert results["samples"]["frechet_distance"] < 0.1 * floor["frechet_distance"]
    assert "frechet_distance" in capsys.readouterr().out


def test_digits_metrics_separate_fidelity_from_diversity(floor, cache_dir):
    # Fresh real digits: precision and recall near 1, KID consistent with 0 (the unbiased estimate can be negative).
    # One digit only: the samples look real (precision 1), but the rest of the data is unreached (recall, coverage).
    test, labels = load_digits_images(RESOLUTION, split="test")
    real = evaluate_samples(test, cache_dir=cache_dir)
    assert real["precision"] == real["recall"] == real["coverage"] == 1.0
    assert floor["precision"] > 0.9 and floor["recall"] > 0.9 and abs(floor["kid_mean"]) < 3 * floor["kid_std"]
    threes = evaluate_samples(test[labels == 3], cache_dir=cache_dir)
    assert threes["precision"] == 1.0 and threes["recall"] < 0.3 and threes["coverage"] < 0.3
    assert threes["kid_mean"] > 50 * abs(floor["kid_mean"])


def test_nan_samples_are_named_not_eigenvalues_that_did_not_converge(tmp_path, cache_dir):
    images = np.random.default_rng(0).random((20, RESOLUTION, RESOLUTION)).astype(np.float32)
    images[[1, 4, 7]] = np.nan  # a diverged sampler
    np.save(tmp_path / "samples.npy", images)
    with pytest.raises(ValueError, match=r"3 of 20 samples are not finite \(NaN or inf\).*step size"):
        run(parse_args(["--samples", str(tmp_path / "samples.npy"), "--cache_dir", cache_dir]))


def test_16_bit_pngs_are_scaled_by_65535(tmp_path):
    test, _ = load_digits_images(RESOLUTION, split="test")
    folder = tmp_path / "sixteen"
    folder.mkdir()
    for i, image in enumerate(test[:10]):
        Image.fromarray((image[0].numpy() * 65535).round().astype(np.uint16)).save(folder / f"{i}.png")
    assert Image.open(folder / "0.png").mode.startswith("I")  # read back as 16-bit, not as 8-bit "L"
    gray = load_images(str(folder), mode="L")
    torch.testing.assert_close(gray, test[:10], rtol=0, atol=1 / 65535)
    torch.testing.assert_close(load_images(str(folder), mode="RGB"), gray.expand(-1, 3, -1, -1))


def test_cli_fid_metric_with_injected_features(tmp_path, trained):
    classifier, _ = trained
    test, _ = load_digits_images(RESOLUTION, split="test")
    train, _ = load_digits_images(RESOLUTION, split="train")
    np.save(tmp_path / "samples.npy", test[:, 0].numpy())  # (N, H, W)
    write_pngs(train, tmp_path / "reference")
    out = tmp_path / "fid.json"
    argv = [
        "--metric",
        "fid",
        "--samples",
        str(tmp_path / "samples.npy"),
        "--reference_dir",
        str(tmp_path / "reference"),
    ]
    run(parse_args([*argv, "--json", str(out)]), fid_feature_function=digits_feature_function(classifier))
    results = json.loads(out.read_text())["samples"]
    assert set(results) == {
        "fid", "inception_score_mean", "inception_score_std", "precision", "recall", "density", "coverage", "kid_mean",
        "kid_std", "num_samples", "num_reference",
    }  # fmt: skip
    assert results["num_samples"] == 360 and results["num_reference"] == 1437
    with pytest.raises(ValueError, match="reference_dir"):
        run(parse_args(["--metric", "fid", "--samples", str(tmp_path / "samples.npy")]))


# Sampling a saved pipeline


def test_process_share_splits_the_remainder_over_the_first_ranks():
    assert [process_share(10, 3, r) for r in range(3)] == [4, 3, 3]
    assert [process_share(2, 4, r) for r in range(4)] == [1, 1, 0, 0]


@pytest.fixture(scope="module")
def ddpm_dir(tmp_path_factory):
    from diffusers import DDPMPipeline, DDPMScheduler
    from tiny_models import tiny_ddpm_unet

    unet = tiny_ddpm_unet()
    path = tmp_path_factory.mktemp("ddpm")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(path)
    return str(path)


def test_cli_samples_a_saved_pipeline(tmp_path, ddpm_dir, cache_dir):
    out, saved = tmp_path / "scores.json", tmp_path / "samples.npy"
    argv = ["--pipeline", ddpm_dir, "--num_samples", "5", "--batch_size", "2", "--num_inference_steps", "2"]
    argv += ["--seed", "3", "--json", str(out), "--save_samples", str(saved), "--cache_dir", cache_dir]
    run(parse_args(argv))
    results = json.loads(out.read_text())["samples"]
    assert results["num_samples"] == 5 and results["resolution"] == 8 and sum(results["class_counts"]) == 5

    images = np.load(saved)
    assert images.shape == (5, 8, 8, 1) and images.min() >= 0.0 and images.max() <= 1.0
    # One process draws everything with seed + 0, batch after batch from one generator.
    again = sample_pipeline(ddpm_dir, 5, batch_size=2, num_inference_steps=2, seed=3)
    np.testing.assert_array_equal(images, again)
    other_seed = sample_pipeline(ddpm_dir, 5, batch_size=2, num_inference_steps=2, seed=4)
    assert not np.array_equal(images, other_seed)


@pytest.mark.slow
def test_data_parallel_sampling_gathers_every_rank_in_order(tmp_path, ddpm_dir, cache_dir, trained):
    # Two CPU processes: rank r draws its share with seed + r; rank 0 gathers the shares in rank order and scores them.
    saved, out = tmp_path / "samples.npy", tmp_path / "scores.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "ncsn_diffusers.evaluation", "--pipeline", ddpm_dir, "--num_samples", "5", "--batch_size", "2"]
    command += ["--num_inference_steps", "2", "--seed", "3", "--save_samples", str(saved), "--json", str(out)]
    command += ["--cache_dir", cache_dir]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]

    rank_0 = sample_pipeline(ddpm_dir, 3, batch_size=2, num_inference_steps=2, seed=3)  # 5 // 2 + 1 images
    rank_1 = sample_pipeline(ddpm_dir, 2, batch_size=2, num_inference_steps=2, seed=4)
    np.testing.assert_allclose(np.load(saved), np.concatenate([rank_0, rank_1]), atol=1e-6)
    assert json.loads(out.read_text())["samples"]["num_samples"] == 5


@pytest.mark.parametrize("damage", ["weights", "info"])
def test_a_damaged_classifier_cache_names_the_files_and_the_fix(tmp_path, damage):
    """A torn cache file used to fail deep in safetensors or json with no hint of which file or what to do."""
    from ncsn_diffusers.evaluation import load_digits_classifier

    load_digits_classifier(8, cache_dir=str(tmp_path))  # trains and caches
    (suffix,) = [".safetensors"] if damage == "weights" else [".json"]
    (path,) = tmp_path.glob(f"digits_classifier_*{suffix}")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match=r"cannot be read .*Delete both files to retrain it"):
        load_digits_classifier(8, cache_dir=str(tmp_path))


def test_an_oversized_sample_file_is_named_before_any_scoring(tmp_path, monkeypatch):
    """A 20000x20000 file failed deep in PIL's decompression-bomb check; here PIL's limit is lowered to keep it small."""
    from PIL import Image

    from ncsn_diffusers.evaluation.image_io import load_images

    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100 x 100 > 2 x the limit: PIL refuses it as a bomb
    with pytest.raises(ValueError, match=r"huge\.png is too large to score"):
        load_images(str(tmp_path))
