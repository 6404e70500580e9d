"""Label-map fusion: multi-label STAPLE against SimpleITK's MultiLabelSTAPLEImageFilter, its binary reduction
to the binary STAPLE, votes by hand, the uncertainty extremes, per-class relative area, and fuse's dispatch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuseg.inference.ensemble import uncertainty_map
from diffuseg.inference.fusion import fuse, majority_vote, mean_threshold, staple
from diffuseg.inference.label_fusion import (
    class_uncertainty,
    label_frequencies,
    label_staple,
    mean_argmax,
    normalised_entropy,
    one_hot,
    plurality_vote,
)
from diffuseg.inference.postprocess import (
    relative_area,
    relative_area_classes,
    relative_area_keep_labels,
    relative_area_labels,
)

sitk = pytest.importorskip("SimpleITK")


def _raters(rng: np.random.Generator, r: int, size: int, labels: int, flip: float) -> np.ndarray:
    """``r`` label maps (R, size, size) of one truth (a disc per label), each disc jittered, and a fraction
    ``flip`` of pixels set to a random label: raters that disagree as real ones do."""
    yy, xx = np.mgrid[:size, :size]
    centres = size * (0.25 + 0.5 * rng.random((labels, 2)))
    radii = size / 8 * (1 + rng.random(labels))
    out = []
    for _ in range(r):
        m = np.zeros((size, size), np.int64)
        for label in range(labels):
            c = centres[label] + rng.normal(0, size / 40, 2)
            rad = radii[label] + rng.normal(0, size / 60)
            m[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= rad**2] = label + 1
        noise = rng.random((size, size)) < flip
        m[noise] = rng.integers(0, labels + 1, int(noise.sum()))
        out.append(m)
    return np.stack(out)


def _untie(a: np.ndarray, labels: int) -> np.ndarray:
    """Break every tie of the plurality vote (one rater moves to the first tied label). ITK's voting start
    leaves tied pixels out in ITK 5.4 but wrote them into a wrong matrix entry before: without ties both agree."""
    a = a.copy()
    counts = np.stack([(a == label).sum(0) for label in range(labels + 1)])
    top = counts.max(0)
    for y, x in zip(*np.nonzero((counts == top).sum(0) > 1)):
        first = int(np.argmax(counts[:, y, x] == top[y, x]))
        a[int(np.argmax(a[:, y, x] != first)), y, x] = first
    return a


def _sitk_label_staple(a: np.ndarray, labels: int, tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    f = sitk.MultiLabelSTAPLEImageFilter()
    f.SetTerminationUpdateThreshold(tol)
    f.SetMaximumNumberOfIterations(max_iter)
    out = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in a]))
    # one (L + 2) x (L + 1) matrix per rater: rows the rater's label plus a spare "reject" row, columns the truth
    theta = np.stack([np.asarray(f.GetConfusionMatrix(j)).reshape(labels + 2, labels + 1) for j in range(len(a))])
    return out, theta


@pytest.mark.parametrize(
    ("r", "labels", "flip", "seed"),
    [(5, 2, 0.05, 0), (8, 3, 0.1, 1), (3, 2, 0.2, 2), (12, 4, 0.05, 3), (25, 3, 0.3, 4), (4, 1, 0.1, 5)],
)
def test_label_staple_matches_simpleitk(r: int, labels: int, flip: float, seed: int) -> None:
    """Like with like: our ``init="vote"`` is ITK's start; SimpleITK's prior is the label frequencies (ours);
    its threshold (``< tol``) and iteration cap are set to ours; maps without vote ties; every label occurs, so
    ITK's label count (largest value + 1) is ``L + 1``. ITK's undecided label (``L + 1``, a posterior tie) is
    compared with a tie of our posterior."""
    a = _untie(_raters(np.random.default_rng(seed), r, 40, labels, flip), labels)
    assert a.max() == labels
    want, theta = _sitk_label_staple(a, labels, 1e-5, 100)
    got = label_staple(torch.from_numpy(a)[None], labels, init="vote", tol=1e-5, max_iter=100)
    np.testing.assert_allclose(got.confusion[0].numpy(), theta[:, : labels + 1], atol=1e-10)
    assert not theta[:, labels + 1].any()  # nobody says the reject label
    undecided = want == labels + 1
    assert np.array_equal(got.labels()[0].numpy()[~undecided], want[~undecided])
    top2 = got.probability[0].topk(2, dim=0).values
    assert torch.allclose(top2[0][torch.from_numpy(undecided)], top2[1][torch.from_numpy(undecided)])
    freq = np.stack([(a == s).mean() for s in range(labels + 1)])
    np.testing.assert_allclose(got.prior[0].numpy(), freq)


@pytest.mark.parametrize(("r", "flip", "seed"), [(5, 0.02, 0), (9, 0.1, 1), (1, 0.05, 2), (30, 0.01, 3)])
def test_label_staple_with_one_label_is_the_binary_staple(r: int, flip: float, seed: int) -> None:
    a = torch.from_numpy(_raters(np.random.default_rng(seed), r, 32, 1, flip))[None]
    binary = staple(a, max_iter=50)
    multi = label_staple(a, 1, max_iter=50)
    torch.testing.assert_close(multi.probability[:, 1], binary.probability, rtol=0, atol=1e-12)
    torch.testing.assert_close(multi.confusion[:, :, 1, 1], binary.sensitivity, rtol=0, atol=1e-12)
    torch.testing.assert_close(multi.confusion[:, :, 0, 0], binary.specificity, rtol=0, atol=1e-12)
    assert torch.equal(multi.iterations, binary.iterations) and torch.equal(multi.converged, binary.converged)
    assert multi.prior[0, 1].item() == pytest.approx(binary.prior[0].item())
    away = (binary.probability - 0.5).abs() > 1e-9  # W = 0.5 exactly: background here, foreground there
    assert torch.equal(multi.labels()[away], binary.mask()[away].long())


def test_label_staple_batch_equals_one_by_one_and_3d() -> None:
    rng = np.random.default_rng(7)
    cases = [_raters(rng, 7, 24, 2, f) for f in (0.0, 0.05, 0.3)]
    batch = label_staple(torch.from_numpy(np.stack(cases)), 2)
    for i, case in enumerate(cases):
        one = label_staple(torch.from_numpy(case)[None], 2)
        torch.testing.assert_close(batch.probability[i], one.probability[0], rtol=0, atol=1e-12)
        assert batch.iterations[i] == one.iterations[0]
    vol = label_staple(torch.from_numpy(np.stack(cases, 1))[None], 2)  # one case, 7 raters of a 3 x 24 x 24 volume
    assert vol.probability.shape == (1, 3, 3, 24, 24)
    torch.testing.assert_close(vol.probability.sum(1), torch.ones(1, 3, 24, 24, dtype=torch.float64))


def test_label_staple_degenerate_cases() -> None:
    truth = torch.zeros(6, 6, dtype=torch.long)
    truth[1:4, 1:3], truth[2:5, 3:6] = 1, 3  # label 2 is used by nobody
    same = label_staple(truth.expand(4, 6, 6)[None], 3)
    assert torch.equal(same.labels()[0], truth)
    assert torch.equal(same.probability[0], one_hot(truth, 3, 0).double())
    assert same.prior[0, 2] == 0
    empty = label_staple(torch.zeros(1, 3, 5, 5, dtype=torch.long), 2)
    assert torch.equal(empty.labels(), torch.zeros(1, 5, 5, dtype=torch.long))
    assert not torch.isnan(empty.probability).any() and not torch.isnan(empty.confusion).any()


def test_label_staple_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"0\.\.2"):
        label_staple(torch.full((1, 2, 3, 3), 3), 2)
    with pytest.raises(ValueError, match="integer"):
        label_staple(torch.zeros(1, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="mean, vote"):
        label_staple(torch.zeros(1, 2, 3, 3, dtype=torch.long), 2, init="best")


def test_plurality_vote_and_mean_by_hand() -> None:
    # 4 raters of a 1 x 4 image: pixel 0 all 2; pixel 1 two 1s, one 2, one 0; pixel 2 ties 1/2; pixel 3 ties 0/3
    a = torch.tensor([[[2, 1, 1, 0]], [[2, 1, 2, 0]], [[2, 2, 1, 3]], [[2, 0, 2, 3]]])[None]
    fused, freq = plurality_vote(a, 3)
    assert fused.tolist() == [[[2, 1, 1, 0]]]
    assert freq[0, :, 0, 1].tolist() == [0.25, 0.5, 0.25, 0.0]
    assert torch.equal(mean_argmax(a, 3)[0], fused)
    soft = one_hot(a, 3, 2).float()
    soft[0, 0, :, 0, 3] = torch.tensor([0.0, 0.0, 0.1, 0.9])  # rater 0 leans to 3 at pixel 3: 3 now wins
    assert mean_argmax(a, 3, soft)[0].tolist() == [[[2, 1, 1, 3]]]
    with pytest.raises(ValueError, match="L \\+ 1"):
        mean_argmax(a, 3, soft[:, :, :3])


def test_votes_with_one_label_are_the_binary_votes() -> None:
    g = torch.Generator().manual_seed(0)
    for r in (1, 2, 3, 4, 7):
        m = (torch.rand(3, r, 9, 9, generator=g) > 0.5).long()
        fused, freq = plurality_vote(m, 1)
        want, frac = majority_vote(m.float())
        assert torch.equal(fused.float(), want)
        torch.testing.assert_close(freq[:, 1], frac)
        assert torch.equal(fuse("vote", m, labels=1)[0], want)


def test_fuse_dispatches_on_labels() -> None:
    a = torch.from_numpy(_raters(np.random.default_rng(3), 5, 16, 3, 0.1))[None]
    fused, prob = fuse("staple", a, labels=3)
    assert fused.dtype == torch.int64 and prob.shape == (1, 4, 16, 16) and prob.dtype == torch.float32
    assert torch.equal(fused, label_staple(a, 3).labels())
    assert torch.equal(fuse("vote", a, labels=3)[0], plurality_vote(a, 3)[0])
    assert torch.equal(fuse("mean", a, labels=3)[1], label_frequencies(a, 3))
    binary = (a > 0).float()
    assert torch.equal(fuse("mean", binary)[0], mean_threshold(binary)[0])  # default labels=1: unchanged
    assert torch.equal(fuse("staple", binary)[0], staple(binary).mask().float())


def test_normalised_entropy_extremes_and_binary_reduction() -> None:
    agree = torch.full((5, 4, 4), 2)
    assert torch.equal(normalised_entropy(agree, 3), torch.zeros(4, 4))
    uniform = torch.arange(4).repeat(2).view(8, 1, 1).expand(8, 3, 3)  # each of labels 0..3 twice
    torch.testing.assert_close(normalised_entropy(uniform, 3), torch.ones(3, 3))
    half = torch.tensor([0, 1, 2, 2]).view(4, 1)  # f = (1/4, 1/4, 1/2, 0)
    want = -(2 * 0.25 * np.log(0.25) + 0.5 * np.log(0.5)) / np.log(4)
    assert normalised_entropy(half, 3).item() == pytest.approx(want, rel=1e-6)
    masks = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).long()
    torch.testing.assert_close(normalised_entropy(masks, 1)[None, 0], uncertainty_map(masks.float(), "entropy"))


def test_class_uncertainty_per_class_and_binary_reduction() -> None:
    masks = (torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    for kind in ("variance", "entropy"):
        assert torch.equal(class_uncertainty(masks, kind), uncertainty_map(masks, kind))
    a = torch.tensor([[1, 1], [1, 2], [1, 0], [1, 2]])  # (K = 4 members, 2 pixels), labels 0..2
    var = class_uncertainty(one_hot(a, 2, 1), "variance")  # (3 classes, 2 pixels)
    assert var.tolist() == [[0.0, 0.1875], [0.0, 0.1875], [0.0, 0.25]]
    assert class_uncertainty(one_hot(a, 2, 1), "entropy")[2].tolist() == [0.0, 1.0]


def test_relative_area_per_label_by_hand() -> None:
    a = torch.zeros(3, 4, 4, dtype=torch.long)  # label 1 areas 8, 1, 4; label 2 areas 2, 4, 0
    a[0, :2], a[1, 0, 0], a[2, 3] = 1, 1, 1
    a[0, 2, :2], a[1, 2] = 2, 2
    keep = relative_area_keep_labels(a, 0.5, 2)
    assert keep.tolist() == [[True, True], [False, True], [True, False]]
    out = relative_area_labels(a, 0.5, 2)
    assert [(out[n] == 1).sum().item() for n in range(3)] == [8, 0, 4]
    assert [(out[n] == 2).sum().item() for n in range(3)] == [2, 4, 0]  # 2 >= 0.5 * 4: kept
    assert torch.equal(out[1] == 0, (a[1] == 0) | (a[1] == 1))  # the dropped label became background
    assert relative_area_labels(a, 0.0, 2) is a
    batched = relative_area_labels(torch.stack([a, a.flip(0)]), 0.5, 2, set_dim=1)
    assert torch.equal(batched[0], out) and torch.equal(batched[1], out.flip(0))


def test_relative_area_per_class_reduces_to_binary() -> None:
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(6, 1, 8, 8, generator=g) > torch.rand(6, 1, 1, 1, generator=g)).float()
    assert torch.equal(relative_area_classes(masks, 0.4), relative_area(masks, 0.4))
    assert torch.equal(relative_area_labels(masks[:, 0].long(), 0.4, 1).float(), relative_area(masks[:, 0], 0.4))
    stack = torch.cat([masks, 1 - masks], 1)  # two overlapping-free classes: each class on its own
    out = relative_area_classes(stack, 0.4)
    assert torch.equal(out[:, 1:], relative_area(stack[:, 1:], 0.4))


def test_label_staple_float32_close_to_float64() -> None:
    a = torch.from_numpy(_raters(np.random.default_rng(8), 10, 48, 3, 0.05))[None]
    want = label_staple(a, 3)
    got = label_staple(a, 3, dtype=torch.float32)
    torch.testing.assert_close(got.probability.double(), want.probability, rtol=0, atol=1e-4)
    assert (got.labels() != want.labels()).sum() <= 2  # only pixels whose two best labels are within rounding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_label_staple_on_cuda_equals_cpu() -> None:
    a = torch.from_numpy(np.stack([_raters(np.random.default_rng(s), 9, 32, 3, 0.1) for s in (9, 10)]))
    cpu = label_staple(a, 3)
    gpu = label_staple(a.cuda(), 3)
    torch.testing.assert_close(gpu.probability.cpu(), cpu.probability, rtol=0, atol=1e-9)
    assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
