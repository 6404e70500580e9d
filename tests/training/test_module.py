"""The shared training machinery of ``training.module``: LR schedule, step seeds, the table of families."""

from __future__ import annotations

import math

import pytest

from diffuseg.enums import Method
from diffuseg.training.module import MODULES, lr_factor, module_class, schedule_lengths, step_seed


def test_lr_factor_warmup_constant_cosine():
    # 4 warm-up steps, 100 total, cosine over the last 10
    assert [lr_factor(s, 4, 10, 100) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(50, 4, 10, 100) == 1.0
    assert lr_factor(90, 4, 10, 100) == 1.0  # decay starts: cos(0)
    assert lr_factor(95, 4, 10, 100) == pytest.approx(0.5)  # half-way: (1 + cos(pi/2)) / 2
    assert lr_factor(99, 4, 10, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert lr_factor(7, 0, 0, 100) == 1.0


def test_step_seed_is_stable_and_distinct():
    assert step_seed(0, 0, 5) == step_seed(0, 0, 5)
    assert len({step_seed(0, r, s) for r in range(4) for s in range(50)}) == 200


def test_the_table_has_one_module_per_method():
    assert set(MODULES) == set(Method)
    assert all(cls.method is method and module_class(str(method)) is cls for method, cls in MODULES.items())
    with pytest.raises(ValueError, match="diffusion"):
        module_class("gan")


def test_a_schedule_longer_than_the_run_is_shortened_to_fill_it():
    assert schedule_lengths(500, 15000, 60000) == (500, 15000)  # fits: as given
    warmup, decay = schedule_lengths(500, 15000, 600)
    assert (warmup, decay) == (19, 581) and warmup + decay == 600
    assert lr_factor(warmup, warmup, decay, 600) == 1.0  # full rate after warm-up, not ~0 from the first step
    assert lr_factor(0, *schedule_lengths(0, 10, 4), 4) == 1.0
