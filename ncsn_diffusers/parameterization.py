"""The one place where the score, epsilon, x0 (denoiser) and v parameterisations are converted into each other.

With x_noisy = a * x_0 + sigma * z (VE: a = 1; VP: a = sqrt(alphabar_t), sigma = sqrt(1 - alphabar_t)) the score of
the perturbed marginal satisfies Tweedie's formula: score(x_noisy) = (a * E[x_0 | x_noisy] - x_noisy) / sigma**2 and
score = -E[z | x_noisy] / sigma. In VE the denoiser is D(x, sigma) = x + sigma**2 * score, which is what diffusers'
EDM solvers step with.
"""

import torch


def score_from_epsilon(epsilon: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """score = -epsilon / sigma (VE: sigma is the noise level; VP: sigma = sqrt(1 - alphabar_t))."""
    return -epsilon / sigma


def epsilon_from_score(score: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """epsilon = -sigma * score, the inverse of [`score_from_epsilon`]."""
    return -sigma * score


def score_from_sample(
    pred_original_sample: torch.Tensor,
    sample: torch.Tensor,
    sigma: torch.Tensor,
    signal_scale: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """score = (a * x0_hat - x) / sigma**2, Tweedie's formula solved for the score (a = `signal_scale`, 1 in VE)."""
    return (signal_scale * pred_original_sample - sample) / sigma**2


def sample_from_score(
    score: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor | float, signal_scale: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """x0_hat = (x + sigma**2 * score) / a, Tweedie's denoiser (a = `signal_scale`; the NCSNv2 final denoising step
    when a = 1)."""
    if isinstance(sigma, torch.Tensor):
        denoised = sample + sigma**2 * score
    else:
        denoised = torch.add(sample, score, alpha=sigma**2)  # one fused kernel: this runs at every sampling step
    if isinstance(signal_scale, (int, float)) and signal_scale == 1.0:
        return denoised
    return denoised / signal_scale


def score_from_model_output(
    model_output: torch.Tensor, sample: torch.Tensor, sigma: float, signal_scale: float, prediction_type: str
) -> torch.Tensor:
    """
    The score s(x, sigma) from a model's output of the kind `prediction_type` names: `"score"`, `"epsilon"`
    (score = -epsilon / sigma), `"sample"` (x0_hat; score = (a * x0_hat - x) / sigma**2) or `"v_prediction"`
    (v = a * epsilon - sigma * x_0 with a**2 + sigma**2 = 1, hence epsilon = a * v + sigma * x). `signal_scale` is a.
    """
    if prediction_type == "score":
        return model_output
    if prediction_type == "epsilon":
        return score_from_epsilon(model_output, sigma)
    if prediction_type == "sample":
        return score_from_sample(model_output, sample, sigma, signal_scale)
    if prediction_type == "v_prediction":
        return score_from_epsilon(signal_scale * model_output + sigma * sample, sigma)
    raise ValueError(f"prediction_type={prediction_type!r} is not supported.")


def model_output_from_score(
    score: torch.Tensor, sample: torch.Tensor, sigma: float, signal_scale: float, prediction_type: str
) -> torch.Tensor:
    """The inverse of [`score_from_model_output`]: what a model of `prediction_type` returns for the score `score`."""
    if prediction_type == "score":
        return score
    epsilon = epsilon_from_score(score, sigma)
    if prediction_type == "epsilon":
        return epsilon
    if prediction_type == "sample":
        return sample_from_score(score, sample, sigma, signal_scale)
    if prediction_type == "v_prediction":
        return (epsilon - sigma * sample) / signal_scale
    raise ValueError(f"prediction_type={prediction_type!r} is not supported.")


def denoiser_model_output(scheduler, score: torch.Tensor, sample: torch.Tensor, sigma: float) -> torch.Tensor:
    """
    What to hand a diffusers EDM scheduler (`EDMEulerScheduler`, `EDMDPMSolverMultistepScheduler`, ...) as
    `model_output` so that its `precondition_outputs(x, F, sigma) = c_skip x + c_out F` returns the denoiser
    D(x, sigma) = x + sigma**2 * s(x, sigma) of a score model: F = (D - c_skip x) / c_out. c_skip and c_out are read
    off the scheduler's own `precondition_outputs`, so its `sigma_data` and `prediction_type` are honoured as they are.
    """
    c_skip = scheduler.precondition_outputs(1.0, 0.0, sigma)
    c_out = scheduler.precondition_outputs(0.0, 1.0, sigma)
    # (x + sigma**2 s - c_skip x) / c_out = (s + (1 - c_skip) / sigma**2 x) * sigma**2 / c_out: two kernels, not four
    return torch.add(score, sample, alpha=(1 - c_skip) / sigma**2).mul_(sigma**2 / c_out)


def append_dims(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshapes a per-sample tensor of shape (B,) (or a scalar) to broadcast against a (B, ...) tensor of `ndim` dims."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))
