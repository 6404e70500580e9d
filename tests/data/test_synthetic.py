"""The synthetic dataset: its annotators follow the distribution it reports."""

from __future__ import annotations

import torch

from diffuseg.data.formats import open_dataset
from diffuseg.data.synthetic import SyntheticSpec, synthetic_case, true_distribution, write_synthetic


def test_true_distribution_is_a_distribution():
    spec = SyntheticSpec(size=24, radius_jitter=2)
    for i in range(10):
        modes, probs = true_distribution(i, spec, seed=1)
        assert modes.shape == (4, 24, 24) and abs(float(probs.sum()) - 1.0) < 1e-12
        assert int(modes[0].sum()) == 0  # the "not marked" mode
        assert modes[1].sum() < modes[2].sum() < modes[3].sum()  # radius r-2 < r < r+2
        assert torch.all(modes[1] <= modes[2]) and torch.all(modes[2] <= modes[3])  # nested discs


def test_annotators_follow_the_reported_distribution():
    spec = SyntheticSpec(size=16, annotators=8)
    counts = torch.zeros(4, dtype=torch.float64)
    expected = torch.zeros(4, dtype=torch.float64)
    for i in range(150):
        case = synthetic_case(i, spec, seed=2)
        modes, probs = true_distribution(i, spec, seed=2)
        expected += probs * spec.annotators
        for mask in case.masks:
            matches = [m for m in range(4) if torch.equal(modes[m], mask)]
            assert len(matches) == 1
            counts[matches[0]] += 1
    # 1200 draws: each mode's frequency within 4 standard errors of its expectation
    n = counts.sum()
    p = expected / n
    assert torch.all((counts / n - p).abs() <= 4 * torch.sqrt(p * (1 - p) / n))


def test_deterministic_and_visible():
    a, b = synthetic_case(5, seed=7), synthetic_case(5, seed=7)
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.image, synthetic_case(5, seed=8).image)
    modes, _ = true_distribution(5, seed=7)
    inside = a.image[0][modes[2].bool()].mean()
    outside = a.image[0][~modes[3].bool()].mean()
    assert inside > outside  # the lesion is brighter, more so the more likely annotators mark it


def test_written_dataset_reads_back(tmp_path):
    for layout in ("lidc", "multi"):
        root = write_synthetic(tmp_path / layout, 5, SyntheticSpec(size=16), seed=0, layout=layout)
        reader = open_dataset(root)
        assert reader.layout == layout and len(reader) == 5
        case = reader[0]
        assert torch.equal(case.masks, synthetic_case(0, SyntheticSpec(size=16), seed=0).masks)
