"""NCSNPipeline wall time against num_inference_steps x one bare U-Net forward on the same batch."""

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ncsn_diffusers import AnnealedLangevinScheduler, NCSNPipeline, NCSNUNet2DModel

from .timing import median_seconds


def run(
    preset: str = "digits",
    batch_size: int = 16,
    num_inference_steps: int = 100,
    device: str = "cpu",
    dtype=torch.float32,
    compile: bool = False,
) -> dict:
    unet = NCSNUNet2DModel.from_preset(preset).to(device=device, dtype=dtype).eval()
    if compile:
        unet.compile()  # in place: the module keeps its class, so the pipeline still recognises it
    scheduler = AnnealedLangevinScheduler(sigma_max=2.0, sigma_min=0.02, epsilon=8e-5, data_range=(-1.0, 1.0))
    pipe = NCSNPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    size = unet.config.sample_size
    x = torch.randn(batch_size, unet.config.in_channels, size, size, device=device, dtype=dtype)
    # the pipeline passes each sigma as a 0-d tensor on the device: the bare loop does the same
    sigmas = torch.exp(torch.linspace(0.7, -3.9, num_inference_steps, device=device))

    def bare_forwards():
        with torch.no_grad():
            for sigma in sigmas:
                unet(x, sigma)
        if device != "cpu":
            torch.cuda.synchronize()

    def pipeline():
        generator = torch.Generator(device=device).manual_seed(0)
        pipe(batch_size=batch_size, num_inference_steps=num_inference_steps, output_type="pt", generator=generator)
        if device != "cpu":
            torch.cuda.synchronize()

    seconds = median_seconds({"bare": bare_forwards, "pipeline": pipeline}, repeats=5)
    bare, full = seconds["bare"], seconds["pipeline"]

    # The same pipeline around a U-Net that costs nothing isolates the overhead from the load of a shared machine.
    unet_forward = unet.forward
    unet.forward = lambda sample, sigma, return_dict=True: UNet2DOutput(sample=sample)
    overhead_per_call = median_seconds({"free U-Net": pipeline}, repeats=5)["free U-Net"] / num_inference_steps
    unet.forward = unet_forward
    samples_per_s = batch_size / full * (num_inference_steps / 1000)
    compiled = ", torch.compile" if compile else ""
    print(
        f"\nNCSNPipeline, preset {preset!r}, batch {batch_size}, {num_inference_steps} U-Net calls ({device}, {dtype}{compiled})"
    )
    print(f"  {num_inference_steps} bare U-Net forwards   {bare:8.3f} s")
    print(f"  pipeline                  {full:8.3f} s   overhead {100 * (full / bare - 1):+.1f}%")
    print(
        f"  around a U-Net that costs nothing: {overhead_per_call * 1e6:.0f} us/call = "
        f"{100 * overhead_per_call * num_inference_steps / bare:.2f}% of the bare forwards"
    )
    print(f"  samples/s at 1000 U-Net calls (v1's L x T)   {samples_per_s:8.2f}")
    return {
        "bare_forwards_s": bare,
        "pipeline_s": full,
        "overhead_per_call_s": overhead_per_call,
        "samples_per_s_at_1000_calls": samples_per_s,
    }
