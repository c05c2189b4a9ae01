"""Cost of one `step` of every sampler against the same update written out in bare torch, and against diffusers'
`ScoreSdeVeScheduler`. Each pair runs the loop a pipeline runs (`for t in scheduler.timesteps: step(...)`).

diffusers' EDM schedulers are used as they are: for them the pairs separate what the score-to-denoiser conversion adds
(`via the denoiser` against the same step handed a precomputed output) from what diffusers' own step costs against the
bare Euler update."""

import inspect
import math
from unittest import mock

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler, ScoreSdeVeScheduler

from ncsn_diffusers import (
    AnnealedLangevinScheduler,
    ConsistentAnnealedSamplingScheduler,
    PredictorCorrectorScheduler,
    StochasticHeunScheduler,
    denoiser_model_output,
    sample_from_score,
)
from ncsn_diffusers.schedulers import scheduling_utils

from .timing import median_seconds


def _chain(scheduler, x0, score, generator, num_inference_steps=None, timesteps=None):
    """The loop every pipeline runs (over `timesteps` instead of the scheduler's own entries, if given)."""

    def run():
        scheduler.set_timesteps(num_inference_steps)
        x = x0
        for t in scheduler.timesteps if timesteps is None else timesteps:
            x = scheduler.step(score, t, x, generator=generator).prev_sample

    return run


def _edm_chain(scheduler, x0, score, generator, steps, convert=True):
    """The loop NCSNPipeline runs for a diffusers EDM scheduler: a step that takes `pred_original_sample` (Euler) gets
    the denoiser x + sigma**2 s itself; the others the model output for which their `precondition_outputs` returns it
    (`convert=False`: that output handed over precomputed)."""
    model_output = score
    takes_denoised = "pred_original_sample" in inspect.signature(scheduler.step).parameters

    def run():
        scheduler.set_timesteps(steps)
        x = x0
        for t in scheduler.timesteps:
            scheduler.scale_model_input(x[:0], t)
            sigma = scheduler.sigmas[scheduler.step_index].item()
            if convert and takes_denoised:
                denoised = sample_from_score(score, x, sigma)
                x = scheduler.step(denoised, t, x, generator=generator, pred_original_sample=denoised).prev_sample
                continue
            out = denoiser_model_output(scheduler, score, x, sigma) if convert else model_output
            x = scheduler.step(out, t, x, generator=generator).prev_sample

    return run


