"""The data path of `train_ncsn.py` on a folder of PNGs: peak memory, time to the first step and images/s.

    python -m benchmarks.bench_data --num_images 2000                   # this checkout
    python -m benchmarks.bench_data --num_images 2000 --repo ../other-checkout # another checkout, same PNGs
    python -m benchmarks.bench_data --num_images 2000 --dataloader_num_workers 2 --steps 20
    python -m benchmarks.bench_data --num_images 2000 --loader_only     # the data path alone, 0/1/2/4 workers
    python -m benchmarks.bench_data --digits                            # the digits: in memory vs streamed

Writes `--num_images` random 64x64 RGB PNGs to `--data_dir` (once; reused by later runs), then trains `--steps` steps
of `--model_preset tiny` at 32x32 on them in a fresh process (`python train_ncsn.py` of `--repo`) and prints the peak
RSS of the training process, the peak of the summed PSS of it and its DataLoader workers (each shared page counted
once), its wall time to the first logged step (imports included) and the median images/s of the steps after the
first. `--loader_only` times the DataLoader alone (no training) for 0, 1, 2 and 4 workers.

`--digits` times the embedded digits' batches (1,797 16x16 images, one tensor): indexed in memory, as training does,
against the same tensor streamed through a DataLoader with workers.
"""

import argparse
import json
import os
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


def tree_pss_mb(process) -> float:
    """Summed PSS of `process` and its descendants (the DataLoader workers), in MB; 0 for those already gone.

    Read from /proc/<pid>/smaps_rollup (half the cost of psutil's full smaps walk: the poll must not slow the run)."""
    import psutil

    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for member in members:
        try:
            rollup = Path(f"/proc/{member.pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return total / 1024


def run(num_images: int, data_dir: Path, repo: Path, steps: int = 3, num_workers: int | None = None) -> dict:
    import psutil

    make_pngs(data_dir, num_images)
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, str(repo / "train_ncsn.py"), "--train_data_dir", str(data_dir), "--output_dir", out]
        argv += ["--model_preset", "tiny", "--resolution", "32", "--channels", "3", "--train_batch_size", "32"]
        argv += ["--max_train_steps", str(steps), "--logging_steps", "1", "--num_sample_images", "1"]
        argv += ["--noise_ladder", "explicit", "--sigma_max", "50", "--sampler", "annealed_langevin"]
        argv += ["--steps_per_level", "1", "--report_to", "none"]
        argv += [] if num_workers is None else ["--dataloader_num_workers", str(num_workers)]
        env = {"PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        start = time.monotonic()
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)  # fmt: skip
        log = Path(out) / "logs" / "train_log.jsonl"
        first_step, peak_pss = None, 0.0
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            if first_step is None and log.is_file() and log.read_text().strip():
                first_step = time.monotonic() - start
            peak_pss = max(peak_pss, tree_pss_mb(watched))
            time.sleep(0.5)
        if process.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}")
        records = [json.loads(line) for line in log.read_text().splitlines()]
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "peak_rss_mb": peak_mb,
        "peak_tree_pss_mb": peak_pss,
        "first_step_s": first_step,
        "images_per_s": float(np.median([r["images_per_s"] for r in records[1:]] or [records[-1]["images_per_s"]])),
    }


def loader_images_per_s(data_dir: Path, num_workers: int, micro_steps: int = 100) -> tuple[float, float]:
    """The data path alone on the PNG folder: seconds to build the file list (header checks) and images/s streamed
    (32 images of 32x32 per batch, `num_workers` workers), no training."""
    from ncsn_diffusers import training
    from ncsn_diffusers.training import data
    from ncsn_diffusers.training.batch_order import BatchOrder

    config = dict(train_data_dir=str(data_dir), resolution=32, channels=3, train_batch_size=32, report_to="none")
    args = training.TrainingConfig(**config, output_dir=os.path.join(tempfile.gettempdir(), "unused")).resolve()
    args.dataloader_num_workers = num_workers
    start = time.perf_counter()
    images = data.training_set(args)
    listed = time.perf_counter() - start
    batches = data.TrainingBatches(images, BatchOrder(len(images), 32, 0), 0, micro_steps, args, "cpu")
    batches.clean(0)
    start = time.perf_counter()
    for k in range(1, micro_steps):
        batches.clean(k)
    return listed, (micro_steps - 1) * 32 / (time.perf_counter() - start)


