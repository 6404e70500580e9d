"""LightningModules, one per method family, behind one base class.

``SegmentationModule`` holds what every family shares: the network ``net`` and its EMA copy ``ema`` (the
EMA model is what validates and predicts), AdamW with linear warm-up and cosine decay, a guard that stops
the run on a non-finite loss, and the checkpoint metadata. Batches hold ``image`` (B, in_channels, H, W) and
``mask`` (B, 1, H, W), a label map of atoms (binary: {0, 1}): one annotator per item, drawn at random per item
and step by the training data (``training.run``). A family's loss sees the mask as the one-hot of the label
scheme, ``scheme.one_hot``: (B, C, H, W) {0, 1} (binary: C = 1, the mask itself). Every family builds its
network from ``config.model`` and draws masks as ``predict`` does (``checkpoint.build_network``,
``inference.ensemble.make_draw``); a family adds its training loss:

    MODULES = {Method.DIFFUSION: DiffusionModule, Method.DETERMINISTIC: DeterministicModule}

A family in another module (Prob. UNet, PHiSeg: ``training.latent_module``) subclasses ``SegmentationModule``,
registers itself in ``MODULES`` and is named in ``FAMILY_MODULES`` so that it is imported when asked for.

Randomness. Every random draw of a training step (diffusion time, noise) comes from a generator seeded
from ``(train.seed, rank, global_step)``, so a step's draws do not depend on the history of the run: a
resumed run draws exactly what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import importlib
import math
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from diffuseg import checkpoint as ckpt_io
from diffuseg.config import Config
from diffuseg.enums import Method
from diffuseg.errors import UserError
from diffuseg.methods import build_network, build_process


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def step_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. ``(seed, rank, step)`` (NumPy ``SeedSequence``)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def lr_factor(step: int, warmup: int, decay: int, total: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from 1/warmup to 1 over ``warmup`` steps, constant, then a cosine decay to 0 over the
    last ``decay`` steps of ``total`` (the ambiguity paper, supplement 7.2: 10k of 50k, 100k of 400k).
    """
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    start = total - decay
    if decay > 0 and step >= start:
        progress = min(1.0, (step - start) / decay)
        factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class SegmentationModule(L.LightningModule):
    """The shared training machinery; subclasses define ``loss``."""

    method: ClassVar[Method]

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.scheme = config.data.scheme
        self.net = build_network(config)
        self.process = build_process(config)  # DiffusionProcess for diffusion methods, else None
        if config.train.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.sampler_position = 0  # items consumed by all ranks together, kept in checkpoints
        self._rng_to_restore: dict[str, Any] | None = None

    # --- what a family defines -------------------------------------------------------------------
    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        """Scalar training loss for images ``(B, in_channels, H, W)`` and one annotation per item, its one-hot
        ``target`` ``(B, C, H, W)`` {0, 1} (binary: the mask ``(B, 1, H, W)``)."""
        raise NotImplementedError

    def draw(self, net: nn.Module, image: Tensor, members: int, generators: list[torch.Generator]) -> Tensor:
        """``members`` label maps per image with ``net``: ``(B * members, 1, H, W)`` float atoms (binary {0, 1}),
        rows image-major, row
        ``i`` from ``generators[i]``; the family's ``inference.ensemble.make_draw``, as ``predict`` draws."""
        from diffuseg.methods import make_draw

        return make_draw(self.config, net, self.process)(image, members, generators).mask

    # --- training --------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """CPU generator for this step's draws, seeded from (train.seed, rank, global_step)."""
        return torch.Generator().manual_seed(step_seed(self.config.train.seed, self.global_rank, self.global_step))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        gen = self.step_generator()
        image = batch["image"]
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        loss = self.loss(image, self.scheme.one_hot(batch["mask"][:, 0]), gen)
        self._guard(loss)
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, batch_size=image.shape[0])
        self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=image.shape[0])
        return loss

    def _guard(self, loss: Tensor) -> None:
        """Stop every rank together when any rank's loss is NaN or infinite."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLossError(
                f"the training loss became {float(loss.detach())} at step {self.global_step + 1}; the run was "
                f"stopped and its last good checkpoint kept in {self.config.train.out_dir}/checkpoints. Lower "
                "train.lr, keep train.grad_clip > 0, or use train.precision=32-true, then resume with --resume."
            )

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the EMA update (before any callback sees or saves the step)."""
        super().optimizer_step(*args, **kwargs)
        self.update_ema()
        self.sampler_position += self.config.train.batch_size * self.trainer.world_size

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- d * ema + (1 - d) * net with d = min(ema_decay, (1 + n) / (10 + n)), n optimiser steps.

        The warm-up of the decay keeps short runs from averaging in their random initial weights.
        """
        n = self.global_step
        decay = min(self.config.train.ema_decay, (1 + n) / (10 + n))
        ema_params = list(self.ema.parameters())
        net_params = [p.detach() for p in self.net.parameters()]
        torch._foreach_lerp_(ema_params, net_params, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def configure_optimizers(self) -> dict[str, Any]:
        t = self.config.train
        opt = torch.optim.AdamW(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        total, warmup, decay = t.steps, t.warmup_steps, t.decay_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, decay, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    # --- checkpoints -----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[ckpt_io.KEY] = ckpt_io.metadata(self.config, self.global_step, self.sampler_position)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint[ckpt_io.KEY]
        self.sampler_position = int(meta["sampler_position"])
        self._rng_to_restore = meta["rng"]

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:
            ckpt_io.restore_rng(self._rng_to_restore)
            self._rng_to_restore = None


class DiffusionModule(SegmentationModule):
    """MedSegDiff and the ambiguity paper's diffusion UNet: ``DiffusionProcess.loss`` and a sampler."""

    method = Method.DIFFUSION

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        return self.process.loss(self.net, target, image, generator)


class DeterministicModule(SegmentationModule):
    """The deterministic UNet baseline: ``net(image) -> logits`` trained with ``nets.unet.segmentation_loss``
    (binary: Dice + BCE; exclusive classes: softmax cross-entropy + Dice; regions: BCE + Dice per channel)."""

    method = Method.DETERMINISTIC

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        from diffuseg.nets.unet import segmentation_loss

        return segmentation_loss(self.net(image), target, self.scheme.exclusive)


MODULES: dict[Method, type[SegmentationModule]] = {
    Method.DIFFUSION: DiffusionModule,
    Method.DETERMINISTIC: DeterministicModule,
}
# Families defined in their own modules, imported when first asked for (importing registers them in MODULES).
FAMILY_MODULES: dict[Method, str] = {
    Method.PROBUNET: "diffuseg.training.latent_module",
    Method.PHISEG: "diffuseg.training.latent_module",
    Method.ANCHORED: "diffuseg.training.anchored_module",
}


def module_class(method: Method | str) -> type[SegmentationModule]:
    """The LightningModule class for ``method``; ``UserError`` when that family has no trainer yet."""
    method = Method.parse(method)
    if method not in MODULES and method in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[method])
    if method not in MODULES:
        known = ", ".join(str(m) for m in MODULES)
        raise UserError(f"method {method}: no training module for it (available: {known})")
    return MODULES[method]
