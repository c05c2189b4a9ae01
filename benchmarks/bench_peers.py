"""Our scheduler and pipeline against the third-party `diffusers-ncsn` (import name `ncsn`), measured in one run.

It is installed only where the benchmark runs, never as a dependency of ncsn-diffusers (it declares torchvision, which
it never imports):

    pip install --no-deps diffusers-ncsn einops

Its sampler, read from ncsn 0.1.0 (`ncsn/scheduler/scheduling_ncsn.py`, `ncsn/pipeline_ncsn.py`), against Algorithm 1:
- Step size alpha_i = sampling_eps * sigma_i**2 / sigma_L**2 on a geometric ladder exp(linspace(log sigma_max,
  log sigma_min, num_train_timesteps)), as in the paper.
- Update x + alpha_i / 2 * s + sqrt(alpha_i) * z: Algorithm 1 as printed (our `langevin_convention="paper"`). The
  authors' code, in which the published epsilon = 2e-5 is given, takes x + alpha_i * s + sqrt(2 alpha_i) z (our
  default `"official"`), so at the same epsilon it takes half the authors' step.
- The ladder is fixed at construction (num_train_timesteps levels); `set_timesteps(n)` only sets
  timesteps = arange(n), so n < num_train_timesteps stops the chain at sigma_n and never reaches sigma_L, and
  n > num_train_timesteps raises IndexError; the `sampling_eps` argument of `set_timesteps` is ignored.
- The U-Net (a `UNet2DModel` subclass) is called with the integer level index t, not sigma; its `sigmas` buffer is
  not used in `forward`, and its output is taken as the score itself.
- The Langevin noise is `torch.randn_like` from torch's global generator: the pipeline's `generator` is swallowed
  by `step(**kwargs)`, so two calls with the same `torch.Generator` give different images (only the start uses it).
- The chain starts from U[0, 1] (the paper's), with no clamping inside the chain and no final denoising step.
- The output is each image min-max normalised to [0, 1] on its own (in place), not clamped to the data range: it
  stretches each image's contrast and hides a chain that drifted off range. `output_type="pt"` (and `"np"`) return
  a torch tensor of shape (B, H, W, C).
"""

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline
from ncsn_diffusers.models.unet_ncsn import PRESETS, NCSNUNet2DModel

from .timing import median_seconds

INSTALL = "pip install --no-deps diffusers-ncsn einops"


def run(
    batch_shapes=((64, 3, 32, 32), (4, 1, 16, 16)),
    num_noise_levels: int = 10,
    steps_per_level: int = 20,
    preset: str = "tiny",
    batch_size: int = 16,
    pipeline_steps_per_level: int = 5,
    threads: int = 1,
) -> dict:
    try:
        import ncsn  # noqa: F401
        from ncsn.scheduler import AnnealedLangevinDynamicsScheduler  # noqa: F401
    except ImportError:
        print(
            f"\nPeers: skipped, diffusers-ncsn is not installed. Install it in this environment only with:\n  {INSTALL}"
        )
        return {}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # fixed: more threads than free cores turn every figure into noise
    try:
        results = {}
        for shape in batch_shapes:
            results[f"step {tuple(shape)}"] = scheduler_steps(shape, num_noise_levels, steps_per_level)
        results["pipeline"] = pipelines(preset, batch_size, num_noise_levels, pipeline_steps_per_level)
    finally:
        torch.set_num_threads(previous_threads)
    return results


def scheduler_steps(shape, num_noise_levels: int, steps_per_level: int) -> dict:
    """Per-step cost of the two schedulers over a whole L x T chain with one precomputed score."""
    from ncsn.scheduler import AnnealedLangevinDynamicsScheduler

    ladder = dict(sigma_max=1.0, sigma_min=0.01)
    theirs = AnnealedLangevinDynamicsScheduler(
        num_train_timesteps=num_noise_levels, num_annealed_steps=steps_per_level, sampling_eps=2e-5, **ladder
    )
    # The same arithmetic as theirs: Algorithm 1 as printed.
    ours = AnnealedLangevinScheduler(
        num_noise_levels=num_noise_levels,
        steps_per_level=steps_per_level,
        epsilon=2e-5,
        langevin_convention="paper",
        **ladder,
    )
    x0 = torch.rand(shape)
    score = torch.randn(shape)
    steps = num_noise_levels * steps_per_level

    def our_chain(generator):
        ours.set_timesteps()
        x = x0
        for t in ours.timesteps:
            x = ours.step(score, t, x, generator=generator).prev_sample
        return x

    def their_chain():
        theirs.set_timesteps(num_noise_levels)
        x = x0
        for t in theirs.timesteps:
            for _ in range(theirs.num_annealed_steps):
                x = theirs.step(score, t, x).prev_sample
        return x

    # Same noise (a generator and the global one, equally seeded): both chains must end at the same point.
    torch.manual_seed(0)
    difference = (our_chain(torch.Generator().manual_seed(0)) - their_chain()).abs().max().item()

    generator = torch.Generator().manual_seed(0)
    seconds = median_seconds({"ours": lambda: our_chain(generator), "diffusers-ncsn": their_chain})
    seconds = {name: s / steps for name, s in seconds.items()}
    print(
        f"\nScheduler step vs diffusers-ncsn, {tuple(shape)} batch, {steps} steps ({torch.get_num_threads()} threads)"
    )
    print(f"  same noise, max |x_ours - x_theirs| after the chain: {difference:.2e}")
    for name, s in seconds.items():
        print(f"  {name:16s} {s * 1e6:9.1f} us/step   ours / this = {seconds['ours'] / s:5.2f}x")
    return {**seconds, "max_abs_difference": difference}


