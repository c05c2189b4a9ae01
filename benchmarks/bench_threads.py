"""Steps/s of the default run's training step (the `digits` U-Net, batch 128, 16x16, DSM, AdamW) at 1 and at 2 torch
threads, measured round-robin in one process so that both see the same load of a shared machine.

    python -m benchmarks.bench_threads [--steps 5] [--repeats 6] [--threads 1 2]

This is the measurement behind `TrainingConfig.num_threads` (1 for the embedded digits on a CPU): how many threads
`accelerate launch` would give a CPU process, against one.
"""

import argparse

import torch

from ncsn_diffusers import NCSNUNet2DModel, dsm_loss

from .timing import median_seconds


def run(thread_counts=(1, 2), steps: int = 5, repeats: int = 6, batch_size: int = 128) -> dict:
    torch.manual_seed(0)
    unet = NCSNUNet2DModel.from_preset("digits").train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-4)
    x = torch.rand(batch_size, 1, 16, 16) * 2 - 1
    sigmas = torch.exp(torch.linspace(2.8, -3.9, 10))

    def train_steps(threads: int):
        def fn():
            torch.set_num_threads(threads)
            for _ in range(steps):
                sigma = sigmas[torch.randint(0, 10, (batch_size,))]
                z = torch.randn_like(x)
                loss = dsm_loss(unet(x + sigma[:, None, None, None] * z, sigma).sample, z, sigma)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return fn

    seconds = median_seconds({n: train_steps(n) for n in thread_counts}, repeats=repeats)
    print(
        f"\nDefault run's training step (digits preset, batch {batch_size}, CPU), median of {repeats} x {steps} steps"
    )
    for n, total in seconds.items():
        print(f"  {n} thread(s): {total / steps:6.3f} s/step   {steps / total:6.3f} steps/s")
    return {n: total / steps for n, total in seconds.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    run(tuple(args.threads), args.steps, args.repeats)


if __name__ == "__main__":
    main()
