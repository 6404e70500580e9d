"""Per-class metrics on hand-computed 4x4 label maps, BraTS-like regions, the distance over classes, and the
reduction of every function to its binary counterpart in evaluation.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffuseg.config import EvalConfig
from diffuseg.evaluation import class_metrics as C
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import case_metrics
from diffuseg.labels import LabelScheme

FOUR = EvalConfig(ged_samples=(4,))  # GED at 4 members

PRED = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 3]])
GT = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 3, 3, 3]])


def classes(atoms: torch.Tensor, labels: int = 3, dims: int = 2) -> torch.Tensor:
    """Exclusive classes: one mask per atom 1..labels, ``(..., K, *S)`` bool with ``dims`` spatial axes (a
    stand-in for ``LabelScheme.class_masks``)."""
    return torch.stack([atoms == k for k in range(1, labels + 1)], dim=-1 - dims)


def regions(atoms: torch.Tensor) -> torch.Tensor:
    """BraTS-like regions of atoms 1 (necrosis), 2 (oedema), 3 (enhancing): WT {1,2,3}, TC {1,3}, ET {3}."""
    return torch.stack([atoms > 0, (atoms == 1) | (atoms == 3), atoms == 3], dim=-3)


def test_per_class_dice_iou_by_hand() -> None:
    # class 1: |P| 4, |G| 5, overlap 4; class 2: 3, 2, 2; class 3: 1, 3, 1
    dice = C.class_dice(classes(PRED), classes(GT))
    iou = C.class_iou(classes(PRED), classes(GT))
    assert dice.tolist() == pytest.approx([8 / 9, 4 / 5, 1 / 2])
    assert iou.tolist() == pytest.approx([4 / 5, 2 / 3, 1 / 3])
    assert float(C.class_mean(iou)) == pytest.approx(0.6)
    assert float(C.class_mean(dice)) == pytest.approx((8 / 9 + 4 / 5 + 1 / 2) / 3)


def test_region_metrics_by_hand() -> None:
    # WT: |P| 8, |G| 10, overlap 8; TC: 5, 8, 5; ET: 1, 3, 1
    dice = C.class_dice(regions(PRED), regions(GT))
    assert dice.tolist() == pytest.approx([16 / 18, 10 / 13, 1 / 2])


def test_per_class_empty_policy() -> None:
    pred, gt = PRED.clone(), GT.clone()
    pred[pred == 3], gt[gt == 3] = 0, 0  # class 3 absent from both
    pred[pred == 2] = 0  # class 2 only in the ground truth
    p, g = classes(pred), classes(gt)
    assert C.class_dice(p, g).tolist() == pytest.approx([8 / 9, 0.0, 1.0])
    assert C.class_iou(p, g).tolist() == pytest.approx([4 / 5, 0.0, 1.0])
    hd = C.class_hd95(p, g)
    assert math.isnan(hd[1]) and hd[2] == 0.0
    assert C.class_hd95(p, g, one_empty="diagonal")[1].item() == pytest.approx(math.sqrt(32))
    assert float(C.class_mean(hd)) == pytest.approx((hd[0].item() + 0.0) / 2)  # NaN class left out
    assert math.isnan(float(C.class_mean(torch.tensor([math.nan, math.nan]))))


def test_per_class_hd95_by_hand_2d_and_3d_with_spacing() -> None:
    # class 3: P = {(3,3)}, G = {(3,1),(3,2),(3,3)}: G -> P distances 2, 1, 0 -> 95th percentile 1.9
    assert C.class_hd95(classes(PRED), classes(GT))[2].item() == pytest.approx(1.9)
    assert C.class_hd95(classes(PRED), classes(GT), spacing=(1.0, 2.0))[2].item() == pytest.approx(3.8)
    g = torch.Generator().manual_seed(0)
    p3, g3 = torch.randint(0, 3, (5, 6, 7), generator=g), torch.randint(0, 3, (5, 6, 7), generator=g)
    got = C.class_hd95(classes(p3, 2, 3), classes(g3, 2, 3), spacing=(2.5, 1.0, 0.5))
    want = [M.hd95(p3 == k, g3 == k, (2.5, 1.0, 0.5)) for k in (1, 2)]
    assert got.tolist() == want
    assert C.class_dice(classes(p3, 2, 3), classes(g3, 2, 3), dims=3).shape == (2,)


def test_pairwise_mean_iou_by_hand() -> None:
    a = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    b = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    a[0, 0, 0, :2], b[0, 0, 0, 1:3] = True, True  # class 1: IoU 1/3
    a[0, 1, 2, 2] = b[0, 1, 2, 2] = True  # class 2: IoU 1; class 3 absent from both
    assert C.pairwise_mean_iou(a, b).item() == pytest.approx((1 / 3 + 1) / 2)
    assert C.pairwise_mean_iou(a, b, "all").item() == pytest.approx((1 / 3 + 1 + 1) / 3)
    empty = torch.zeros(2, 3, 4, 4, dtype=torch.bool)
    assert C.pairwise_mean_iou(empty, empty).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="present, all"):
        C.pairwise_mean_iou(a, b, "some")


def test_ged_over_classes_by_hand_and_properties() -> None:
    # one sample equal to annotation 0, annotations at mIoU distance d from each other
    y = classes(torch.stack([PRED, GT]))  # (2, 3, 4, 4)
    d = 1 - (4 / 5 + 2 / 3 + 1 / 3) / 3
    s = y[:1]
    # biased: 2 * mean(0, d) - 0 - mean(0, d, d, 0) = d - d / 2
    assert C.class_ged(s, y, unbiased=False) == pytest.approx(d / 2)
    assert C.class_ged(y, y, unbiased=False) == 0.0
    assert C.class_diversity(y) == pytest.approx(d)
    assert C.class_hungarian_iou(y, y.flip(0)) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_one_class_is_the_binary_metric_exactly(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    samples = torch.rand(8, 1, 6, 6, generator=g) > torch.rand(8, 1, 1, 1, generator=g)
    annotations = torch.rand(3, 1, 6, 6, generator=g) > torch.rand(3, 1, 1, 1, generator=g)
    samples[0] = False  # an empty sample: the empty-mask policy must agree too
    annotations[1] = False
    binary = M.SampleSet(samples[:, 0], annotations[:, 0])
    for average in ("present", "all"):
        multi = C.ClassSampleSet(samples, annotations, average)
        assert torch.equal(multi.iou, binary.iou)
        for unbiased in (True, False):
            assert multi.ged(unbiased) == binary.ged(unbiased)
            assert multi.ged_at(4, unbiased) == binary.ged_at(4, unbiased)
        assert multi.diversity() == binary.diversity()
        assert multi.hungarian_iou() == binary.hungarian_iou()
    fused = samples[1]
    assert torch.equal(C.class_dice(fused, annotations[0]), M.dice(fused, annotations[0]))
    assert torch.equal(C.class_iou(fused, annotations[0]), M.iou(fused, annotations[0]))
    assert C.class_hd95(fused, annotations[0]).tolist() == [M.hd95(fused[0], annotations[0, 0])]
    assert C.class_ece(samples, annotations, 10).tolist() == pytest.approx([M.ece(samples[:, 0], annotations[:, 0])])
    assert torch.equal(
        C.class_calibration_bins(samples, annotations)[0],
        M.calibration_bins(samples[:, 0].double().mean(0), annotations[:, 0].double().mean(0)),
    )
    want = case_metrics(samples, fused, annotations, LabelScheme(), FOUR)
    got = C.combine_classes({"foreground": want}) | C.class_set_metrics(samples, annotations, (4,))
    assert got == pytest.approx(want, nan_ok=True) and list(got) == list(want)


def test_case_metrics_over_classes() -> None:
    g = torch.Generator().manual_seed(5)
    atoms = torch.randint(0, 4, (6, 8, 8), generator=g)
    samples, annotations, fused = classes(atoms[:4]), classes(atoms[4:]), classes(atoms[0])
    names = ("RV", "Myo", "LV")
    per = {
        n: case_metrics(samples[:, k : k + 1], fused[k : k + 1], annotations[:, k : k + 1], LabelScheme(), FOUR)
        for k, n in enumerate(names)
    }
    row = C.combine_classes(per) | C.class_set_metrics(samples, annotations, (4,))
    dice = C.class_dice(fused[None], annotations).mean(0)  # per class, mean over the 2 annotators
    assert [row[f"dice/{n}"] for n in names] == pytest.approx(dice.tolist())
    assert row["dice"] == pytest.approx(float(dice.mean()))
    assert row["samples"] == 4 and "samples/RV" not in row
    assert row["ged"] == pytest.approx(C.class_ged(samples, annotations))
    assert row["ged/LV"] == pytest.approx(M.ged(samples[:, 2], annotations[:, 2]))  # per-class binary GED
    assert row["ece"] == pytest.approx(float(C.class_ece(samples, annotations).mean()))
    assert all(isinstance(v, (int, float)) for v in row.values())
    with pytest.raises(ValueError, match="no classes"):
        C.combine_classes({})


def test_rejects_masks_without_a_class_axis() -> None:
    with pytest.raises(ValueError, match=r"class masks \(\.\.\., C, \*S\)"):
        C.class_dice(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="differ"):
        C.pairwise_mean_iou(torch.zeros(2, 3, 4, 4), torch.zeros(2, 2, 4, 4))


def test_masks_from_numpy_and_floats() -> None:
    p = classes(PRED).numpy().astype(np.float32) * 0.9  # 0.9 > 0.5: the same masks
    assert C.class_dice(p, classes(GT)).tolist() == pytest.approx([8 / 9, 4 / 5, 1 / 2])
