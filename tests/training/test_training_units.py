"""Pieces of the training machinery checked by hand: LR schedule, data stream, precision, resume checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffuseg.config import load_config
from diffuseg.errors import UserError
from diffuseg.training.module import lr_factor, step_seed
from diffuseg.training.run import StreamBatchSampler, check_resumable, resolve_precision


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


def _batches(sampler: StreamBatchSampler) -> list:
    return list(iter(sampler))


def test_stream_resumes_with_the_same_batches():
    full = _batches(StreamBatchSampler(7, 3, seed=1, total_steps=10, start_step=0, start_position=0))
    tail = _batches(StreamBatchSampler(7, 3, seed=1, total_steps=10, start_step=4, start_position=4 * 3))
    assert len(full) == 10 and tail == full[4:]


def test_stream_epochs_are_permutations():
    batches = _batches(StreamBatchSampler(6, 2, seed=0, total_steps=6, start_step=0, start_position=0))
    items = [key for batch in batches for key in batch]
    for epoch in (0, 1):
        assert sorted(i for i, e in items if e == epoch) == list(range(6))


def test_stream_splits_global_batches_between_ranks(monkeypatch):
    single = _batches(StreamBatchSampler(10, 4, seed=3, total_steps=3, start_step=0, start_position=0))
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        per_rank.append(_batches(StreamBatchSampler(10, 2, seed=3, total_steps=3, start_step=0, start_position=0)))
    # with 2 ranks of 2 items, step s covers the same 4 stream items as one process with batch 4
    for step in range(2):
        assert per_rank[0][step] + per_rank[1][step] == single[step]


def test_precision_auto_on_cpu(monkeypatch):
    from diffuseg.training import run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "native_bf16", lambda device: False)  # e.g. AVX2 only: bf16 would be emulated
    assert resolve_precision("auto", "auto") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    monkeypatch.setattr(run, "native_bf16", lambda device: True)  # AVX512-BF16 or AMX
    assert resolve_precision("auto", "cpu") == "bf16-mixed"
    assert resolve_precision("32-true", "cpu") == "32-true"
    with pytest.raises(UserError, match=r"train\.precision"):
        resolve_precision("fp8", "auto")


def test_precision_auto_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", "gpu") == "16-mixed"
    with pytest.warns(UserWarning, match="no bf16"):
        assert resolve_precision("bf16-mixed", "auto") == "16-mixed"


def test_check_resumable_allows_run_control_only():
    base = load_config("lidc-central")
    allowed = load_config("lidc-central", ["train.steps=10", "train.devices=4", "sample.steps=3"])
    check_resumable(base, allowed, Path("x"))
    with pytest.raises(UserError, match=r"(?s)diffusion\.input_scale.*model\.name"):
        check_resumable(base, load_config("lidc-central", ["diffusion.input_scale=0.5", "model.name=unet"]), Path("x"))


@pytest.mark.parametrize(("micro_batch", "rows_per_pass"), [(0, [2, 2]), (1, [1, 1, 1, 1])])
def test_sampled_validation_splits_members_as_predict_does(monkeypatch, micro_batch: int, rows_per_pass: list):
    """Validation draws with ``sample.micro_batch`` as predict does: 2 images x 1 member, 2 DDPM steps ->
    one per-member pass of 2 rows per network call, or one pass per row with micro_batch=1."""
    from diffuseg.nets.medsegdiff import MedSegDiff
    from diffuseg.training.callbacks import SampledValidation
    from diffuseg.training.module import module_class

    overrides = ["data.image_size=32", "model.options.base_channels=4", "sample.sampler=ddpm", "sample.steps=2"]
    config = load_config("medsegdiff-s-ddti", [*overrides, f"sample.micro_batch={micro_batch}"])
    module = module_class(config.method)(config)
    items = [
        {"case_id": f"c{i}", "image": torch.randn(1, 32, 32), "masks": (torch.rand(1, 32, 32) > 0.5).float()}
        for i in range(2)
    ]
    rows = []
    member_stages = MedSegDiff._member_stages

    def counted(self, x_t, *args):
        rows.append(len(x_t))
        return member_stages(self, x_t, *args)

    monkeypatch.setattr(MedSegDiff, "_member_stages", counted)
    scores = SampledValidation(items, every=1, cases=2).evaluate(module)
    assert rows == rows_per_pass
    assert 0 <= scores["dice"] <= 1
