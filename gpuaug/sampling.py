"""Which samples each batch holds: shuffling, distributed sharding, resuming mid-epoch.

Map-style datasets go through one batch sampler per loader, built the way torch's
DataLoader would build it (``RandomSampler``/``SequentialSampler`` + ``BatchSampler``,
or the user's own), sharded like ``DistributedSampler`` under ``torch.distributed``,
and wrapped so that a resumed epoch starts at a given batch without reading the
batches before it.

Iterable datasets are split in the workers: sample ``k`` of the stream goes to global
worker ``k % (world_size * num_workers)``, and ``k`` is the sample's identity for the
counter-based generator, so its augmentation does not depend on the number of workers
or ranks. Datasets that split themselves (they set ``splits_itself = True``, as
:class:`gpuaug.webdataset.TarShards` does) are left alone and identify samples with
their ``"__index__"`` field.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler


def distributed_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else ``torch.distributed`` when initialized, else (0, 1)."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("pass both rank and world_size, or neither")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device() -> torch.device:
    """The rank's own GPU under torchrun (``LOCAL_RANK``), else the default CUDA device or CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device("cuda", int(local_rank)) if local_rank is not None else torch.device("cuda")


class ResumableBatchSampler(Sampler[list[int]]):
    """Yields the inner batch sampler's batches, skipping ``skip`` of them once.

    Args:
        inner: any batch sampler (iterable of lists of indices).
    """

    def __init__(self, inner):
        self.inner = inner
        self.skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for k, batch in enumerate(self.inner):
            if k >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def sampler(self):
        return getattr(self.inner, "sampler", None)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def build_batch_sampler(dataset, batch_size: int | None, shuffle: bool | None, sampler, batch_sampler,
                        drop_last: bool, generator: torch.Generator | None, rank: int, world_size: int,
                        seed: int) -> ResumableBatchSampler:
    """torch DataLoader's batch sampler for a map-style dataset, sharded when ``world_size > 1``.

    Under distribution (and with no sampler of the user's) every rank gets
    ``DistributedSampler`` semantics: the same shuffled order from (seed, epoch) on all
    ranks, padded by repeating samples (or, with ``drop_last``, trimmed) so every rank
    has the same number of samples, then rank ``r`` takes every ``world_size``-th one.
    """
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                             "and drop_last")
        return ResumableBatchSampler(batch_sampler)
    if sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if sampler is None:
        if world_size > 1:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=bool(shuffle),
                                         seed=seed, drop_last=drop_last)
        elif shuffle:
            sampler = RandomSampler(dataset, generator=generator)
        else:
            sampler = SequentialSampler(dataset)
    return ResumableBatchSampler(BatchSampler(sampler, batch_size, drop_last))
