"""The GPU checks, in one short run: sampling and training speed of CIFAR-10-sized models in fp32 and bf16, and the
cost per image of the celebahq-256 NCSN++ when its score_sde config is given.

python -m benchmarks.gpu_checks   # on a machine with a CUDA GPU
python -m benchmarks.gpu_checks --ncsnpp_config <score_sde>/configs/ve/celebahq_256_ncsnpp_continuous.py
"""

import argparse
import json
import os
import sys

import torch

from . import bench_ncsnpp_cost, bench_pipeline, bench_scheduler, bench_training_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ncsnpp_config", default=None, help="score_sde's celebahq_256_ncsnpp_continuous.py")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("No CUDA GPU: these checks need one.")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["scheduler"] = bench_scheduler.run(device="cuda", steps=500)
    for name, kwargs in [
        ("fp32", {"dtype": torch.float32}),
        ("bf16", {"dtype": torch.bfloat16}),
        ("bf16_compile", {"dtype": torch.bfloat16, "compile": True}),
    ]:
        results[f"pipeline_{name}"] = bench_pipeline.run(
            preset="cifar10", batch_size=256, num_inference_steps=50, device="cuda", **kwargs
        )
    for mixed_precision in ("no", "bf16"):
        results[f"train_{mixed_precision}"] = bench_training_step.run(
            preset="cifar10", batch_size=128, steps=10, device="cuda", mixed_precision=mixed_precision
        )
    if args.ncsnpp_config:
        results["ncsnpp_cost"] = bench_ncsnpp_cost.run(args.ncsnpp_config, device="cuda", repeats=5)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "gpu_checks.json"), "w") as f:
            json.dump(results, f, indent=2, default=str)


if __name__ == "__main__":
    main()
