"""The Lightning Trainer of a run: devices and nodes, precision, loggers, the progress bar and atomic checkpoint IO.

``fit`` runs Lightning's fit with this Trainer; what the run trains on and where it writes is ``training.run``'s.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from diffuseg.checkpoint import read_checkpoint, save_atomic
from diffuseg.config import Config
from diffuseg.errors import UserError
from diffuseg.runtime import native_bf16

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")


class StepProgressBar(TQDMProgressBar):
    """One bar for the whole run: global step out of ``train.steps``, loss, steps/s and time left.

    Lightning's own bar counts batches of the current epoch, first moves at its refresh rate and restarts
    at 0 of an unknown total, as ``Epoch N``, after a resume. This one starts at the step the run resumes
    from (``initial``), so rate and ETA cover only the steps of this session, and is redrawn every step.
    """

    def __init__(self) -> None:
        super().__init__(refresh_rate=1)

    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        self.train_progress_bar = Tqdm(
            desc="train",
            total=trainer.max_steps,
            initial=trainer.global_step,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, *_: Any) -> None:
        """Nothing: the data stream is one epoch of ``train.steps`` batches, and the bar spans the run."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_exception(self, *_: Any) -> None:
        """A run stopped by an error or an interrupt closes its bar, which tqdm would otherwise draw once more
        when the process exits."""
        if self._train_progress_bar is not None:
            self._train_progress_bar.close()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on GPUs that support it, 16-mixed on older GPUs; on a CPU bf16-mixed where it computes
    bf16 natively (AVX512-BF16 or AMX; docs/training.md), else 32-true."""
    if precision not in PRECISIONS:
        raise UserError(f"train.precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    on_gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
    if precision == "auto":
        if not on_gpu:
            return "bf16-mixed" if native_bf16("cpu") else "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    if precision.startswith("bf16") and on_gpu and not torch.cuda.is_bf16_supported(including_emulation=False):
        warnings.warn("this GPU has no bf16; training with 16-mixed instead", stacklevel=2)
        return "16-mixed"
    return precision


def _devices(value: str) -> Any:
    value = str(value).strip()
    if value == "auto":
        return "auto"
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        return int(value)
    except ValueError:
        raise UserError(f"train.devices {value!r}: expected auto, a count (e.g. 4) or a list (e.g. 0,1)") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic (temp file, fsync, rename) and read with ``read_checkpoint``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_checkpoint(path, map_location=map_location or "cpu")


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger and its accelerator banner of what is absent
    ("GPU available: False, used: False", "TPU available: False, ...", HPU, IPU); every other message passes (a
    GPU that is there and used is still announced)."""

    ABSENT = re.compile(r"^(GPU available: False|[THI]PU available: False)")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "litlogger" not in message and not self.ABSENT.match(message)


def make_trainer(config: Config, run_dir: Path, callbacks: list[L.Callback], precision: str) -> L.Trainer:
    """A Lightning Trainer for the run: devices, ``precision`` (resolved), clipping, loggers, atomic checkpoint IO."""
    t = config.train
    try:
        return _trainer(config, run_dir, callbacks, precision)
    except MisconfigurationException as err:  # e.g. devices=0, a GPU count this machine lacks
        raise UserError(
            f"train.accelerator={t.accelerator}, train.devices={t.devices}, train.num_nodes={t.num_nodes}, "
            f"train.precision={t.precision}: {err}"
        ) from None


def _trainer(config: Config, run_dir: Path, callbacks: list[L.Callback], precision: str) -> L.Trainer:
    t = config.train
    return L.Trainer(
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        precision=precision,
        max_steps=t.steps,
        max_epochs=-1,
        gradient_clip_val=t.grad_clip if t.grad_clip > 0 else None,
        logger=[CSVLogger(run_dir, name="logs"), TensorBoardLogger(run_dir, name="tensorboard")],
        log_every_n_steps=min(t.log_every, t.steps),  # a run shorter than log_every still logs its last step
        callbacks=[*callbacks, StepProgressBar()],
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        use_distributed_sampler=False,
        default_root_dir=run_dir,
        enable_model_summary=False,  # 20 lines of module counts; the parameter count is printed by train()
    )


def fit(
    config: Config,
    run_dir: Path,
    module: L.LightningModule,
    loader: DataLoader,
    callbacks: list[L.Callback],
    precision: str,
    ckpt_path: Path | None,
) -> L.Trainer:
    """Train ``module`` on ``loader`` with ``make_trainer``'s Trainer; returns the trainer. Lightning's notices that
    are not the user's to act on are kept out of the output.

    Args:
        config: the run's resolved config (``train.*`` sets up the Trainer).
        run_dir: the run folder; the loggers write under it.
        module: the family's LightningModule (``training.module``).
        loader: the training batches (``training.stream.stream_loader``).
        callbacks: the run's callbacks (checkpoints, sampled validation).
        precision: a Lightning precision, already resolved (``resolve_precision``).
        ckpt_path: the checkpoint to resume from, or None for a fresh start.
    """
    adverts = _DropAdverts()
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    rank_zero_log.addFilter(adverts)
    try:
        trainer = make_trainer(config, run_dir, callbacks, precision)
    except BaseException:
        rank_zero_log.removeFilter(adverts)
        raise
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        # Lightning 2.6 calls a torch pytree API that torch deprecates: not the user's to act on
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
        try:
            trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path, weights_only=True)
        finally:
            rank_zero_log.removeFilter(adverts)
    return trainer
