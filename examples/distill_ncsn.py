"""Distils a saved NCSN score pipeline into diffusers' own `ConsistencyModelPipeline` (1-2 U-Net calls).

accelerate launch examples/distill_ncsn.py --teacher_model ./ncsn-digits --output_dir ./ncsn-digits-cd

is `accelerate launch train_ncsn.py --objective consistency_distillation ...` (every flag of train_ncsn.py applies:
checkpoints, exact resume, EMA, Hub push; docs/distillation.md). The older flag names of this script are still taken:
--num_levels (--num_scales), --ema_rate (--target_ema_rate), --init (--student_init).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # train_ncsn.py, beside examples/

import train_ncsn  # noqa: E402

RENAMED = {"--num_levels": "--num_scales", "--ema_rate": "--target_ema_rate", "--init": "--student_init"}


def renamed(arg: str) -> str:
    name, sep, value = arg.partition("=")
    return RENAMED.get(name, name) + sep + value


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    train_ncsn.main(["--objective", "consistency_distillation", *map(renamed, argv)])


if __name__ == "__main__":
    main()
