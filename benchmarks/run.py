"""Benchmarks of ncsn-diffusers, printed as ratios measured in one run.

python -m benchmarks.run                 # everything that runs here
python -m benchmarks.run scheduler pipeline
"""

import argparse

import torch

from . import bench_peers, bench_pipeline, bench_scheduler, bench_ssm, bench_training_script, bench_training_step

BENCHMARKS = {
    "scheduler": bench_scheduler.run_both,
    "pipeline": bench_pipeline.run,
    "training_step": bench_training_step.run,
    "peers": bench_peers.run,
    "training_script": bench_training_script.run,
    "ssm": bench_ssm.run,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", choices=[[], *BENCHMARKS], help="benchmarks to run (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.names or BENCHMARKS:
        BENCHMARKS[name]()


if __name__ == "__main__":
    main()
