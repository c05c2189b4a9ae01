"""Repeats a tiny two-process `accelerate launch train_ncsn.py` run, each with its own timeout, and prints each run's
wall time and whether it ended: the check for issue 20's hang at exit (gloo's teardown after the DDP reducer), which
showed in about 1 of 8 runs before train_ncsn.py ended its runs explicitly. Too slow for the test suite (~32 s a run
on 2 loaded CPU cores); `tests/training/test_train_ncsn.py::test_end_to_end_dsm_one_process_equals_two_processes` runs one.

    python benchmarks/stress_two_process_exit.py --repeats 8 --timeout 120
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model_preset", "tiny", "--resolution", "8", "--train_batch_size", "4", "--num_sample_images", "1",
        "--steps_per_level", "1", "--num_noise_levels", "4", "--report_to", "none", "--max_train_steps", "2",
        "--checkpointing_steps", "1", "--logging_steps", "1"]  # fmt: skip


def launch_once(output_dir: Path, timeout: float) -> tuple[float, str]:
    """One run in its own session; returns (seconds, "ok" | "hung" | "failed (rc N)"). A hung run is killed whole."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", "2", "--multi_gpu", "--main_process_port", str(port),
               str(REPO / "train_ncsn.py"), *TINY, "--output_dir", str(output_dir)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return time.perf_counter() - start, "hung"
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        print(stderr.decode(errors="replace")[-2000:], file=sys.stderr)
        return seconds, f"failed (rc {process.returncode})"
    return seconds, "ok"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="Runs, one after another.")
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds before a run counts as hung.")
    args = parser.parse_args(argv)
    if args.repeats < 1 or not args.timeout > 0:
        parser.error("--repeats must be >= 1 and --timeout > 0.")
    outcomes = []
    with tempfile.TemporaryDirectory() as root:  # our own folder: every run's output goes there and with it
        for i in range(args.repeats):
            seconds, outcome = launch_once(Path(root) / f"run-{i}", args.timeout)
            outcomes.append(outcome)
            print(f"run {i + 1}/{args.repeats}: {outcome} in {seconds:.1f} s", flush=True)
    hung = outcomes.count("hung")
    print(f"{args.repeats - hung - sum(o.startswith('failed') for o in outcomes)} ended, {hung} hung")
    sys.exit(0 if all(o == "ok" for o in outcomes) else 1)


if __name__ == "__main__":
    main()
