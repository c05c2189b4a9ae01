"""The clean images of each micro-step, streamed through a `DataLoader` in the order [`BatchOrder`] fixes.

The loader's batch sampler yields `order.indices(micro_step, process_index, num_processes)` for the micro-steps of the
run still to do, so the batches stay a function of (seed, epoch): a resumed run reads the same batches from its step
on, each process reads only its shard of every global batch, and since every image is decoded by a function of
(seed, index) alone, neither the number of workers nor of processes changes a batch.
"""

import os

import torch
from torch.utils.data import DataLoader, Sampler

from .batch_order import BatchOrder

# Workers per process when --dataloader_num_workers is not given (benchmarks/bench_data.py, docs/benchmarks.md).
MAX_DEFAULT_WORKERS = 4


def default_num_workers() -> int:
    """min(4, the CPUs this process may run on / the training processes on this machine), at least 1.

    `LOCAL_WORLD_SIZE` is set by `accelerate launch` / `torchrun`: 8 processes on 16 CPUs get 2 workers each, not 4.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


class BatchOrderSampler(Sampler[list[int]]):
    """This process's shard of the global batch of every micro-step in [start, end) of `order`."""

    def __init__(self, order: BatchOrder, start: int, end: int, process_index: int = 0, num_processes: int = 1):
        self.order, self.start, self.end = order, start, end
        self.process_index, self.num_processes = process_index, num_processes

    def __len__(self) -> int:
        return max(self.end - self.start, 0)

    def __iter__(self):
        for micro_step in range(self.start, self.end):
            yield self.order.indices(micro_step, self.process_index, self.num_processes).tolist()


def batch_loader(
    dataset,
    order: BatchOrder,
    start: int,
    end: int,
    process_index: int = 0,
    num_processes: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A `DataLoader` yielding the uint8 shard (B, C, R, R) of micro-steps start, start + 1, ..., end - 1."""
    return DataLoader(
        dataset,
        batch_sampler=BatchOrderSampler(order, start, end, process_index, num_processes),
        num_workers=num_workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if num_workers else None,
    )


def decode_subset(dataset, indices: torch.Tensor, num_workers: int = 0, batch_size: int = 256) -> torch.Tensor:
    """Items `indices` of `dataset`, in that order, stacked: (len(indices), C, R, R)."""
    chunks = indices.split(batch_size)
    loader = DataLoader(dataset, batch_sampler=[chunk.tolist() for chunk in chunks], num_workers=num_workers)
    return torch.cat(list(loader))
