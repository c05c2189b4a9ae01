"""Sampling a saved pipeline for evaluation, data-parallel under `accelerate launch`.

Each process draws its share of the images with its own generator, seeded `seed + rank`, and every process receives
all of them in rank order. The images are therefore a function of (seed, number of processes, batch size).

On GPUs: `accelerate launch --num_processes N -m ncsn_diffusers.evaluation ...`. On CPUs, `accelerate launch --cpu`
starts one process; several CPU processes come from `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ...`.
"""

import json
import os

import diffusers
import numpy as np
import torch

import ncsn_diffusers  # makes this package's model and scheduler classes importable by `from_pretrained`

from .progress import overall_progress


def load_pipeline(pipeline_dir: str):
    """A saved `NCSNPipeline`, `DDPMPipeline` or any other unconditional image pipeline from its folder."""
    if not os.path.isfile(os.path.join(pipeline_dir, "model_index.json")):
        raise ValueError(
            f"`--pipeline` must be a folder saved with `save_pretrained`, no model_index.json in {pipeline_dir!r}."
        )
    with open(os.path.join(pipeline_dir, "model_index.json")) as f:
        class_name = json.load(f).get("_class_name", "")
    pipeline_class = getattr(ncsn_diffusers, class_name, None) or diffusers.DiffusionPipeline
    return pipeline_class.from_pretrained(pipeline_dir)


def distributed_state():
    """accelerate's `PartialState`; with `ACCELERATE_USE_CPU` set, CPU processes form a (gloo) group as well."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def process_share(num_samples: int, num_processes: int, rank: int) -> int:
    """Images drawn by process `rank`: an equal share, the remainder going one each to the first ranks."""
    return num_samples // num_processes + (1 if rank < num_samples % num_processes else 0)


def sample_pipeline(
    pipeline_dir: str,
    num_samples: int,
    batch_size: int = 64,
    num_inference_steps: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Draws `num_samples` images across all processes of the current `accelerate` launch (or just this one).

    Args:
        pipeline_dir (`str`): the saved pipeline.
        num_samples (`int`): images in total, over all processes.
        batch_size (`int`, defaults to 64): images per pipeline call.
        num_inference_steps (`int`, *optional*): passed to the pipeline when given; its own default otherwise.
        seed (`int`, defaults to 0): process `rank` seeds its CPU generator with `seed + rank`.

    Returns:
        `np.ndarray` of shape `(num_samples, H, W, C)` in [0, 1], on every process.
    """
    from accelerate.utils import gather_object

    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"`num_samples` and `batch_size` must be positive, got {num_samples} and {batch_size}.")
    state = distributed_state()
    pipeline = load_pipeline(pipeline_dir).to(state.device)
    pipeline.set_progress_bar_config(disable=True)  # one overall bar below, not one per pipeline call
    generator = torch.Generator("cpu").manual_seed(seed + state.process_index)
    call_kwargs = {} if num_inference_steps is None else {"num_inference_steps": num_inference_steps}

    share = process_share(num_samples, state.num_processes, state.process_index)
    desc = f"sampling {num_samples} images" + (f" ({share} here)" if state.num_processes > 1 else "")
    shards, remaining = [], share
    with overall_progress(share, desc, getattr(pipeline, "unet", None), disable=not state.is_main_process) as bar:
        while remaining > 0:
            count = min(batch_size, remaining)
            output = pipeline(batch_size=count, generator=generator, output_type="np", **call_kwargs)
            shards.append(np.asarray(output.images, dtype=np.float32))
            remaining -= count
            bar.update(count)
    local = np.concatenate(shards) if shards else None
    gathered = [shard for shard in gather_object([local]) if shard is not None]
    return np.concatenate(gathered)
