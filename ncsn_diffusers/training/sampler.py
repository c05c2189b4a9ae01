"""The sampler saved with a trained model, and the sample grids drawn with it."""

import math
from pathlib import Path

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from .. import NCSNPipeline
from ..schedulers import PredictorCorrectorScheduler, StochasticHeunScheduler

# The sampler saved with an epsilon model (--objective epsilon) and its U-Net calls: the best measured on the
# default-budget run (docs/sampling.md, "Epsilon models"), built from the training schedule's config.
EPSILON_SAMPLER = DPMSolverMultistepScheduler  # DPM-Solver++ (2M), diffusers' defaults
EPSILON_SAMPLING_CALLS = 20
DDPM_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
)

# The saved predictor-corrector's predictor: the ancestral step keeps the samples clean when a caller lowers
# `num_inference_steps`, where reverse diffusion (what earlier releases saved) leaves every digit rough at 10-50 calls,
# and it is no worse at the default 100 calls (docs/sampling.md, "Lowering the saved sampler's calls").
SCORE_PREDICTOR = "ancestral"


def sampling_sigma_max(args, ladder) -> float:
    """Where the saved predictor-corrector or stochastic Heun sampler starts: --sampling_sigma_max, else sigma_1 / 2 for the ncsnv2 ladder (sigma_1 is the
    data's largest pairwise distance; at 16x16 the digits sample better from half of it, README), else sigma_1."""
    start = args.sampling_sigma_max or ladder.sigma_max / (2 if args.noise_ladder == "ncsnv2" else 1)
    if not ladder.sigma_min < start <= ladder.sigma_max:
        raise ValueError(
            f"--sampling_sigma_max {start} must lie in (sigma_L, sigma_1] = ({ladder.sigma_min}, {ladder.sigma_max}]."
        )
    return start


def make_pipeline(unet, noise_scheduler, args):
    """The pipeline to sample and save: for a score model the training ladder's annealed Langevin chain, or PC sampling
    (`--sampler predictor_corrector`, with the `SCORE_PREDICTOR` predictor) or EDM's stochastic Heun sampler (`stochastic_heun`) of the same range, from
    `sampling_sigma_max` to sigma_L, in --sampling_calls U-Net calls, on the training scheduler's `data_range`; for an
    epsilon model `EPSILON_SAMPLER` on the training schedule, at `EPSILON_SAMPLING_CALLS` calls."""
    if noise_scheduler.config.noise_space == "vp":  # an epsilon model (--objective epsilon)
        # the training schedule's betas and prediction type; diffusers' defaults for the rest (its data in [-1, 1])
        config = {key: noise_scheduler.config[key] for key in DDPM_SCHEDULE_KEYS}
        return NCSNPipeline(
            unet=unet, scheduler=EPSILON_SAMPLER(**config), default_num_inference_steps=EPSILON_SAMPLING_CALLS
        )
    if args.sampler == "annealed_langevin":
        return NCSNPipeline(unet=unet, scheduler=noise_scheduler)
    ladder, k = noise_scheduler.config, args.corrector_steps
    data_range = tuple(ladder.data_range)  # the range the model was trained on (`data.model_data_range`)
    if args.sampler == "stochastic_heun":
        sampler = StochasticHeunScheduler(
            sigma_max=sampling_sigma_max(args, ladder),
            sigma_min=ladder.sigma_min,
            num_noise_levels=(args.sampling_calls + 1) // 2,
            data_range=data_range,
        )
        return NCSNPipeline(unet=unet, scheduler=sampler)
    sampler = PredictorCorrectorScheduler(
        sigma_max=sampling_sigma_max(args, ladder),
        sigma_min=ladder.sigma_min,
        num_noise_levels=math.ceil(args.sampling_calls / (k + 1)),
        corrector_steps=k,
        snr=args.snr,
        final_denoise=args.final_denoise,
        predictor=SCORE_PREDICTOR,
        data_range=data_range,
    )
    return NCSNPipeline(unet=unet, scheduler=sampler)


def save_sample_grid(
    pipeline, path: Path, num_images: int, seed: int, device, num_inference_steps: int | None = None
) -> np.ndarray:
    """Samples `num_images` with the pipeline, in `num_inference_steps` U-Net calls (default: its sampler's own), and
    writes them as one PNG grid; returns the images (N, H, W, C)."""
    from PIL import Image

    generator = torch.Generator(device).manual_seed(seed)
    steps = {} if num_inference_steps is None else {"num_inference_steps": num_inference_steps}
    images = pipeline(batch_size=num_images, generator=generator, output_type="np", **steps).images  # (N, H, W, C)
    images = np.asarray(images)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1, c), dtype=np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + col * (w + 1) : 1 + col * (w + 1) + w] = image
    grid = (grid.clip(0, 1) * 255).round().astype(np.uint8)
    scale = max(1, 512 // max(grid.shape[:2]))  # small images are hard to judge: enlarge (nearest) to ~512 px
    picture = Image.fromarray(grid[..., 0] if c == 1 else grid).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), resample=Image.Resampling.NEAREST
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return images
