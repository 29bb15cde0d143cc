"""The counter-based generator: known answers, independence from batching, uniformity."""
from __future__ import annotations

import torch

from gpuaug.rng import SampleKeys, philox4x32, random_bits


def _philox(ctr, key):
    return [int(v) for v in philox4x32(tuple(torch.tensor([c]) for c in ctr), key)]


def test_known_answer_vectors_of_random123():
    # Known-answer tests shipped with the Random123 reference implementation (philox4x32_10).
    assert _philox([0, 0, 0, 0], (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert _philox([0xFFFFFFFF] * 4, (0xFFFFFFFF, 0xFFFFFFFF)) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert _philox([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], (0xA4093822, 0x299F31D0)) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def test_draw_depends_only_on_its_own_key():
    a = SampleKeys(7, 3, torch.tensor([10, 20, 30, 40])).uniform(2, 9)
    b = SampleKeys(7, 3, torch.tensor([30, 99, 10])).uniform(2, 9)
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[2])
    # a prefix of the draws does not depend on how many were asked for
    assert torch.equal(SampleKeys(7, 3, torch.tensor([10])).uniform(2, 3)[0], a[0, :3])


def test_every_coordinate_changes_the_stream():
    base = random_bits(1, 0, torch.tensor([5]), 0, 8)
    for other in (random_bits(2, 0, torch.tensor([5]), 0, 8), random_bits(1, 1, torch.tensor([5]), 0, 8),
                  random_bits(1, 0, torch.tensor([6]), 0, 8), random_bits(1, 0, torch.tensor([5]), 1, 8),
                  random_bits(1, 0, torch.tensor([5 + (1 << 32)]), 0, 8)):
        assert not torch.equal(base, other)


def test_large_seeds_and_empty_batches():
    assert random_bits(2**64 - 1, 2**40, torch.tensor([2**40]), 0, 5).shape == (1, 5)
    assert SampleKeys(0, 0, torch.zeros(0, dtype=torch.int64)).uniform(0, 3).shape == (0, 3)


def test_uniformity():
    u = SampleKeys(0, 0, torch.arange(50_000)).uniform(0, 4).flatten()
    assert 0 <= u.min() and u.max() < 1
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    # consecutive draws are uncorrelated
    v = u.reshape(-1, 4)
    assert abs(torch.corrcoef(v.T)[0, 1].item()) < 0.02
