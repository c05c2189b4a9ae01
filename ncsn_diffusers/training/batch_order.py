"""Deterministic, resumable randomness: every draw of the training loop is a function of (seed, stream, step).

Random draws of the training loop (batch order, noise, levels, flips, dequantisation) are pure functions of (seed,
step), so a resumed run repeats exactly what the uninterrupted one would have done, on any number of processes.
"""

import math

import numpy as np
import torch

# Streams of derived_seed(seed, stream, micro_step); stream 0 is the batch order (BatchOrder).
NOISE_STREAM = 1


PROJECTION_STREAM = 2  # the projections v of --objective ssm


def derived_seed(seed: int, *counters: int) -> int:
    """A well-mixed 63-bit seed for the stream (seed, *counters), e.g. (seed, stream id, step)."""
    return int(np.random.SeedSequence([seed, *counters]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class BatchOrder:
    """Which training images each micro-batch uses: a fresh permutation per epoch, cut into global batches.

    Micro-batch k (counted over the whole run) belongs to epoch k // batches_per_epoch; its global batch of
    `global_batch_size` indices is split into `num_processes` consecutive shards, so N processes with batch B each
    see together exactly what one process with batch N * B sees. The last incomplete batch of an epoch is dropped.
    """

    def __init__(self, num_images: int, global_batch_size: int, seed: int):
        if global_batch_size > num_images:
            raise ValueError(
                f"The global batch (train_batch_size x processes = {global_batch_size}) is larger than the "
                f"{num_images} training images; lower --train_batch_size."
            )
        self.num_images = num_images
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.batches_per_epoch = num_images // global_batch_size
        self._epoch, self._permutation = None, None

    def epoch_of(self, micro_step: int) -> int:
        return micro_step // self.batches_per_epoch

    def indices(self, micro_step: int, process_index: int = 0, num_processes: int = 1) -> torch.Tensor:
        epoch = self.epoch_of(micro_step)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, 0, epoch))
            self._epoch, self._permutation = epoch, torch.randperm(self.num_images, generator=generator)
        start = (micro_step % self.batches_per_epoch) * self.global_batch_size
        shard = self.global_batch_size // num_processes
        start += process_index * shard
        return self._permutation[start : start + shard]


def num_update_steps(num_epochs: int, batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in `num_epochs` epochs (an update may straddle two epochs)."""
    return math.ceil(num_epochs * batches_per_epoch / gradient_accumulation_steps)
