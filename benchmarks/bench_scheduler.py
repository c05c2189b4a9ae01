"""Cost of one `AnnealedLangevinScheduler.step` against the bare torch update and diffusers' `ScoreSdeVeScheduler`."""

import math

import torch
from diffusers import ScoreSdeVeScheduler

from ncsn_diffusers import AnnealedLangevinScheduler

from .timing import median_seconds


def run(batch_shape=(64, 3, 32, 32), steps: int = 200, device: str = "cpu") -> dict:
    x0 = torch.randn(batch_shape, device=device)
    score = torch.randn(batch_shape, device=device)
    generator = torch.Generator(device=device).manual_seed(0)

    scheduler = AnnealedLangevinScheduler(num_noise_levels=10, steps_per_level=steps // 10)

    def ours():
        scheduler.set_timesteps()
        x = x0
        for t in scheduler.timesteps:
            x = scheduler.step(score, t, x, generator=generator).prev_sample

    alpha = 2e-5  # the same update written out: x + alpha * s + sqrt(2 alpha) z
    noise_scale = math.sqrt(2 * alpha)

    def bare():
        x = x0
        for _ in range(steps):
            z = torch.randn(batch_shape, generator=generator, device=device)
            x = x + alpha * score + noise_scale * z

    sde_ve = ScoreSdeVeScheduler()
    sde_ve.set_timesteps(steps)
    sde_ve.set_sigmas(steps)

    cpu_generator = torch.Generator().manual_seed(0)  # step_correct draws its noise on the CPU, then moves it

    def score_sde_ve_step_correct():
        x = x0
        for _ in range(steps):
            x = sde_ve.step_correct(score, x, generator=cpu_generator).prev_sample

    seconds = median_seconds(
        {
            "AnnealedLangevinScheduler.step": ours,
            "bare torch update": bare,
            "ScoreSdeVeScheduler.step_correct": score_sde_ve_step_correct,
        }
    )
    seconds = {name: s / steps for name, s in seconds.items()}
    base = seconds["AnnealedLangevinScheduler.step"]
    print(f"\nScheduler step on a {tuple(batch_shape)} batch ({device}, {torch.get_num_threads()} threads)")
    for name, s in seconds.items():
        print(f"  {name:36s} {s * 1e6:9.1f} us/step   ours / this = {base / s:5.2f}x")
    return seconds


def run_both(device: str = "cpu") -> dict:
    """The 64x3x32x32 batch, then a 1x1x2x2 one whose arithmetic costs nothing: there the times are the fixed cost of a
    step (Python, dispatch, the output object), which is what a GPU pays at small batches, where kernels are short."""
    return {"64x3x32x32": run(device=device), "1x1x2x2": run(batch_shape=(1, 1, 2, 2), steps=1000, device=device)}
