"""The Trainer of a run: the precision ``auto`` resolves to, and the training bar (global step out of train.steps
from the first step, and after a resume)."""

from __future__ import annotations

import io

import pytest
import torch
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from diffuseg.errors import UserError
from diffuseg.training import trainer
from diffuseg.training.run import train
from diffuseg.training.trainer import StepProgressBar, resolve_precision


@pytest.fixture
def bar_log(monkeypatch):
    """Records (description, n, total, initial) of the training bar after every step."""
    log: list[tuple[str, int, int, int]] = []
    original = StepProgressBar.on_train_batch_end

    def recording(self, trainer, pl_module, *args):
        original(self, trainer, pl_module, *args)
        b = self.train_progress_bar
        log.append((b.desc, b.n, b.total, b.initial))

    monkeypatch.setattr(StepProgressBar, "on_train_batch_end", recording)
    return log


def test_bar_counts_global_steps_from_the_first(tiny_config, bar_log):
    train(tiny_config(steps=4, ckpt_every=2))
    assert [n for _, n, _, _ in bar_log] == [1, 2, 3, 4]
    assert {(desc, total, initial) for desc, _, total, initial in bar_log} == {("train", 4, 0)}


def test_bar_after_resume_starts_at_the_checkpoint_step(tiny_config, bar_log):
    train(tiny_config(steps=3, ckpt_every=3))
    bar_log.clear()
    train(tiny_config(steps=6, ckpt_every=3), resume=True)
    assert [n for _, n, _, _ in bar_log] == [4, 5, 6]
    assert {(desc, total, initial) for desc, _, total, initial in bar_log} == {("train", 6, 3)}
    bar_log.clear()
    train(tiny_config(steps=8, ckpt_every=3), resume=True)  # a second resume: still one bar, no epoch count
    assert [n for _, n, _, _ in bar_log] == [7, 8]
    assert {(desc, total, initial) for desc, _, total, initial in bar_log} == {("train", 8, 6)}


def test_bar_rate_covers_only_this_session():
    """tqdm's rate and ETA use n - initial: a bar resumed at step 3 and now at 5 has done 2 steps."""
    bar = Tqdm(total=10, initial=3, disable=False, file=io.StringIO())
    bar.n = 5
    info = bar.format_dict
    bar.close()
    assert (info["n"], info["initial"], info["total"]) == (5, 3, 10)
    assert info["rate"] is None  # so format_meter computes (n - initial) / elapsed


def test_precision_auto_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(trainer, "native_bf16", lambda device: False)  # e.g. AVX2 only: bf16 would be emulated
    assert resolve_precision("auto", "auto") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    monkeypatch.setattr(trainer, "native_bf16", lambda device: True)  # AVX512-BF16 or AMX
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
