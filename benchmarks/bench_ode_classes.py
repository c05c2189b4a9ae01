#!/usr/bin/env python
"""Where a VE digits model's probability-flow ODE gets its class weights wrong (docs/sampling.md, "The ODE's class
balance"). Prints three tables for a saved pipeline:

1. Class shares along the chains: from the same starting noise, the ODE (log-sigma multistep, eta = 0) and an SDE
   (the saved predictor-corrector with the ancestral predictor); before each model call at sigma, the batch mean of
   the class posterior P(c | x_sigma) of the training set's empirical distribution perturbed by sigma (its exact
   posterior: a softmax over -||x - x_i||^2 / (2 sigma^2), summed by label). On exact scores the chain's marginal at
   sigma is p_sigma, so these shares stay at the training set's (9.9-10.1%) at every sigma; the sigma where they
   leave it is where the network moves class mass.
2. Denoiser error per sigma on held-out digits x_0 + sigma z: the network's D = x + sigma^2 s against x_0, the
   training set's empirical (Bayes-optimal for it) denoiser D* against x_0, and ||D - D*||^2, per pixel; and the
   share of the training's log-uniform sigma draws above each sigma.
3. Hybrid ODE: the same ODE with D* above a switch sigma and the network below; class range, FD and rough share of
   the end points. If the exact high-sigma denoiser balances the classes, the network's error there is the cause.

    python benchmarks/bench_ode_classes.py --pipeline ncsn-digits --num_samples 500 --calls 20

D* is the denoiser of 1,437 training images, close to the population's only where sigma is large against their
nearest-neighbour distances (above ~1 here); its own error column shows where it memorises.
"""

import argparse
import math

import numpy as np
import torch

from ncsn_diffusers import LogSigmaMultistepScheduler, NCSNPipeline, PredictorCorrectorScheduler
from ncsn_diffusers.digits import load_digits_images
from ncsn_diffusers.evaluation.digits_metrics import evaluate_samples


def empirical_posterior(x, sigma, data, labels, num_classes=10):
    """D*(x, sigma) and P(c | x) of the empirical distribution of `data` (M, d) perturbed by N(0, sigma^2 I)."""
    flat = x.reshape(x.shape[0], -1)
    distances = torch.cdist(flat.double(), data.double()) ** 2  # (B, M)
    weights = torch.softmax(-distances / (2 * sigma**2), dim=1)
    denoised = (weights @ data.double()).float().reshape(x.shape)
    classes = torch.zeros(x.shape[0], num_classes, dtype=torch.float64).index_add_(1, labels, weights)
    return denoised, classes.float()


