"""Counter-based random numbers: every draw is a pure function of where it is used.

A random parameter of sample ``index`` in ``epoch``, for the op at ``op_position`` of
the pipeline, draw number ``draw``, is::

    philox4x32_10(counter=(index_lo, index_hi, epoch, op_position << 16 | draw // 4),
                  key=(seed_lo, seed_hi))[draw % 4]

computed with int64 tensor ops, so the same bits come out on CPU and CUDA, in any
worker, batch size, batch position, GPU count or resume point. That is what makes
``loader.replay(index, epoch)`` possible: nothing about a sample's augmentation
depends on what else was in its batch.

Philox4x32-10 is the generator of Salmon et al., "Parallel random numbers: as easy as
1, 2, 3" (SC'11); the known-answer vectors of its reference implementation are
checked in ``tests/test_rng.py``.

Example:
    >>> import torch
    >>> from gpuaug.rng import SampleKeys
    >>> keys = SampleKeys(seed=0, epoch=0, indices=torch.tensor([5, 9, 5]))
    >>> u = keys.uniform(op_position=0, n=2)      # [3, 2] floats in [0, 1)
    >>> bool((u[0] == u[2]).all()), bool((u[0] != u[1]).any())
    (True, True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57          # Philox multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85          # Weyl key increments
_ROUNDS = 10
MAX_OPS = 1 << 16
MAX_DRAWS = 4 << 16


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a*b of two uint32 fits in 64 bits; int64 wraps in two's complement, so the low
    # and high 32-bit halves are still right after masking (>> is arithmetic, hence the mask).
    p = b * a
    return (p >> 32) & _MASK32, p & _MASK32


def philox4x32(counter: tuple[torch.Tensor, ...], key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on int64 tensors holding uint32 values.

    Args:
        counter: four broadcastable int64 tensors with values in [0, 2**32).
        key: two ints in [0, 2**32).
    Returns:
        Four int64 tensors of uint32 values.
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(_ROUNDS):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def random_bits(seed: int, epoch: int, indices: torch.Tensor, op_position: int, n: int) -> torch.Tensor:
    """``[B, n]`` int64 tensor of uint32 random words, one row per sample index."""
    if not 0 <= op_position < MAX_OPS:
        raise ValueError(f"op_position must be in [0, {MAX_OPS}), got {op_position}")
    if not 0 <= n <= MAX_DRAWS:
        raise ValueError(f"at most {MAX_DRAWS} draws per op, got {n}")
    seed &= (1 << 64) - 1
    key = (seed & _MASK32, seed >> 32)
    idx = indices.to(torch.int64).reshape(-1, 1)
    blocks = torch.arange((n + 3) // 4, dtype=torch.int64, device=idx.device).reshape(1, -1)
    counter = (
        idx & _MASK32,
        (idx >> 32) & _MASK32,
        torch.full_like(idx, epoch & _MASK32),
        (op_position << 16) | blocks,
    )
    words = philox4x32(tuple(torch.broadcast_tensors(*counter)), key)
    # [B, blocks, 4] -> [B, blocks*4]: draw d is output d % 4 of block d // 4.
    return torch.stack(words, dim=-1).reshape(idx.shape[0], blocks.shape[1] * 4)[:, :n]


def bits_to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """uint32 words to float32 in [0, 1) using the top 24 bits (exact in float32)."""
    return (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))


@dataclass(frozen=True)
class SampleKeys:
    """Identifies the samples of a batch for the counter-based generator.

    Args:
        seed: the loader's seed (any int; taken mod 2**64).
        epoch: the epoch the batch belongs to.
        indices: ``[B]`` int64 dataset indices of the samples, on the device where
            parameters should be drawn.
    """

    seed: int
    epoch: int
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def uniform(self, op_position: int, n: int) -> torch.Tensor:
        """``[B, n]`` float32 uniforms in [0, 1) for the op at ``op_position``."""
        return bits_to_uniform(random_bits(self.seed, self.epoch, self.indices, op_position, n))

    def select(self, rows: torch.Tensor | list[int]) -> "SampleKeys":
        """The keys of a subset of the batch (same seed and epoch)."""
        rows = torch.as_tensor(rows, dtype=torch.int64, device=self.device)
        return SampleKeys(self.seed, self.epoch, self.indices[rows])

    def to(self, device) -> "SampleKeys":
        return SampleKeys(self.seed, self.epoch, self.indices.to(device))
