"""Multi-label STAPLE against SimpleITK's MultiLabelSTAPLEImageFilter, its reduction to the binary STAPLE at one
label, and its degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from raterdata import label_raters

from diffuseg.inference.fusion.label_staple import label_staple
from diffuseg.inference.fusion.raters import one_hot
from diffuseg.inference.fusion.staple import staple

sitk = pytest.importorskip("SimpleITK")


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
    a = _untie(label_raters(np.random.default_rng(seed), r, 40, labels, flip), labels)
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
    a = torch.from_numpy(label_raters(np.random.default_rng(seed), r, 32, 1, flip))[None]
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
    cases = [label_raters(rng, 7, 24, 2, f) for f in (0.0, 0.05, 0.3)]
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


def test_label_staple_float32_close_to_float64() -> None:
    a = torch.from_numpy(label_raters(np.random.default_rng(8), 10, 48, 3, 0.05))[None]
    want = label_staple(a, 3)
    got = label_staple(a, 3, dtype=torch.float32)
    torch.testing.assert_close(got.probability.double(), want.probability, rtol=0, atol=1e-4)
    assert (got.labels() != want.labels()).sum() <= 2  # only pixels whose two best labels are within rounding


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_label_staple_on_cuda_equals_cpu() -> None:
    a = torch.from_numpy(np.stack([label_raters(np.random.default_rng(s), 9, 32, 3, 0.1) for s in (9, 10)]))
    cpu = label_staple(a, 3)
    gpu = label_staple(a.cuda(), 3)
    torch.testing.assert_close(gpu.probability.cpu(), cpu.probability, rtol=0, atol=1e-9)
    assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
