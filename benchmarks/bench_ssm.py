"""Cost of a sliced score matching training step against a DSM step: same U-Net, batch and optimizer.

SSM evaluates the network on M copies of the batch (M = `num_projections`) and differentiates twice (one
vector-Jacobian product per projection, then the parameter gradient of that), and it runs attention in SDPA's math
kernel, the only one with a second derivative. A DSM step in that same kernel is timed too, to separate the two costs.
"""

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ncsn_diffusers import NCSNUNet2DModel, dsm_loss, ssm_loss

from .timing import median_seconds


def run(preset: str = "digits", batch_size: int = 32, steps: int = 2, device: str = "cpu", projections=(1, 2)) -> dict:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset(preset).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    size, channels = unet.config.sample_size, unet.config.in_channels
    x = torch.rand(batch_size, channels, size, size, device=device) * 2 - 1
    sigmas = torch.exp(torch.linspace(0.0, -4.0, 10, device=device))
    generator = torch.Generator(device).manual_seed(0)

    def step(loss_fn):
        def train_steps():
            for _ in range(steps):
                sigma = sigmas[torch.randint(0, 10, (batch_size,), device=device)]
                z = torch.randn_like(x)
                loss = loss_fn(x + sigma[:, None, None, None] * z, z, sigma)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if device != "cpu":
                torch.cuda.synchronize()

        return train_steps

    def dsm(noisy, z, sigma):
        return dsm_loss(unet(noisy, sigma).sample, z, sigma)

    def dsm_math(noisy, z, sigma):
        with sdpa_kernel(SDPBackend.MATH):
            return dsm(noisy, z, sigma)

    def ssm(m):
        return lambda noisy, z, sigma: ssm_loss(lambda a, s: unet(a, s).sample, noisy, sigma, m, generator)

    fns = {"dsm": step(dsm), "dsm (math attention)": step(dsm_math)}
    fns.update({f"ssm, M={m}": step(ssm(m)) for m in projections})
    seconds = {name: t / steps for name, t in median_seconds(fns, repeats=3).items()}
    print(f"\nTraining step, preset {preset!r}, batch {batch_size} ({device}, fp32), against DSM")
    for name, t in seconds.items():
        print(f"  {name:22s} {t * 1e3:8.1f} ms/step   {t / seconds['dsm']:5.2f}x")
    return seconds
