"""deepinv's DPS and DiffPIR on this package's score network, for bench_inverse_libraries (benchmark-only: the package
never imports deepinv).

deepinv's denoisers take images in [0, 1] and sigma in those units. The score network of a VE prior on data in
[low, high] becomes one through x_model = low + (high - low) x and sigma_model = (high - low) sigma:

    D(x, sigma) = (D_model(x_model, sigma_model) - low) / (high - low),  D_model(x, sigma) = x + sigma**2 s(x, sigma).

Both samplers carry their state in [-1, 1] (deepinv's diffusion convention), where sigma_state = 2 sigma.

Import this module before anything that imports ncsn_diffusers (or diffusers): see the torchvision shim below.
"""

import glob
import importlib.util
import os

import torch


def _declare_torchvision_ops_if_unloadable() -> None:
    """
    deepinv imports torchvision, whose `_meta_registrations.py` registers fake kernels for `torchvision::nms` and `qnms`
    and fails with "operator torchvision::nms does not exist" when torchvision's compiled ops (`_C.so`) do not load,
    as with the CUDA-only torchvision wheels beside a CPU torch. deepinv never calls those ops, so declaring their
    schemas is enough. Where `_C.so` loads, it defines them itself, and declaring them too would make it fail.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    libraries = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    try:
        torch.ops.load_library(libraries[0])
        return
    except (IndexError, OSError):
        pass
    for op in ("nms", "qnms"):  # schemas as in torchvision's _meta_registrations.py
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


try:
    _declare_torchvision_ops_if_unloadable()
    from deepinv.optim.data_fidelity import L2
    from deepinv.physics import GaussianNoise, LinearPhysics
    from deepinv.sampling import DDPMSolver, DiffPIR, DPSDataFidelity, PosteriorDiffusion, VarianceExplodingDiffusion
except (ImportError, RuntimeError) as error:
    DEEPINV_IMPORT_ERROR = error
    DiffPIR = torch.nn.Module  # a base for the class below, which is then never built
else:
    DEEPINV_IMPORT_ERROR = None

# After the shim: diffusers imports transformers, which imports torchvision wherever torchvision is importable.
from ncsn_diffusers.parameterization import score_from_model_output  # noqa: E402

INSTALL_HINT = (
    "deepinv is not importable ({error}). Install it beside the environment's torch, not into it: "
    "pip download deepinv==0.5.0 torchvision==0.28.0 --no-deps; pip download torchmetrics lightning-utilities "
    "natsort h5py --no-deps; pip install --no-deps --target $HOME/deepinv_site <the downloaded wheels>; then run with "
    "PYTHONPATH=$PWD:$HOME/deepinv_site. Or leave the deepinv-* methods out of --methods."
)


def require_deepinv() -> None:
    if DEEPINV_IMPORT_ERROR is not None:
        raise SystemExit(INSTALL_HINT.format(error=DEEPINV_IMPORT_ERROR))


class UnitRangeScoreDenoiser(torch.nn.Module):
    """The pipeline's score network as a deepinv denoiser on images in [0, 1] (module docstring)."""

    def __init__(self, pipe):
        super().__init__()
        self.unet = pipe.unet
        config = pipe.scheduler.config
        self.low, self.high = pipe.data_range
        self.sigma_min, self.sigma_max, self.prediction_type = (
            config.sigma_min,
            config.sigma_max,
            config.prediction_type,
        )

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        width = self.high - self.low
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(len(x)) * width
        if sigma.max() > self.sigma_max * (1 + 1e-4):
            raise ValueError(f"sigma {sigma.max():.4g} (model units) is above the prior's sigma_max {self.sigma_max}.")
        # Below the trained range (DiffPIR's last level): the smallest trained sigma.
        sigma = sigma.clamp_min(self.sigma_min)
        x_model = self.low + width * x
        output = self.unet(x_model, sigma).sample
        sigma = sigma.view(-1, 1, 1, 1)
        score = score_from_model_output(output, x_model, sigma, 1.0, self.prediction_type)
        return (x_model + sigma**2 * score - self.low) / width


