"""LightningModules, one per method family, behind one base class, in one table (``MODULES``).

``SegmentationModule`` holds what every family shares: the network ``net`` and its EMA copy ``ema`` (the
EMA model is what validates and predicts), AdamW with linear warm-up and cosine decay, a guard that stops
the run on a non-finite loss, and the checkpoint metadata. Batches hold ``image`` (B, in_channels, H, W) and
``mask`` (B, 1, H, W), a label map of atoms (binary: {0, 1}): one annotator per item, drawn at random per item
and step by the training data (``training.stream``). A family's loss sees the mask as the one-hot of the label
scheme, ``scheme.one_hot``: (B, C, H, W) {0, 1} (binary: C = 1, the mask itself). Every family builds its
network from ``config.model`` (``methods.build_network``); sampled validation draws masks as ``predict``
does (``methods.make_draw``). A family adds its training loss.

Randomness. Every random draw of a training step (diffusion time, noise) comes from a generator seeded
from ``(train.seed, rank, global_step)``, so a step's draws do not depend on the history of the run: a
resumed run draws exactly what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from diffuseg import checkpoint as ckpt_io
from diffuseg.config import Config
from diffuseg.enums import Method, SegWeighting
from diffuseg.errors import UserError
from diffuseg.methods import anchored_denoiser, build_network, build_process
from diffuseg.nets.unet import segmentation_loss
from diffuseg.training.anchored_loss import estimate_logits, weighted_segmentation_loss
from diffuseg.training.latent_loss import latent_loss
from diffuseg.training.ssn_loss import ssn_loss


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def step_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. ``(seed, rank, step)`` (NumPy ``SeedSequence``)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def schedule_lengths(warmup: int, decay: int, total: int) -> tuple[int, int]:
    """The warm-up and decay lengths a run of ``total`` steps trains with: as given when they fit in it, else
    both shortened in proportion to fill the run (a preset's 500 + 15,000 in a 600-step run: 19 + 581), since a
    decay longer than the run would hold the learning rate near 0 from the first step."""
    if warmup + decay <= total:
        return warmup, decay
    short = round(warmup * total / (warmup + decay))
    return short, total - short


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


FUSED_ADAMW = ("cpu", "cuda")  # devices where torch's AdamW has a fused kernel


def make_optimizer(
    params, lr: float, weight_decay: float, device: torch.device | str, fused: bool = True
) -> torch.optim.AdamW:
    """AdamW, with ``fused`` one kernel per step on the devices in ``FUSED_ADAMW``. Unfused, torch updates a CPU's
    parameters one at a time (its ``foreach`` path is for GPUs only), a sizeable share of a step on a CPU
    (docs/benchmarks.md, "Training throughput: the fused optimiser")."""
    fused = fused and torch.device(device).type in FUSED_ADAMW
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


class SegmentationModule(L.LightningModule):
    """The shared training machinery; subclasses define ``loss``."""

    method: ClassVar[Method]
    ignores: ClassVar[bool] = False  # whether ``loss`` takes ``valid``: can train with an ignore label

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.scheme = config.data.scheme
        if self.scheme.ignore is not None and not self.ignores:
            raise UserError(
                f"method {config.method}: data.ignore_label={self.scheme.ignore} (nnU-Net's ignore label) is left "
                "out of the loss by the diffusion and deterministic methods only; train one of those"
            )
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
        ``target`` ``(B, C, H, W)`` {0, 1} (binary: the mask ``(B, 1, H, W)``). A family that ``ignores`` takes
        ``valid`` ``(B, 1, H, W)`` {0, 1} too, the pixels that count (when some are ``ignore``)."""
        raise NotImplementedError

    # --- training --------------------------------------------------------------------------------
    def step_generator(self) -> torch.Generator:
        """CPU generator for this step's draws, seeded from (train.seed, rank, global_step)."""
        return torch.Generator().manual_seed(step_seed(self.config.train.seed, self.global_rank, self.global_step))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        gen = self.step_generator()
        image = batch["image"]
        if self.config.train.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        mask = batch["mask"][:, 0]
        valid = self.scheme.valid(mask)  # None unless some pixel is nnU-Net's ignore label
        target = self.scheme.one_hot(mask)
        loss = self.loss(image, target, gen) if valid is None else self.loss(image, target, gen, valid[:, None].float())
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
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed's; it unscales before clipping
        opt = make_optimizer(self.net.parameters(), t.lr, t.weight_decay, self.device, fused=scaler is None)
        total = t.steps
        warmup, decay = schedule_lengths(t.warmup_steps, t.decay_steps, total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, decay, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def clip_parts(self) -> tuple[nn.Module, ...]:
        """The modules whose gradients are clipped, each to norm ``train.grad_clip`` on its own."""
        return (self.net,)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        """Clip each of ``clip_parts`` to norm ``gradient_clip_val`` (``train.grad_clip``), here rather than in
        Lightning's precision plugin, which refuses to clip for a fused optimiser even where no scaler is in use."""
        if not gradient_clip_val:
            return
        for part in self.clip_parts():
            nn.utils.clip_grad_norm_([p for p in part.parameters() if p.grad is not None], gradient_clip_val)

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
    ignores = True

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator, valid: Tensor | None = None) -> Tensor:
        return self.process.loss(self.net, target, image, generator, valid)


class DeterministicModule(SegmentationModule):
    """The deterministic UNet baseline: ``net(image) -> logits`` trained with ``nets.unet.segmentation_loss``
    (binary: Dice + BCE; exclusive classes: softmax cross-entropy + Dice; regions: BCE + Dice per channel)."""

    method = Method.DETERMINISTIC
    ignores = True

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator, valid: Tensor | None = None) -> Tensor:
        return segmentation_loss(self.net(image), target, self.scheme.exclusive, valid=valid)


