"""Consistency distillation (Song, Dhariwal, Chen & Sutskever, 2023, Algorithm 2) of a VE score model.

A student f(x, sigma) learns to map every point of the teacher's probability-flow ODE trajectory to its end:
f(x_{n+1}, t_{n+1}) ~ f_target(x_hat_n, t_n), with x_hat_n one Heun step of dx/dsigma = (x - D(x, sigma)) / sigma from
x_{n+1} = x + t_{n+1} z, D = x + sigma**2 s_theta(x, sigma) the teacher's denoiser, and f_target an EMA of the student
held out of the gradient. f is parameterised exactly as diffusers' `CMStochasticIterativeScheduler` and
`ConsistencyModelPipeline` apply a stock `UNet2DModel` at sampling time, so the student exports as that pipeline.
"""

import copy
import math

import torch
import torch.nn as nn
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..models import NCSNUNet2DModel
from ..parameterization import append_dims, sample_from_score
from ..schedulers.noise_ladders import karras_sigmas

DISTANCES = ("l2", "pseudo_huber")


def teacher_denoiser(teacher: nn.Module, data_range: tuple[float, float] = (-1.0, 1.0)):
    """
    D(x, sigma) = x + sigma**2 s_theta(x, sigma) of a score network, in diffusers' data range [-1, 1].

    A teacher trained on [0, 1] data sees y = (x + 1) / 2, whose noise level is sigma / 2, and its denoiser maps back:
    D(x, sigma) = 2 D_01((x + 1) / 2, sigma / 2) - 1. Any other range is refused.

    Returns:
        `Callable[[torch.Tensor, torch.Tensor], torch.Tensor]`: (x (B, ...), sigma (B,)) -> D, shaped like x.
    """
    data_range = tuple(float(v) for v in data_range)
    if data_range not in ((-1.0, 1.0), (0.0, 1.0)):
        raise ValueError(f"The teacher's data range {data_range} is neither [-1, 1] nor [0, 1]; it cannot be mapped.")
    scale, shift = (0.5, 0.5) if data_range == (0.0, 1.0) else (1.0, 0.0)  # the teacher's y = scale * x + shift

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        y, sigma_y = scale * x + shift, scale * sigma
        score = teacher(y, sigma_y, return_dict=False)[0]
        return (sample_from_score(score, y, append_dims(sigma_y, y.ndim)) - shift) / scale

    return denoise