def chain(scheduler, score, shape, generator, calls, observe=None):
    """Runs `scheduler` for `calls` model calls with `score(x, sigma)`, calling `observe(x, sigma)` before each."""
    x = scheduler.initial_sample(shape, generator, "cpu", torch.float32)
    scheduler.set_timesteps(calls)
    for sigma in scheduler.timesteps:
        if observe is not None:
            observe(x, float(sigma))
        x = scheduler.step(score(x, sigma), sigma, x, generator=generator).prev_sample
    return x


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--num_samples", type=int, default=500)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--switch_sigmas", type=float, nargs="+", default=[4.0, 2.0, 1.0])
    parser.add_argument("--training_sigma_max", type=float, default=None, help="sigma_1 of training (2x the saved)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe = NCSNPipeline.from_pretrained(args.pipeline)
    unet, config = pipe.unet.eval(), pipe.scheduler.config
    low, high = config.data_range
    to_model = lambda images: low + (high - low) * images  # noqa: E731
    train, train_labels = load_digits_images(unet.config.sample_size, split="train")
    test, _ = load_digits_images(unet.config.sample_size, split="test")
    data = to_model(train).reshape(train.shape[0], -1)
    shape = (args.num_samples, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    prior = torch.bincount(train_labels, minlength=10).float() / train_labels.numel()

    def network(x, sigma):
        with torch.no_grad():
            return unet(x, torch.as_tensor(sigma).reshape(())).sample

    def hybrid(switch):
        def score(x, sigma):
            if float(sigma) > switch:
                denoised, _ = empirical_posterior(x, float(sigma), data, train_labels)
                return (denoised - x) / float(sigma) ** 2
            return network(x, sigma)

        return score

    # 1. class shares along the chains
    print(f"training set's class shares: {100 * prior.min():.1f}-{100 * prior.max():.1f}%\n")
    print("| chain | sigma | class shares of P(c | x_sigma), min-max | largest class | smallest class |")
    print("| --- | ---: | --- | ---: | ---: |")
    ode = LogSigmaMultistepScheduler.from_config(config, eta=0.0)
    sde = PredictorCorrectorScheduler.from_config(config, predictor="ancestral")
    for name, scheduler, calls in (("ODE (multistep, eta = 0)", ode, args.calls), ("SDE (PC, ancestral)", sde, 100)):
        seen = {}

        def observe(x, sigma, seen=seen):
            if sigma not in seen:
                seen[sigma] = empirical_posterior(x, sigma, data, train_labels)[1].mean(0)

        chain(scheduler, network, shape, torch.Generator().manual_seed(args.seed), calls, observe)
        sigmas = sorted(seen, reverse=True)
        for sigma in sorted(set(sigmas[:: max(1, len(sigmas) // 10)] + sigmas[-1:]), reverse=True):
            shares = seen[sigma]
            print(
                f"| {name} | {sigma:.3g} | {100 * shares.min():.1f}-{100 * shares.max():.1f}% | "
                f"{int(shares.argmax())} | {int(shares.argmin())} |"
            )

    # 2. denoiser error per sigma on held-out digits
    sigma_1 = args.training_sigma_max or 2 * config.sigma_max
    print(
        "\n| sigma | network E‖D - x0‖² / d | D* E‖D* - x0‖² / d | E‖D - D*‖² / d | the same / sigma² (loss units) | "
        "training draws above sigma |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    x0 = to_model(test)
    generator = torch.Generator().manual_seed(args.seed)
    for sigma in np.geomspace(config.sigma_max, config.sigma_min, 12):
        noisy = x0 + sigma * torch.randn(x0.shape, generator=generator)
        denoised = noisy + sigma**2 * network(noisy, sigma)
        optimal, _ = empirical_posterior(noisy, sigma, data, train_labels)
        above = math.log(sigma_1 / sigma) / math.log(sigma_1 / config.sigma_min)
        print(
            f"| {sigma:.3g} | {(denoised - x0).pow(2).mean():.4f} | {(optimal - x0).pow(2).mean():.4f} | "
            f"{(denoised - optimal).pow(2).mean():.4f} | {(denoised - optimal).pow(2).mean() / sigma**2:.2e} | "
            f"{100 * above:.0f}% |"
        )

    # 3. hybrid ODE: the empirical denoiser above the switch, the network below
    print(f"\n| ODE, {args.calls} calls, seed {args.seed} | classes (min-max) | FD | rough |")
    print("| --- | --- | ---: | ---: |")
    for switch in [math.inf, *args.switch_sigmas]:
        ode = LogSigmaMultistepScheduler.from_config(config, eta=0.0)
        x = chain(ode, hybrid(switch), shape, torch.Generator().manual_seed(args.seed), args.calls)
        results = evaluate_samples((x.clamp(low, high) - low) / (high - low))
        shares = np.asarray(results["class_counts"]) / results["num_samples"]
        name = "network only" if math.isinf(switch) else f"D* above sigma = {switch:g}, network below"
        print(
            f"| {name} | {100 * shares.min():.1f}-{100 * shares.max():.1f}% | {results['frechet_distance']:.2f} | "
            f"{100 * results['rough_fraction']:.1f}% |"
        )


if __name__ == "__main__":
    main()