class LatentModule(SegmentationModule):
    """Training of a latent-variable baseline (``training.latent_loss``); logs the reconstruction and KL terms
    beside the loss."""

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        parts = latent_loss(self.net, image, target, generator, self.scheme.exclusive)
        size = image.shape[0]
        self.log("reconstruction", parts["reconstruction"].detach(), on_step=True, batch_size=size)
        self.log("kl", parts["kl"].detach(), on_step=True, batch_size=size)
        return parts["loss"]


class ProbUNetModule(LatentModule):
    """``method: probunet``: Prob. UNet (AA) and the Gen. Prob. UNet (AA-mix, FC, FC-mix)."""

    method = Method.PROBUNET


class PHiSegModule(LatentModule):
    """``method: phiseg``."""

    method = Method.PHISEG


class SSNModule(SegmentationModule):
    """``method: ssn``: the Monte Carlo negative log-likelihood of ``training.ssn_loss`` with ``ssn.mc_samples``
    draws; logs the likelihood of the mean logits alone beside it."""

    method = Method.SSN

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        parts = ssn_loss(self.net, image, target, generator, self.config.ssn.mc_samples, self.scheme.exclusive)
        self.log("mean_nll", parts["mean_nll"], on_step=True, batch_size=image.shape[0])
        return parts["loss"]


class AnchoredModule(SegmentationModule):
    """``method: anchored``: ``self.net`` is a ``nets.anchored.AnchoredNet``; logs the three terms of the loss."""

    method = Method.ANCHORED

    def loss(self, image: Tensor, target: Tensor, generator: torch.Generator) -> Tensor:
        exclusive = self.scheme.exclusive
        form = self.config.anchored.form
        denoiser, logits = anchored_denoiser(self.net, image, self.process, form, self.scheme, keep_estimate=True)
        trunk = segmentation_loss(logits, target, exclusive)
        diffusion = self.process.loss(denoiser, target, image, generator)
        estimate = estimate_logits(denoiser.estimate, exclusive)
        if self.config.anchored.seg_weighting == SegWeighting.SIGNAL:
            segmentation = weighted_segmentation_loss(estimate, target, exclusive, denoiser.signal)
        else:
            segmentation = segmentation_loss(estimate, target, exclusive)
        size = image.shape[0]
        for name, value in (("trunk", trunk), ("diffusion", diffusion), ("head_segmentation", segmentation)):
            self.log(name, value.detach(), on_step=True, batch_size=size)
        return trunk + diffusion + self.config.anchored.seg_weight * segmentation

    def clip_parts(self) -> tuple[nn.Module, ...]:
        """The trunk and the head, each clipped on its own, so the trunk trains as the UNet alone."""
        return self.net.trunk, self.net.head


MODULES: dict[Method, type[SegmentationModule]] = {
    Method.DIFFUSION: DiffusionModule,
    Method.DETERMINISTIC: DeterministicModule,
    Method.PROBUNET: ProbUNetModule,
    Method.PHISEG: PHiSegModule,
    Method.ANCHORED: AnchoredModule,
    Method.SSN: SSNModule,
}


def module_class(method: Method | str) -> type[SegmentationModule]:
    """The LightningModule class for ``method`` (``ValueError`` naming the methods for an unknown one)."""
    return MODULES[Method.parse(method)]