def heun_step(denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One Heun step of dx/dsigma = (x - D(x, sigma)) / sigma from sigma to sigma_next (both (B,), sigma_next > 0)."""
    t, t_next = append_dims(sigma, x.ndim), append_dims(sigma_next, x.ndim)
    d = (x - denoiser(x, sigma)) / t
    x_euler = x + (t_next - t) * d
    d_next = (x_euler - denoiser(x_euler, sigma_next)) / t_next
    return x + (t_next - t) * 0.5 * (d + d_next)


def consistency_function(
    model: nn.Module, scheduler: CMStochasticIterativeScheduler, x: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """
    f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(x / sqrt(sigma^2 + sigma_data^2), 250 log sigma), what
    `ConsistencyModelPipeline` computes (its clamp to [-1, 1] aside): `scale_model_input` divides by
    sqrt(sigma^2 + sigma_data^2), the timestep is `sigma_to_t`, and `step` applies
    `get_scalings_for_boundary_condition`, so that f(x, sigma_min) = x.
    """
    c_skip, c_out = (append_dims(c, x.ndim) for c in scheduler.get_scalings_for_boundary_condition(sigma))
    c_in = append_dims((sigma**2 + scheduler.config.sigma_data**2) ** -0.5, x.ndim)
    timestep = 1000 * 0.25 * torch.log(sigma + 1e-44)  # `CMStochasticIterativeScheduler.sigma_to_t`
    return c_skip * x + c_out * model(c_in * x, timestep, return_dict=False)[0]


def distance(a: torch.Tensor, b: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Per-sample distance d(a, b), shape (B,): `"l2"` the mean squared error (CM's `l2`), `"pseudo_huber"`
    sqrt(||a - b||^2 + c^2) - c with c = 0.00054 sqrt(dim) (Song & Dhariwal 2023, improved CT)."""
    squared = (a - b).flatten(1).pow(2)
    if kind == "l2":
        return squared.mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(squared.shape[1])
        return (squared.sum(1) + c**2).sqrt() - c
    raise ValueError(f"`distance` must be one of {DISTANCES}, got {kind!r}.")


def consistency_distillation_loss(
    student: nn.Module,
    target: nn.Module,
    denoiser,
    scheduler: CMStochasticIterativeScheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    index: torch.Tensor,
    sigmas: torch.Tensor,
    distance_kind: str = "l2",
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The CD loss E[d(f_student(x_n, t_n), stopgrad f_target(x_hat_{n+1}, t_{n+1}))], Algorithm 2 of Song et al. 2023,
    on the descending grid `sigmas` (t_n > t_{n+1}): x_n = x0 + t_n z with z = `noise`, n = `index` (B,) in
    {0, ..., N-2}, x_hat_{n+1} the teacher's Heun step from t_n to t_{n+1}.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the loss (mean of `distance_kind` over the batch) and, detached, the
        mean squared error between the two outputs (the same number under `"l2"`).
    """
    sigmas = sigmas.to(x0.device)
    t, t_next = sigmas[index], sigmas[index + 1]  # (B,), t > t_next
    x_t = x0 + append_dims(t, x0.ndim) * noise
    with torch.no_grad():
        x_next = heun_step(denoiser, x_t, t, t_next)
        target_output = consistency_function(target, scheduler, x_next, t_next)
    output = consistency_function(student, scheduler, x_t, t).float()
    loss = distance(output, target_output, distance_kind).mean()
    return loss, (output.detach() - target_output).pow(2).mean()


@torch.no_grad()
def update_target(target: nn.Module, student: nn.Module, mu: float) -> None:
    """theta^- <- mu theta^- + (1 - mu) theta, the EMA target network of consistency distillation."""
    for target_param, param in zip(target.parameters(), student.parameters()):
        target_param.lerp_(param, 1.0 - mu)


def student_config(teacher: NCSNUNet2DModel) -> dict:
    """The config of a stock `UNet2DModel` with the teacher's blocks and a positional (sinusoidal) timestep
    embedding, the one embedding that takes `ConsistencyModelPipeline`'s timestep 250 log sigma (negative below
    sigma = 1; diffusers' `"fourier"` embedding takes the log of the timestep again, and divides the output by it)."""
    if not isinstance(teacher, NCSNUNet2DModel):
        raise ValueError(
            f"The teacher is a {type(teacher).__name__}; consistency distillation supports an `NCSNUNet2DModel` "
            "teacher (NCSN v1's RefineNet has discrete levels, and NCSNv2Model / DDPM epsilon models are not "
            "supported yet): train one with `--model_type unet --objective dsm`."
        )
    c = teacher.config
    return {
        "sample_size": c.sample_size,
        "in_channels": c.in_channels,
        "out_channels": c.in_channels,
        "time_embedding_type": "positional",
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": tuple(c.down_block_types),
        "up_block_types": tuple(c.up_block_types),
        "block_out_channels": tuple(c.block_out_channels),
        "layers_per_block": c.layers_per_block,
        "downsample_padding": 1,
        "dropout": c.dropout,
        "act_fn": c.act_fn,
        "attention_head_dim": c.attention_head_dim,
        "norm_num_groups": c.norm_num_groups,
        "norm_eps": c.norm_eps,
        "resnet_time_scale_shift": c.resnet_time_scale_shift,
        "add_attention": c.add_attention,
    }


def student_from_teacher(teacher: NCSNUNet2DModel, init_from_teacher: bool = True) -> UNet2DModel:
    """
    A stock `UNet2DModel` student with the teacher's architecture. With `init_from_teacher`, every weight whose name
    and shape the two share is copied (all of them but the first layer of the sigma embedding MLP, whose input
    features differ: the teacher's Gaussian Fourier features of log sigma against the student's sinusoids of
    250 log sigma). The copied network still computes the teacher's function of other inputs: the student sees
    x / sqrt(sigma^2 + sigma_data^2) and its output is scaled by c_out, so this is a warm start, not an equality.
    """
    student = UNet2DModel(**student_config(teacher))
    if init_from_teacher:
        teacher_state = teacher.state_dict()
        state = student.state_dict()
        shared = {k: v for k, v in teacher_state.items() if k in state and state[k].shape == v.shape}
        student.load_state_dict({**state, **shared})
    return student.to(teacher.device)


def consistency_scheduler(
    sigma_min: float, sigma_max: float, sigma_data: float, num_levels: int, rho: float = 7.0
) -> CMStochasticIterativeScheduler:
    """diffusers' `CMStochasticIterativeScheduler` on the grid of distillation: `num_train_timesteps` = N,
    `sigma_min`, `sigma_max`, `sigma_data`, `rho` (its c_skip / c_out / c_in are the student's parameterisation)."""
    return CMStochasticIterativeScheduler(
        num_train_timesteps=num_levels, sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, rho=rho
    )


def consistency_pipeline(
    student: UNet2DModel, sigma_min: float, sigma_max: float, sigma_data: float, num_levels: int, rho: float = 7.0
) -> ConsistencyModelPipeline:
    """The student as diffusers' own `ConsistencyModelPipeline` (data in [-1, 1]) on its `consistency_scheduler`."""
    scheduler = consistency_scheduler(sigma_min, sigma_max, sigma_data, num_levels, rho)
    return ConsistencyModelPipeline(unet=student, scheduler=scheduler)


def distill(
    student: nn.Module,
    denoiser,
    scheduler: CMStochasticIterativeScheduler,
    data: torch.Tensor,
    num_steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    ema_rate: float = 0.95,
    distance_kind: str = "l2",
    generator: torch.Generator | None = None,
    log_every: int = 0,
) -> nn.Module:
    """
    Runs `num_steps` steps of consistency distillation (Adam on the student, the EMA target updated after each) on
    batches drawn uniformly from `data` (B, ...) in [-1, 1], on the grid of N = `scheduler.config.num_train_timesteps`
    levels of `scheduler`. Returns the target network theta^-, the student's EMA, which is what is sampled.
    """
    if not 0.0 <= ema_rate < 1.0:
        raise ValueError(f"`ema_rate` (mu) must lie in [0, 1), got {ema_rate}.")
    if num_steps < 0 or batch_size < 1:
        raise ValueError(f"`num_steps` must be >= 0 and `batch_size` >= 1, got {num_steps} and {batch_size}.")
    config = scheduler.config
    sigmas = karras_sigmas(config.sigma_max, config.sigma_min, config.num_train_timesteps, config.rho).float()
    target = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    student.train()
    for step in range(num_steps):
        index = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        x0 = data[index.to(data.device)]
        level = torch.randint(0, len(sigmas) - 1, (batch_size,), generator=generator).to(x0.device)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        loss, _ = consistency_distillation_loss(
            student, target, denoiser, scheduler, x0, noise, level, sigmas, distance_kind
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_target(target, student, ema_rate)
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{num_steps} loss {loss.item():.5f}", flush=True)
    return target.eval()