class DiffPIRFromSigmaMax(DiffPIR):
    """
    deepinv's DiffPIR with its DDPM ladder (beta 1e-4 to 0.02 over 1,000 steps) entered at the step whose noise
    sigma_t / sqrt(abar_t) (state units) is the prior's largest, `sigma_start`, rather than at t = 999 (~157). The
    `max_iter` levels keep DiffPIR's quadratic spacing over the steps that remain, down to t = 0.
    """

    def __init__(self, *args, sigma_start: float, **kwargs):
        self.sigma_start = sigma_start  # read by get_noise_schedule inside DiffPIR.__init__
        super().__init__(*args, **kwargs)

    def start_step(self) -> int:
        return int((self.reduced_alpha_cumprod <= self.sigma_start).nonzero().max())

    def get_noise_schedule(self, sigma):
        rhos, sigmas, _ = super().get_noise_schedule(sigma)
        first = self.num_train_timesteps - 1 - self.start_step()  # sigmas[i] is the noise of step 999 - i
        span = self.num_train_timesteps - first
        seq = first + torch.sqrt(torch.linspace(0.0, span**2, self.max_iter, device=self.device)).type(torch.int32)
        seq[-1] = seq[-1] - 1
        return rhos, sigmas, seq

    def get_alpha_prod(self, *args, **kwargs):
        # DiffPIR's first iterate is scaled by the last entry, sqrt(1 / abar) of the step it starts from
        sqrt_recip_alphas_cumprod, sqrt_recipm1_alphas_cumprod = super().get_alpha_prod(*args, **kwargs)
        stop = self.start_step() + 1
        return sqrt_recip_alphas_cumprod[:stop], sqrt_recipm1_alphas_cumprod[:stop]


def deepinv_physics(operator, noise_std: float):
    """The benchmark's operator (deepinv's method names) as deepinv's LinearPhysics, in the units of images in [0, 1]."""
    return LinearPhysics(A=operator.A, A_adjoint=operator.A_adjoint, noise_model=GaussianNoise(sigma=noise_std))


def sample_deepinv(method, pipe, operator, y, noise_std, image_shape, num_samples, steps, settings, seed):
    """
    Posterior samples `(N * num_samples, C, H, W)` in [0, 1] from `y` in the units of images in [0, 1], with `steps`
    network calls per chain:

    - `deepinv-dps`: deepinv's DPS (its `DPSDataFidelity` with the residual-norm guidance of Chung et al., weight
      `settings["dps_weight"]`, and its DDPM solver) in a `PosteriorDiffusion` on `VarianceExplodingDiffusion` over
      the prior's noise range, `steps - 1` steps then deepinv's final denoising call;
    - `deepinv-diffpir`: `DiffPIRFromSigmaMax`, `steps` iterations (deepinv's last iteration calls the denoiser but
      returns the iterate before it), with `settings["diffpir_lambda"]` and `settings["diffpir_zeta"]`.
    """
    denoiser = UnitRangeScoreDenoiser(pipe)
    to_state = 2 / (denoiser.high - denoiser.low)  # sigma_model -> sigma in deepinv's [-1, 1] state
    physics = deepinv_physics(operator, noise_std)
    y = y.repeat_interleave(num_samples, dim=0)
    shape = (len(y), *image_shape)
    if method == "deepinv-dps":
        sde = VarianceExplodingDiffusion(
            sigma_min=denoiser.sigma_min * to_state, sigma_max=denoiser.sigma_max * to_state, alpha=1.0
        )
        solver = DDPMSolver(
            timesteps=torch.linspace(1, 0, steps, dtype=torch.float64), rng=torch.Generator().manual_seed(seed)
        )
        # deepinv.sampling.DPS's data fidelity, clip included (its [-1, 1] on the [0, 1] denoiser clips nothing)
        fidelity = DPSDataFidelity(denoiser=denoiser, clip=[-1.0, 1.0], weight=settings["dps_weight"], guidance="norm")
        sampler = PosteriorDiffusion(data_fidelity=fidelity, denoiser=denoiser, sde=sde, solver=solver)
        return sampler(y, physics, x_init=shape, seed=seed).float()
    if method == "deepinv-diffpir":
        torch.manual_seed(seed)  # DiffPIR draws with the global generator (and skips its own seed when it is 0)
        sampler = DiffPIRFromSigmaMax(
            denoiser,
            L2(),
            sigma=noise_std,
            max_iter=steps,
            zeta=settings["diffpir_zeta"],
            lambda_=settings["diffpir_lambda"],
            sigma_start=denoiser.sigma_max * to_state,
        )
        return sampler(y, physics)
    raise ValueError(f"method={method!r}; choose deepinv-dps or deepinv-diffpir.")
