"""Images/s of a bare DSM training step (forward, backward, AdamW) of the score U-Net, in fp32 and bf16 autocast."""

import torch

from ncsn_diffusers import NCSNUNet2DModel, dsm_loss

from .timing import median_seconds


def run(
    preset: str = "digits", batch_size: int = 64, steps: int = 10, device: str = "cpu", mixed_precision: str = "no"
) -> dict:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset(preset).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    size, channels = unet.config.sample_size, unet.config.in_channels
    x = torch.rand(batch_size, channels, size, size, device=device) * 2 - 1
    sigmas = torch.exp(torch.linspace(0.0, -4.6, 10, device=device))
    autocast = torch.autocast(
        device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=mixed_precision == "bf16"
    )

    def train_steps():
        for _ in range(steps):
            sigma = sigmas[torch.randint(0, 10, (batch_size,), device=device)]
            z = torch.randn_like(x)
            with autocast:
                score = unet(x + sigma[:, None, None, None] * z, sigma).sample
            loss = dsm_loss(score.float(), z, sigma)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()

    seconds = median_seconds({"train": train_steps}, repeats=3)["train"] / steps
    print(
        f"\nBare DSM training step, preset {preset!r}, batch {batch_size} ({device}, mixed_precision={mixed_precision})"
    )
    print(f"  {seconds * 1e3:8.1f} ms/step   {batch_size / seconds:9.1f} images/s")
    return {"seconds_per_step": seconds, "images_per_s": batch_size / seconds}