def in_memory_decode(data_dir: Path) -> tuple[float, float]:
    """Seconds and MB of the whole folder decoded at once (`load_training_images`, the path before streaming)."""
    from ncsn_diffusers import training
    from ncsn_diffusers.training import data

    config = dict(train_data_dir=str(data_dir), resolution=32, channels=3, report_to="none")
    args = training.TrainingConfig(**config, output_dir=os.path.join(tempfile.gettempdir(), "unused")).resolve()
    start = time.perf_counter()
    images = data.load_training_images(args)
    return time.perf_counter() - start, images.numel() * images.element_size() / 2**20


def digits_batches(num_workers: int, micro_steps: int = 200) -> tuple[float, float]:
    """Seconds to the first batch and batches/s of the digits: in memory (`num_workers` < 0) or streamed."""
    from ncsn_diffusers import training
    from ncsn_diffusers.training import data
    from ncsn_diffusers.training.batch_order import BatchOrder

    args = training.TrainingConfig(
        output_dir=os.path.join(tempfile.gettempdir(), "unused"), report_to="none"
    ).resolve()
    images = data.training_set(args)  # the digits' tensor
    source = images if num_workers < 0 else _Items(images)
    args.dataloader_num_workers = max(num_workers, 0)
    order = BatchOrder(len(images), args.train_batch_size, args.seed)
    start = time.perf_counter()
    batches = data.TrainingBatches(source, order, 0, micro_steps, args, "cpu")
    batches.clean(0)
    first = time.perf_counter() - start
    for k in range(1, micro_steps):
        batches.clean(k)
    return first, (micro_steps - 1) / (time.perf_counter() - start - first)


class _Items:
    """A tensor as a map-style dataset (what streaming the digits would be)."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--data_dir", type=Path, default=None, help="default: /tmp/ncsn-bench-pngs-<num_images>")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose train_ncsn.py runs")
    parser.add_argument("--steps", type=int, default=3, help="training steps (images/s is the last one's)")
    parser.add_argument("--dataloader_num_workers", type=int, default=None, help="passed on (default: the script's)")
    parser.add_argument("--digits", action="store_true", help="time the digits in memory vs streamed instead")
    parser.add_argument("--loader_only", action="store_true", help="time the DataLoader alone for 0, 1, 2, 4 workers")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / f"ncsn-bench-pngs-{args.num_images}"
    if args.loader_only:
        import torch

        torch.set_num_threads(1)
        make_pngs(data_dir, args.num_images)
        for workers in (0, 1, 2, 4):
            listed, rate = loader_images_per_s(data_dir, workers)
            print(f"{args.num_images} PNGs, {workers} workers: file list {listed:.1f} s, {rate:.0f} images/s streamed")
        seconds, megabytes = in_memory_decode(data_dir)
        print(f"{args.num_images} PNGs decoded in memory instead: {seconds:.1f} s, a {megabytes:.0f} MB tensor")
        return
    if args.digits:
        import torch

        torch.set_num_threads(1)
        for workers, label in ((-1, "in memory"), (0, "streamed, 0 workers"), (2, "streamed, 2 workers")):
            first, rate = digits_batches(workers)
            print(f"digits batches of 128, {label}: first after {first * 1e3:.1f} ms, {rate:.0f} batches/s")
        return
    result = run(args.num_images, data_dir, args.repo.resolve(), args.steps, args.dataloader_num_workers)
    workers = "" if args.dataloader_num_workers is None else f", {args.dataloader_num_workers} workers"
    print(
        f"{args.num_images} PNGs 64x64 -> tiny at 32x32, {args.steps} steps of batch 32 ({args.repo}{workers}): "
        f"peak RSS {result['peak_rss_mb']:.0f} MB (all processes, PSS: {result['peak_tree_pss_mb']:.0f} MB), "
        f"first step after {result['first_step_s']:.1f} s, {result['images_per_s']:.0f} images/s"
    )


if __name__ == "__main__":
    main()
