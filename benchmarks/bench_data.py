"""The data path of `train_ncsn.py` on a folder of PNGs: peak RSS, time to the first step and images/s.

    python -m benchmarks.bench_data --num_images 2000                   # this checkout
    python -m benchmarks.bench_data --num_images 2000 --repo /work/main # another checkout, same PNGs

Writes `--num_images` random 64x64 RGB PNGs to `--data_dir` (once; reused by later runs), then trains 3 steps of
`--model_preset tiny` at 32x32 on them in a fresh process (`python train_ncsn.py` of `--repo`) and prints the peak
RSS of that process, its wall time to the first logged step (imports included) and the images/s of the last step.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def make_pngs(folder: Path, count: int):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(len(list(folder.glob("*.png"))), count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def run(num_images: int, data_dir: Path, repo: Path) -> dict:
    make_pngs(data_dir, num_images)
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, str(repo / "train_ncsn.py"), "--train_data_dir", str(data_dir), "--output_dir", out]
        argv += ["--model_preset", "tiny", "--resolution", "32", "--channels", "3", "--train_batch_size", "32"]
        argv += ["--max_train_steps", "3", "--logging_steps", "1", "--num_sample_images", "1", "--report_to", "none"]
        argv += ["--noise_ladder", "explicit", "--sigma_max", "50", "--sampler", "annealed_langevin"]
        argv += ["--steps_per_level", "1"]
        env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        start = time.monotonic()
        process = subprocess.Popen(argv, env={**__import__("os").environ, **env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        log = Path(out) / "logs" / "train_log.jsonl"
        first_step = None
        while process.poll() is None:
            if first_step is None and log.is_file() and log.read_text().strip():
                first_step = time.monotonic() - start
            time.sleep(0.05)
        if process.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}")
        records = [json.loads(line) for line in log.read_text().splitlines()]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": peak_mb, "first_step_s": first_step, "images_per_s": records[-1]["images_per_s"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--data_dir", type=Path, default=None, help="default: /tmp/ncsn-bench-pngs-<num_images>")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose train_ncsn.py runs")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / f"ncsn-bench-pngs-{args.num_images}"
    result = run(args.num_images, data_dir, args.repo.resolve())
    print(
        f"{args.num_images} PNGs 64x64 -> tiny at 32x32, 3 steps of batch 32 ({args.repo}): peak RSS "
        f"{result['peak_rss_mb']:.0f} MB, first step after {result['first_step_s']:.1f} s, "
        f"{result['images_per_s']:.0f} images/s"
    )


if __name__ == "__main__":
    main()
