"""The Kornia wrapper: seeded from the counter-based generator, global RNG untouched."""
from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.transforms import ParamContext

from conftest import photo_like


def batch(n=4, h=20, w=24):
    return torch.stack([photo_like(h, w, seed=k) for k in range(n)])


def seed_of(op, images, seed=0, epoch=0, indices=None, position=0):
    idx = torch.arange(len(images)) if indices is None else torch.as_tensor(indices)
    keys = SampleKeys(seed, epoch, idx)
    return op.make_params(ParamContext(keys, position, torch.tensor([list(images.shape[-2:])] * len(images)))).seed


def jitter_and_affine():
    return K.AugmentationSequential(K.ColorJiggle(0.3, 0.3, 0.3, 0.05, p=1.0), K.RandomAffine(20.0, p=1.0))


def test_same_seed_same_output_different_seed_different_output():
    images = batch()
    op = T.Kornia(jitter_and_affine())
    a = op(images, seed=1)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, op(images, seed=1))
    assert not torch.equal(a, op(images, seed=2))
    assert not torch.equal(a, op(images, seed=1, epoch=1))
    assert not torch.equal(a, op(images, seed=1, indices=[7, 1, 2, 3]))


def test_global_rng_untouched():
    images = batch()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    T.Kornia(K.RandomGaussianBlur((5, 5), (0.1, 2.0), p=0.5))(images, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_equals_the_module_under_the_same_manual_seed(dtype):
    images = batch() if dtype == torch.uint8 else batch().float() / 255
    module = jitter_and_affine()
    op = T.Kornia(module)
    out = op(images, seed=5, epoch=2, indices=[10, 11, 12, 13])
    seed = seed_of(op, images, seed=5, epoch=2, indices=[10, 11, 12, 13])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        direct = module(images.float() / 255 if dtype == torch.uint8 else images)
    if dtype == torch.uint8:
        assert torch.equal(out, (direct * 255).round().clamp(0, 255).to(torch.uint8))
    else:
        assert torch.allclose(out, direct, atol=1e-6)


def test_seed_depends_on_the_first_index_and_op_position():
    images = batch()
    op = T.Kornia(K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=1.0))
    s = seed_of(op, images, indices=[5, 6, 7, 8])
    assert s == seed_of(op, images, indices=[5, 0, 0, 0])          # only the first index counts
    assert s != seed_of(op, images, indices=[6, 6, 7, 8])
    assert s != seed_of(op, images, indices=[5, 6, 7, 8], position=1)
    assert 0 <= s < 2**63


def test_input_not_modified_list_input_and_float_range():
    images = batch().float() / 255
    before = images.clone()
    op = T.Kornia(K.ColorJiggle(0.3, 0.3, p=1.0))
    out = op(images, seed=0)
    assert torch.equal(images, before)
    as_list = op(list(images), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(as_list, out))
    u8 = op(batch(), seed=0)
    assert (u8.float() / 255 - out).abs().max() <= 1.5 / 255


def test_resizing_module_needs_output_size():
    images = batch(3, 30, 40)
    with pytest.raises(ValueError, match="output_size"):
        T.Kornia(K.RandomResizedCrop((16, 16)))(images, seed=0)
    pipe = T.Compose([T.Kornia(K.RandomResizedCrop((16, 16)), output_size=(16, 16)), T.CenterCrop(8)])
    assert pipe(images, seed=0).shape == (3, 3, 8, 8)


def test_in_a_pipeline_with_native_ops():
    pipe = T.Compose([T.RandomResizedCrop(16), T.ToDtype(torch.float32, scale=True),
                      T.Kornia(K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=1.0)),
                      T.Normalize((0.5,) * 3, (0.25,) * 3)])
    images = batch(3, 30, 40)
    out = pipe(images, seed=4)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    assert torch.equal(out, pipe(images, seed=4))
