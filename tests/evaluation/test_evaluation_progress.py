"""Long evaluations show one overall count: the evaluator's sampling, `--metric bpd`'s solves, the distilled
student's quality at the end of its run.

Bug caught: the 500-sample evaluator showed the pipeline's own bar, restarting at every batch of 64 with no overall
count; `--metric bpd` printed nothing for minutes while its RK45 solves ran; distillation ended without printing the
FD it measured.
"""

import torch

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel
from ncsn_diffusers.evaluation import sample_pipeline
from ncsn_diffusers.evaluation.bits_per_dim import digits_bits_per_dim
from ncsn_diffusers.training.distillation_record import quality_summary


def tiny_pipeline() -> NCSNPipeline:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("tiny")
    scheduler = AnnealedLangevinScheduler(
        sigma_max=1.0, sigma_min=0.1, num_noise_levels=2, steps_per_level=2, data_range=(-1.0, 1.0)
    )
    return NCSNPipeline(unet=unet, scheduler=scheduler)


def test_sampling_shows_one_bar_over_all_images(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    images = sample_pipeline(str(tmp_path / "pipe"), num_samples=5, batch_size=2)
    err = capsys.readouterr().err
    assert images.shape == (5, 16, 16, 1)
    assert "sampling 5 images" in err and "5/5" in err and "network calls" in err
    bars = [line for line in err.replace("\r", "\n").splitlines() if "Loading pipeline components" not in line]
    assert not [line for line in bars if "it/s" in line or "s/it" in line]  # no per-call bar of the pipeline's own


def test_bits_per_dim_counts_images_and_network_calls(capsys):
    results = digits_bits_per_dim(tiny_pipeline(), num_images=3, batch_size=2, solver="rk45", rtol=0.1, atol=0.1)
    err = capsys.readouterr().err
    assert len(results["model"]["nfe_per_batch"]) == 2
    assert "bits/dim of 3 held-out digits" in err and "3/3" in err
    calls = int(err.rsplit(" network calls", 1)[0].rsplit(" ", 1)[-1])
    assert calls >= sum(results["model"]["nfe_per_batch"])


def test_distillation_summary_names_the_fd_of_each_call_count():
    quality = {
        "1 call": {"frechet_distance": 11.574, "rough_fraction": 0.019, "num_samples": 500},
        "2 calls [2, 0]": {"frechet_distance": 10.981, "rough_fraction": 0.0, "num_samples": 500},
    }
    assert quality_summary(quality) == (
        "Student quality, 500 samples each (digits evaluator, lower FD is better): "
        "1 call: FD 11.57 (1.9% rough); 2 calls [2, 0]: FD 10.98 (0.0% rough)"
    )
    assert "not measured" in quality_summary({})