def pipelines(preset: str, batch_size: int, num_noise_levels: int, steps_per_level: int) -> dict:
    """Both pipelines at L x T U-Net calls, each also against L x T bare forwards of its own U-Net."""
    from ncsn import NCSNPipeline as TheirPipeline
    from ncsn.scheduler import AnnealedLangevinDynamicsScheduler
    from ncsn.unet import UNet2DModelForNCSN

    ladder = dict(sigma_max=1.0, sigma_min=0.01)
    torch.manual_seed(0)
    our_unet = NCSNUNet2DModel.from_preset(preset).eval()
    config = PRESETS[preset]
    # Their U-Net with our preset's blocks (diffusers' UNet2DModel with a positional embedding of the level index).
    their_unet = UNet2DModelForNCSN(
        num_train_timesteps=num_noise_levels,
        sample_size=config["sample_size"],
        in_channels=config["in_channels"],
        out_channels=config["in_channels"],
        block_out_channels=config["block_out_channels"],
        down_block_types=config["down_block_types"],
        up_block_types=config["up_block_types"],
        layers_per_block=config["layers_per_block"],
        norm_num_groups=config["norm_num_groups"],
        add_attention=config.get("add_attention", True),
        **ladder,
    ).eval()
    our_pipe = NCSNPipeline(
        unet=our_unet,
        scheduler=AnnealedLangevinScheduler(
            num_noise_levels=num_noise_levels,
            steps_per_level=steps_per_level,
            langevin_convention="paper",
            initial_distribution="uniform",
            **ladder,
        ),
    )
    their_pipe = TheirPipeline(
        unet=their_unet,
        scheduler=AnnealedLangevinDynamicsScheduler(
            num_train_timesteps=num_noise_levels, num_annealed_steps=steps_per_level, sampling_eps=2e-5, **ladder
        ),
    )
    for pipe in (our_pipe, their_pipe):
        pipe.set_progress_bar_config(disable=True)

    calls = num_noise_levels * steps_per_level
    size = config["sample_size"]
    x = torch.rand(batch_size, config["in_channels"], size, size)
    sigmas = our_pipe.scheduler.sigmas  # each call gets a 0-d tensor, as in the pipelines
    levels = torch.arange(num_noise_levels)

    @torch.no_grad()
    def our_bare():
        for sigma in sigmas:
            for _ in range(steps_per_level):
                our_unet(x, sigma)

    @torch.no_grad()
    def their_bare():
        for t in levels:
            for _ in range(steps_per_level):
                their_unet(x, t)

    def our_pipeline():
        our_pipe(batch_size=batch_size, generator=torch.Generator().manual_seed(0), output_type="pt")

    def their_pipeline():
        their_pipe(
            batch_size=batch_size,
            num_inference_steps=num_noise_levels,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        )

    s = median_seconds(
        {"ours bare": our_bare, "ours": our_pipeline, "theirs bare": their_bare, "theirs": their_pipeline}
    )
    overhead = {"ours": s["ours"] / s["ours bare"] - 1, "diffusers-ncsn": s["theirs"] / s["theirs bare"] - 1}
    # On a loaded machine the U-Nets' noise swamps a small overhead: also time each pipeline with a U-Net whose
    # forward costs nothing, which leaves the overhead alone.
    with free_forward(our_unet), free_forward(their_unet):
        free = median_seconds({"ours": our_pipeline, "theirs": their_pipeline}, repeats=5)
    print(
        f"\nPipeline vs diffusers-ncsn, U-Nets with preset {preset!r}'s blocks, batch {batch_size}, {calls} U-Net calls "
        f"({num_noise_levels} levels x {steps_per_level}) ({torch.get_num_threads()} threads)"
    )
    print(f"  {'':16s} {'pipeline':>10s} {f'{calls} bare fwd':>14s} {'overhead':>9s}")
    for name, key in (("ours", "ours"), ("diffusers-ncsn", "theirs")):
        print(f"  {name:16s} {s[key]:9.3f}s {s[key + ' bare']:13.3f}s {100 * overhead[name]:+8.1f}%")
    print(
        f"  with a U-Net that costs nothing: ours {free['ours'] / calls * 1e6:.0f} us/call, diffusers-ncsn "
        f"{free['theirs'] / calls * 1e6:.0f} us/call = {100 * free['ours'] / s['ours bare']:.1f}% and "
        f"{100 * free['theirs'] / s['theirs bare']:.1f}% of the bare forwards"
    )
    print(
        f"  pipeline ours / theirs = {s['ours'] / s['theirs']:.2f}x, bare U-Net ours / theirs = "
        f"{s['ours bare'] / s['theirs bare']:.2f}x (different U-Nets: compare the overheads)"
    )
    return {
        **{f"{name}_s": v for name, v in s.items()},
        **{f"overhead_{k}": v for k, v in overhead.items()},
        **{f"{name}_with_free_unet_s": v for name, v in free.items()},
    }


class free_forward:
    """Temporarily replaces a U-Net's forward by one returning zeros of the sample's shape."""

    def __init__(self, unet):
        self.unet = unet

    def __enter__(self):
        self.unet.forward = lambda sample, *args, **kwargs: UNet2DOutput(sample=torch.zeros_like(sample))

    def __exit__(self, *exc):
        del self.unet.forward
