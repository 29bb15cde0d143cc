"""MixUp / CutMix on batches, and the Beta / Dirichlet samplers behind them."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2 as v2

from gpuaug import transforms as T
from gpuaug.rng import SampleKeys
from gpuaug.transforms._mix import BETA_DRAWS, GAMMA_DRAWS, MixParams, sample_beta, sample_dirichlet

from conftest import photo_like


def float_batch(n=8, h=16, w=20):
    return torch.stack([photo_like(h, w, seed=k) for k in range(n)]).float() / 255


def constant_batch(n=8, h=20, w=24):
    """Image b is filled with the value b: every pixel tells where it came from."""
    return torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 3, h, w).contiguous()


def params_of(mix, images, seed=0):
    return mix.make_params(SampleKeys(seed, 0, torch.arange(len(images))), *images.shape[-2:])


# -- samplers --------------------------------------------------------------------------------

def uniforms(n, draws, seed=0):
    return SampleKeys(seed, 0, torch.arange(n)).uniform(7, draws)


@pytest.mark.parametrize("a,b", [(0.2, 0.2), (1.0, 1.0), (4.0, 4.0), (0.5, 2.0)])
def test_beta_sampler_moments_and_distribution(a, b):
    scipy_stats = pytest.importorskip("scipy.stats")     # comes with scikit-image (dev extra)
    n = 40000
    x = sample_beta(uniforms(n, BETA_DRAWS), a, b)
    assert x.dtype == torch.float64 and ((x >= 0) & (x <= 1)).all()
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(x.mean().item() - mean) < 5 * math.sqrt(var / n)
    # The sample variance has standard error sqrt((mu4 - var**2) / n), mu4 from the excess kurtosis.
    mu4 = (float(scipy_stats.beta(a, b).stats(moments="k")) + 3) * var ** 2
    assert abs(x.var().item() - var) < 5 * math.sqrt((mu4 - var ** 2) / n)
    assert scipy_stats.kstest(x.numpy(), scipy_stats.beta(a, b).cdf).pvalue > 1e-3


def test_dirichlet_sampler():
    alphas = [0.5, 1.0, 2.5]
    w = sample_dirichlet(uniforms(30000, 3 * GAMMA_DRAWS), alphas)
    assert torch.allclose(w.sum(1), torch.ones(len(w), dtype=torch.float64))
    expected = torch.tensor(alphas, dtype=torch.float64) / sum(alphas)
    assert torch.allclose(w.mean(0), expected, atol=0.01)


# -- MixUp -----------------------------------------------------------------------------------

class TestMixUp:
    def test_pixels_and_labels_follow_each_samples_weight(self):
        images, labels = float_batch(), torch.arange(8) % 5
        mix = T.MixUp(alpha=0.4, num_classes=5)
        out, soft = mix(images, labels, seed=3)
        p = params_of(mix, images, seed=3)
        lam = p.lam.float().reshape(-1, 1, 1, 1)
        assert torch.allclose(out, lam * images + (1 - lam) * images[p.partner], atol=1e-6)
        onehot = torch.nn.functional.one_hot(labels, 5).float()
        lam = p.lam.float().reshape(-1, 1)
        assert torch.allclose(soft, lam * onehot + (1 - lam) * onehot[p.partner], atol=1e-6)
        assert soft.shape == (8, 5) and torch.allclose(soft.sum(1), torch.ones(8))

    def test_per_sample_weights_and_a_random_cycle_of_partners(self):
        p = params_of(T.MixUp(num_classes=3), torch.zeros(64, 1, 2, 2))
        assert len(set(p.lam.tolist())) == 64
        assert sorted(p.partner.tolist()) == list(range(64))          # a permutation
        seen, b = set(), 0
        for _ in range(64):                                           # ... and one single cycle
            seen.add(b)
            b = int(p.partner[b])
        assert len(seen) == 64 and b == 0
        assert not torch.equal(p.partner, torch.arange(64).roll(1))

    def test_matches_torchvision_with_its_pairing_and_weight(self):
        images, labels = float_batch(6), torch.tensor([0, 1, 2, 3, 1, 0])
        tv = v2.MixUp(alpha=1.0, num_classes=4)
        tv.make_params = lambda flat_inputs: dict(lam=0.3)
        ref_images, ref_labels = tv(images, labels)
        # torchvision mixes sample b with sample b - 1 (batch.roll(1, 0)) with one lam.
        params = MixParams(partner=(torch.arange(6) - 1) % 6, lam=torch.full((6,), 0.3, dtype=torch.float64))
        ours_images, ours_labels = T.MixUp(alpha=1.0, num_classes=4).apply(images, labels, params)
        assert torch.allclose(ours_images, ref_images, atol=1e-6)
        assert torch.allclose(ours_labels, ref_labels, atol=1e-6)

    def test_soft_labels_uint8_images_and_tuple_input(self):
        images = (float_batch(4) * 255).round().to(torch.uint8)
        soft_in = torch.softmax(torch.randn(4, 6), dim=1)
        out, soft = T.MixUp(num_classes=6)((images, soft_in), seed=0)
        assert out.dtype == torch.uint8 and out.shape == images.shape
        assert torch.allclose(soft.sum(1), torch.ones(4), atol=1e-6)

    def test_reproducible_from_seed_epoch_indices(self):
        images, labels = float_batch(), torch.arange(8)
        mix = T.MixUp(num_classes=8)
        a = mix(images, labels, seed=1, epoch=2, indices=range(10, 18))
        b = mix(images, labels, seed=1, epoch=2, indices=range(10, 18))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], mix(images, labels, seed=1, epoch=3, indices=range(10, 18))[0])
        torch.manual_seed(4)
        c = mix(images, labels)
        torch.manual_seed(4)
        assert torch.equal(c[0], mix(images, labels)[0])

    def test_input_validation(self):
        images = float_batch(2)
        with pytest.raises(ValueError, match="num_classes must be passed"):
            T.MixUp()(images, torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="batch size"):
            T.MixUp(num_classes=3)(images, torch.tensor([0, 1, 2]))
        with pytest.raises(ValueError, match="must match num_classes"):
            T.MixUp(num_classes=3)(images, torch.zeros(2, 4))
        with pytest.raises(ValueError):
            T.MixUp(alpha=0.0)


# -- CutMix ----------------------------------------------------------------------------------

class TestCutMix:
    def test_pasted_fraction_equals_one_minus_lam_exactly(self):
        images, labels = constant_batch(16, 20, 24), torch.arange(16)
        mix = T.CutMix(alpha=1.0, num_classes=16)
        out, soft = mix(images, labels, seed=9)
        p = params_of(mix, images, seed=9)
        assert len(set(p.lam.tolist())) > 8, "each sample its own box"
        for b in range(16):
            from_partner = (out[b, 0] == float(p.partner[b])).double().mean().item()
            kept = (out[b, 0] == float(b)).double().mean().item()
            assert from_partner + kept == 1.0
            assert from_partner == pytest.approx(1 - p.lam[b].item(), abs=1e-12)
            assert soft[b, b].item() == pytest.approx(p.lam[b].item(), abs=1e-6)
            assert soft[b, int(p.partner[b])].item() == pytest.approx(1 - p.lam[b].item(), abs=1e-6)
        assert torch.allclose(soft.sum(1), torch.ones(16))

    def test_box_follows_torchvisions_rule(self):
        h, w = 30, 40
        p = params_of(T.CutMix(num_classes=2), torch.zeros(2000, 1, h, w))
        x1, y1, x2, y2 = p.box.unbind(1)
        assert ((0 <= x1) & (x1 <= x2) & (x2 <= w) & (0 <= y1) & (y1 <= y2) & (y2 <= h)).all()
        area = ((x2 - x1) * (y2 - y1)).double()
        assert torch.allclose(p.lam, 1 - area / (h * w))
        # Unclipped boxes have even sides 2 * int(0.5 * sqrt(1 - lam_drawn) * side).
        inside = (x1 > 0) & (x2 < w) & (y1 > 0) & (y2 < h)
        assert inside.any() and ((x2 - x1)[inside] % 2 == 0).all() and ((y2 - y1)[inside] % 2 == 0).all()

    def test_matches_torchvision_with_its_pairing_and_box(self):
        images, labels = float_batch(5, 16, 20), torch.tensor([0, 1, 2, 0, 1])
        box, lam = (3, 2, 15, 11), 1 - (12 * 9) / (16 * 20)
        tv = v2.CutMix(num_classes=3)
        tv.make_params = lambda flat_inputs: dict(box=box, lam_adjusted=lam)
        ref_images, ref_labels = tv(images, labels)
        params = MixParams(partner=(torch.arange(5) - 1) % 5, lam=torch.full((5,), lam, dtype=torch.float64),
                           box=torch.tensor([box] * 5))
        ours_images, ours_labels = T.CutMix(num_classes=3).apply(images, labels, params)
        assert torch.equal(ours_images, ref_images)
        assert torch.allclose(ours_labels, ref_labels, atol=1e-6)

    def test_uint8_and_batch_of_one(self):
        images = (float_batch(1) * 255).to(torch.uint8)
        out, soft = T.CutMix(num_classes=3)(images, torch.tensor([2]), seed=0)
        assert torch.equal(out, images) and soft.tolist() == [[0.0, 0.0, 1.0]]