def run(batch_shape=(64, 3, 32, 32), steps: int = 200, device: str = "cpu") -> dict:
    x0 = torch.randn(batch_shape, device=device)
    score = torch.randn(batch_shape, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    per_sample = (batch_shape[0],) + (1,) * (len(batch_shape) - 1)
    fns = {}

    # Annealed Langevin dynamics (Algorithm 1): x + alpha s + sqrt(2 alpha) z
    langevin = AnnealedLangevinScheduler(num_noise_levels=10, steps_per_level=steps // 10)
    fns["AnnealedLangevinScheduler.step"] = _chain(langevin, x0, score, generator)
    alpha = 2e-5
    noise_scale = math.sqrt(2 * alpha)

    def bare_langevin():
        x = x0
        for _ in range(steps):
            z = torch.randn(batch_shape, generator=generator, device=device)
            x = x + alpha * score + noise_scale * z

    fns["bare torch update"] = bare_langevin

    # The same chain with every timestep passed as a copy, compared on the "device" (issue 8 item 9's check, forced
    # onto the CPU): what a loop over anything but the scheduler's own entries pays.
    langevin.set_timesteps()
    device_checked = _chain(langevin, x0, score, generator, timesteps=[t.clone() for t in langevin.timesteps])

    def langevin_device_check():
        with mock.patch.object(scheduling_utils, "reading_synchronises", lambda tensor: True):
            device_checked()

    fns["AnnealedLangevinScheduler.step, timestep checked on device"] = langevin_device_check

    # Predictor-corrector, k = 1: corrector x + eps s + sqrt(2 eps) z with eps = 2 (r ||z|| / ||s||)^2 per sample,
    # then the predictor x + (sigma_i^2 - sigma_{i+1}^2) s + sqrt(...) z
    pc = PredictorCorrectorScheduler(sigma_max=50.0, sigma_min=0.01, corrector_steps=1)
    fns["PredictorCorrectorScheduler.step"] = _chain(pc, x0, score, generator, steps)
    pc_sigmas = torch.exp(torch.linspace(math.log(50.0), math.log(0.01), steps // 2)).tolist() + [0.0]

    def bare_pc():
        x = x0
        for i in range(steps // 2):
            z = torch.randn(batch_shape, generator=generator, device=device)
            z_norm = torch.linalg.vector_norm(z.flatten(1), dim=1).reshape(per_sample)
            s_norm = torch.linalg.vector_norm(score.flatten(1), dim=1).reshape(per_sample)
            eps = 2 * (0.16 * z_norm / s_norm) ** 2
            x = x + eps * score + (2 * eps).sqrt() * z
            z = torch.randn(batch_shape, generator=generator, device=device)
            variance = pc_sigmas[i] ** 2 - pc_sigmas[i + 1] ** 2
            x = x + variance * score + math.sqrt(variance) * z

    fns["bare predictor-corrector update"] = bare_pc

    # Consistent annealed sampling: x + alpha_i s + beta sigma_{i+1} z
    cas = ConsistentAnnealedSamplingScheduler(final_denoise=False)
    fns["ConsistentAnnealedSamplingScheduler.step"] = _chain(cas, x0, score, generator, steps)
    cas_sigmas = torch.exp(torch.linspace(0.0, math.log(0.01), steps)).tolist()
    gamma = cas_sigmas[0] / cas_sigmas[1]
    eta = 1.2 * (1 - 1 / gamma)
    beta = math.sqrt(1 - (gamma * (1 - eta)) ** 2)

    def bare_cas():
        x = x0
        for i in range(steps - 1):
            z = torch.randn(batch_shape, generator=generator, device=device)
            x = x + eta * cas_sigmas[i] ** 2 * score + beta * cas_sigmas[i + 1] * z
        x = x + eta * cas_sigmas[-1] ** 2 * score

    fns["bare consistent annealed update"] = bare_cas

    # EDM's stochastic Heun sampler: the Euler half x^ + (t_next - t^) d with d = -t^ s, then the Heun correction
    # x^ + (t_next - t^) (d + d') / 2 with d' = -t_next s, plus the next level's churn sqrt(t^2 - t^2) S_noise z
    heun = StochasticHeunScheduler(sigma_max=50.0, sigma_min=0.01, s_tmin=0.0, s_tmax=float("inf"))
    fns["StochasticHeunScheduler.step"] = _chain(heun, x0, score, generator, steps + 1)
    heun.set_timesteps(steps + 1)
    heun_t, heun_t_hat = heun._t, heun._t_hat

    def bare_heun():
        x = x0
        for i in range(steps // 2):
            d = -heun_t_hat[i] * score
            dt = heun_t[i + 1] - heun_t_hat[i]
            x_euler = x + dt * d  # the model would be called here
            d_mean = (d - heun_t[i + 1] * score) / 2
            z = torch.randn(batch_shape, generator=generator, device=device)
            x = x + dt * d_mean + math.sqrt(heun_t_hat[i + 1] ** 2 - heun_t[i + 1] ** 2) * 1.007 * z
        x_euler = x + heun_t_hat[-1] ** 2 * score
        return x_euler

    fns["bare stochastic Heun update"] = bare_heun

    # diffusers' EDM Euler through the denoiser, against the Euler update x + (sigma_next - sigma) (x - D) / sigma
    edm = EDMEulerScheduler(sigma_min=0.01, sigma_max=50.0)
    fns["EDMEulerScheduler.step via the denoiser"] = _edm_chain(edm, x0, score, generator, steps)
    edm.set_timesteps(steps)
    edm_sigmas = edm.sigmas.tolist()

    def bare_euler():
        x = x0
        for i in range(steps):
            denoised = x + edm_sigmas[i] ** 2 * score
            x = x + (edm_sigmas[i + 1] - edm_sigmas[i]) * (x - denoised) / edm_sigmas[i]

    fns["bare Euler update"] = bare_euler
    fns["EDMEulerScheduler.step, output precomputed"] = _edm_chain(edm, x0, score, generator, steps, convert=False)
    dpm = EDMDPMSolverMultistepScheduler(sigma_min=0.01, sigma_max=50.0)
    fns["EDMDPMSolverMultistepScheduler.step via the denoiser"] = _edm_chain(dpm, x0, score, generator, steps)
    fns["EDMDPMSolverMultistepScheduler.step, output precomputed"] = _edm_chain(
        dpm, x0, score, generator, steps, convert=False
    )

    sde_ve = ScoreSdeVeScheduler()
    sde_ve.set_timesteps(steps)
    sde_ve.set_sigmas(steps)
    cpu_generator = torch.Generator().manual_seed(0)  # step_correct draws its noise on the CPU, then moves it

    def score_sde_ve_step_correct():
        x = x0
        for _ in range(steps):
            x = sde_ve.step_correct(score, x, generator=cpu_generator).prev_sample

    fns["ScoreSdeVeScheduler.step_correct"] = score_sde_ve_step_correct

    seconds = {name: s / steps for name, s in median_seconds(fns).items()}
    pairs = [
        ("AnnealedLangevinScheduler.step", "bare torch update"),
        ("AnnealedLangevinScheduler.step, timestep checked on device", "bare torch update"),
        ("PredictorCorrectorScheduler.step", "bare predictor-corrector update"),
        ("ConsistentAnnealedSamplingScheduler.step", "bare consistent annealed update"),
        ("StochasticHeunScheduler.step", "bare stochastic Heun update"),
        ("EDMEulerScheduler.step via the denoiser", "bare Euler update"),
        ("EDMEulerScheduler.step, output precomputed", "bare Euler update"),
        (
            "EDMDPMSolverMultistepScheduler.step via the denoiser",
            "EDMDPMSolverMultistepScheduler.step, output precomputed",
        ),
        ("AnnealedLangevinScheduler.step", "ScoreSdeVeScheduler.step_correct"),
    ]
    print(f"\nScheduler step on a {tuple(batch_shape)} batch ({device}, {torch.get_num_threads()} threads)")
    for ours, reference in pairs:
        print(
            f"  {ours:58s} {seconds[ours] * 1e6:8.1f} us/step  vs {reference:40s} {seconds[reference] * 1e6:8.1f}"
            f"  = {seconds[ours] / seconds[reference]:5.2f}x"
        )
    return seconds


def run_both(device: str = "cpu") -> dict:
    """The 64x3x32x32 batch, then a 1x1x2x2 one whose arithmetic costs nothing: there the times are the fixed cost of a
    step (Python, dispatch, the output object), which is what a GPU pays at small batches, where kernels are short."""
    return {"64x3x32x32": run(device=device), "1x1x2x2": run(batch_shape=(1, 1, 2, 2), steps=1000, device=device)}
