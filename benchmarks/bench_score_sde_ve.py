"""Sample statistics of diffusers' `ScoreSdeVePipeline` and of the package's predictor-corrector converted from its
scheduler's config, on the exact score of N(0.5, 0.1**2 I) in 3 x 4 x 4 dimensions (docs/pretrained.md).

    python -m benchmarks.bench_score_sde_ve
"""

import torch
from diffusers import ModelMixin, ScoreSdeVePipeline, ScoreSdeVeScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import NCSNPipeline, PredictorCorrectorScheduler

SIZE, BATCH, CALLS = 4, 500, 200
MEAN, STD = 0.5, 0.1


class GaussianScore(ModelMixin, ConfigMixin):
    """s(x, sigma) = -(x - 0.5) / (0.1**2 + sigma**2), called as a ScoreSdeVe U-Net is."""

    @register_to_config
    def __init__(self, sample_size: int = SIZE, in_channels: int = 3):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1), persistent=False)  # a dtype and device for the pipelines

    def forward(self, sample, sigma, return_dict=True):
        sigma = float(torch.as_tensor(sigma).flatten()[0])
        return UNet2DOutput(sample=-(sample - MEAN) / (STD**2 + sigma**2))


def statistics(images) -> str:
    return f"std {images.std():.4f} (true {STD}), mean {images.mean():.4f} (true {MEAN})"


def main():
    torch.set_num_threads(1)
    model = GaussianScore()
    reference = ScoreSdeVePipeline(unet=model, scheduler=ScoreSdeVeScheduler(sigma_max=50, sigma_min=0.01, snr=0.16))
    reference.set_progress_bar_config(disable=True)
    images = reference(
        batch_size=BATCH, num_inference_steps=CALLS // 2, generator=torch.manual_seed(0), output_type="np"
    )
    print(f"diffusers ScoreSdeVePipeline, {CALLS // 2} steps ({CALLS} calls): {statistics(images.images)}")
    for norms in ("batch_mean", "per_sample"):
        scheduler = PredictorCorrectorScheduler.from_config(reference.scheduler.config, corrector_norms=norms)
        pipe = NCSNPipeline(unet=model, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        images = pipe(batch_size=BATCH, num_inference_steps=CALLS, generator=torch.manual_seed(0), output_type="np")
        print(f"PredictorCorrectorScheduler.from_config, corrector_norms={norms!r}: {statistics(images.images)}")


if __name__ == "__main__":
    main()
