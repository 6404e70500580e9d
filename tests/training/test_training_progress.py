"""The training bar: global step out of train.steps from the first step, and after a resume."""

from __future__ import annotations

import io

import pytest
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from diffuseg.training.run import StepProgressBar, train


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
