"""Callbacks of a training run: periodic atomic checkpoints and sampled validation with the EMA model."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffuseg.checkpoint import LAST
from diffuseg.evaluation.case_metrics import without_ignored
from diffuseg.evaluation.class_metrics import class_dice, class_ged, class_mean
from diffuseg.evaluation.metrics import ged, pairwise_dice
from diffuseg.inference.ensemble import draw_members, use_micro_batch
from diffuseg.labels import LabelScheme
from diffuseg.methods import make_draw
from diffuseg.runtime import resolve_sample_precision
from diffuseg.training.module import SegmentationModule


class PeriodicCheckpoint(L.Callback):
    """Writes ``<dirpath>/last.ckpt`` every ``every`` optimiser steps and at the last step.

    Writing goes through the trainer's checkpoint IO (``AtomicCheckpointIO``: temp file, then rename), so
    the file on disk is always a complete checkpoint. It is written after the EMA update of the step.
    """

    def __init__(self, dirpath: str | Path, every: int, total: int):
        self.path = Path(dirpath) / LAST
        self.every = every
        self.total = total

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning's hook after every optimiser step; saves at every ``every``-th step and at the last.

        Args:
            trainer: the running trainer (its ``global_step`` counts the steps done).
            pl_module: the LightningModule being trained.
            outputs: the training step's output (unused).
            batch: the step's batch (unused).
            batch_idx: the batch's index in the epoch (unused).
        """
        step = trainer.global_step
        if step % self.every == 0 or step >= self.total:
            trainer.save_checkpoint(self.path, weights_only=False)


class SampledValidation(L.Callback):
    """Every ``every`` steps, draws masks for the first ``cases`` validation items with the EMA network.

    Logs ``val/dice``: mean Dice of each sample against each annotator (two empty masks score 1; several
    classes: the mean over classes of the per-class Dice), and with several annotators ``val/ged``: GED with
    d = 1 - IoU (several classes: 1 - mean IoU over the classes present) between ``members`` samples and the annotators,
    the estimator that includes i = j pairs (as in the papers' tables). Members are drawn as ``predict`` draws
    them (``inference.ensemble.draw_members``, without post-processing): member k of case c from
    ``(sample.seed, c, k)``, so a case's validation members are ``predict``'s first members of that case and
    every validation draws the same noise (the curves are comparable). It runs on rank 0 only; its
    generators are its own, so training draws are unaffected.

    Args:
        dataset: the validation items (``image``, ``masks`` (A, H, W), ``case_id``).
        every: optimiser steps between two validations; 0 turns it off.
        cases: how many of the first items to draw for.
        members: members per case when a batch has several annotators (else 1).
        batch_size: items per ``draw`` call.
    """

    def __init__(self, dataset: Dataset, every: int, cases: int, members: int = 4, batch_size: int = 8):
        self.dataset = dataset
        self.every = every
        self.cases = min(cases, len(dataset))  # type: ignore[arg-type]
        self.members = members
        self.batch_size = batch_size

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Lightning's hook after every optimiser step; at every ``every``-th step rank 0 scores and logs
        ``val/<metric>``, and every rank waits for it.

        Args:
            trainer: the running trainer.
            pl_module: the module whose EMA network draws.
            outputs: the training step's output (unused).
            batch: the step's batch (unused).
            batch_idx: the batch's index in the epoch (unused).
        """
        step = trainer.global_step
        if self.every <= 0 or self.cases == 0 or step % self.every != 0:
            return
        if trainer.is_global_zero:
            scores = self.evaluate(pl_module)
            for name, value in scores.items():
                if math.isfinite(value):
                    pl_module.log(f"val/{name}", value, prog_bar=True, rank_zero_only=True, on_step=True)
        trainer.strategy.barrier("sampled-validation")

    @torch.no_grad()
    def evaluate(self, module: SegmentationModule) -> dict[str, float]:
        """Mean Dice (and GED with several annotators) over the validation cases."""
        dices, geds = [], []
        for items, drawn in self.draw(module):
            for sample, item in zip(drawn, items):
                truth = item["masks"]
                if truth.shape[0] == 0:
                    continue
                truth, sample, _ = without_ignored(module.scheme, truth, sample)
                dice, distance = _scores(sample, truth, module.scheme, sample.shape[0])
                dices.append(dice)
                if distance is not None:
                    geds.append(distance)
        out = {"dice": sum(dices) / len(dices) if dices else math.nan}
        if geds:
            out["ged"] = sum(geds) / len(geds)
        return out

    def draw(self, module: SegmentationModule) -> Iterator[tuple[list[dict], list[Tensor]]]:
        """The validation cases ``batch_size`` at a time with their members, drawn with the EMA network:
        ``(items, [members (K, H, W) float atom maps on the CPU per item])``, ``K = members`` for a batch with
        several annotators, else 1, all of a batch in one ``draw`` call."""
        cfg = module.config
        use_micro_batch(module.ema, cfg.sample.micro_batch)  # as predict runs the per-member part (speed only)
        draw = make_draw(cfg, module.ema, module.process)
        precision = resolve_sample_precision(cfg.sample.precision, module.device)
        for start in range(0, self.cases, self.batch_size):
            items = [self.dataset[i] for i in range(start, min(start + self.batch_size, self.cases))]
            members = self.members if any(it["masks"].shape[0] > 1 for it in items) else 1
            sample = dataclasses.replace(
                cfg.sample, samples=members, batch_size=len(items) * members, precision=precision
            )
            cases = [(it["case_id"], it["image"]) for it in items]
            drawn = draw_members(draw, cases, sample, device=module.device)
            yield items, [m.masks[:, 0].float().cpu() for m in drawn]


def _scores(sample: Tensor, truth: Tensor, scheme: LabelScheme, members: int) -> tuple[float, float | None]:
    """(mean Dice, GED or None) of one case's ``members`` drawn label maps ``sample`` (members, H, W) against its
    annotations ``truth`` (A, H, W), both atom maps. Binary: ``pairwise_dice`` and ``ged`` of the masks, as
    always. Several classes: Dice per class (``class_dice``; a class empty in both scores 1) averaged over the
    classes (``class_mean``) and the (sample, annotator) pairs; GED with ``d = 1 - mIoU`` over the classes present
    in either mask (``class_ged``). GED only with several annotators and members."""
    several = truth.shape[0] > 1 and members > 1
    if scheme.binary:
        return float(pairwise_dice(sample, truth).mean()), ged(sample, truth, unbiased=False) if several else None
    s, t = scheme.class_masks(sample.long()), scheme.class_masks(truth.long())  # (members, K, H, W), (A, K, H, W)
    pairs = class_dice(s[:, None].expand(-1, len(t), -1, -1, -1), t[None].expand(len(s), -1, -1, -1, -1))
    dice = float(class_mean(pairs).mean())
    return dice, class_ged(s, t, unbiased=False) if several else None
