"""Pre-merge property: the class path with the binary scheme gives exactly the binary path's numbers."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.evaluation import evaluate as E
from diffuseg.evaluation.labelmaps import add_class_calibration
from diffuseg.labels import LabelScheme


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        (math.isnan(x) and math.isnan(y)) if isinstance(x, float) and math.isnan(x) else x == y
        for x, y in zip(a.values(), b.values())
    )


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 6),
    st.integers(1, 4),
    st.sampled_from([(5, 6), (4, 5, 3)]),
)
def test_binary_scheme_class_path_is_the_binary_path(seed, members, annotators, shape):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.rand(1 + annotators + members, *shape, generator=g) > torch.rand(1, *[1] * len(shape), generator=g)
    atoms = atoms.to(torch.uint8)
    if seed % 3 == 0:
        atoms[0] = 0  # an empty fused mask: the empty-mask policy must agree too
    fused, annotations = atoms[0], atoms[1 : 1 + annotators]
    samples = atoms[1 + annotators :] if members else None
    spacing = (0.5, 2.0, 1.5)[: len(shape)]
    binary = E.case_metrics(
        fused.bool(), annotations.bool(), None if samples is None else samples.bool(), spacing, (2, 4), 5, 90.0
    )
    classes = E.class_case_metrics(LabelScheme(), fused, annotations, samples, spacing, (2, 4), 5, 90.0)
    assert _same(binary, classes), (binary, classes)
    if samples is not None and len(shape) == 2:
        old = {k: torch.zeros(5, 3, dtype=torch.float64) for k in ("all", "foreground")}
        new = {
            k: torch.zeros(5, 3, dtype=torch.float64)
            for k in ("all", "foreground", "all/foreground", "foreground/foreground")
        }
        E._add_calibration(old, samples.bool(), annotations.bool(), 5)
        add_class_calibration(new, LabelScheme(), samples, annotations, 5)
        assert all(torch.equal(old[k], new[k]) for k in old)
