"""``train(config, resume)``: check and cache the data, then train with Lightning on CPU, GPUs or nodes.

A run folder (``train.out_dir``) holds ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt``
(written atomically every ``train.ckpt_every`` steps and at the end), ``logs/version_N/metrics.csv`` and
``tensorboard/version_N/`` (one version per start or resume), and ``cache/`` (the decoded data).

Data order is a function of the global step: the training items form one endless stream of seeded
permutations (epoch e is permutation e), step s reads the next ``batch_size * world_size`` items of the
stream, and each item's augmentation and annotator are drawn from a generator seeded by (seed, epoch of
the stream, index). Resuming restarts the stream at the position stored in the checkpoint, so a resumed run sees
the very batches the uninterrupted run would have seen, and no sampler state is lost by ``kill -9``.
The same code runs DDP on many GPUs and nodes (``train.devices``, ``train.num_nodes``); each rank takes
its own slice of every global batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, Sampler

from diffuseg.checkpoint import LAST, checkpoint_config, read_checkpoint, save_atomic
from diffuseg.config import Config, config_to_dict, save_config
from diffuseg.errors import UserError
from diffuseg.files import remove_stale_temps
from diffuseg.labels import LabelScheme
from diffuseg.runlock import folder_lock
from diffuseg.runtime import native_bf16
from diffuseg.training.callbacks import PeriodicCheckpoint, SampledValidation
from diffuseg.training.module import module_class, step_seed

# Fields that may change between a run and its resumption; any other difference is refused.
RESUMABLE = (
    "train.steps",
    "train.out_dir",
    "train.devices",
    "train.num_nodes",
    "train.accelerator",
    "train.log_every",
    "train.val_every",
    "train.val_cases",
    "train.ckpt_every",
    "data.root",
    "data.cache_dir",
    "data.num_workers",
    "sample.",
    "eval.",
)
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")


# --- data ------------------------------------------------------------------------------------------
class StreamItems(Dataset):
    """The training dataset keyed by ``(index, epoch)``: the item with that epoch's augmentation, crop and
    annotator draws (``data.dataset``: seeded from (seed, epoch, index)). Returns ``image`` and ``mask``."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        self.dataset.set_epoch(epoch)  # each worker holds its own copy of the dataset
        item = self.dataset[index]
        return {"image": item["image"], "mask": item["mask"]}


class StreamBatchSampler(Sampler):
    """Batches of ``(index, epoch)`` from an endless stream of seeded permutations of ``n`` items.

    Yields the batches of steps ``start_step .. total_steps - 1``; ``__len__`` is ``total_steps`` so the
    length of the epoch does not change when a run is resumed. Rank and world size are read when iteration
    starts (after DDP has set up), and each rank takes its ``batch_size`` slice of the global batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, total_steps: int, start_step: int, start_position: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.total_steps, self.start_step, self.start_position = total_steps, start_step, start_position

    def __len__(self) -> int:
        return self.total_steps

    def _epoch(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(step_seed(self.seed, 0xDA7A, epoch))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        dist = torch.distributed
        rank, world = (
            (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        )
        position = self.start_position
        cached_epoch, order = -1, []
        for _ in range(self.start_step, self.total_steps):
            batch = []
            for p in range(position + rank * self.batch_size, position + (rank + 1) * self.batch_size):
                epoch = p // self.n
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch(epoch)
                batch.append((order[p % self.n], epoch))
            position += self.batch_size * world
            yield batch


def build_datasets(config: Config, run_dir: Path) -> tuple[Any, Any]:
    """Split by patient, check every file and cache the data (``data.dataset.build_datasets``): (train, val).

    Prints where the split came from and records it in ``RUN/split.json`` (``data.splits``)."""
    from diffuseg.data.dataset import build_datasets as build
    from diffuseg.data.splits import split_record, split_source, write_split

    d = config.data
    workers = max(1, d.num_workers)
    train_set, val_set = build(d, cache_dir=run_dir / "cache", seed=config.train.seed, workers=workers)
    source = split_source(d)
    print(f"data {d.root}: {len(train_set)} training and {len(val_set)} validation item(s), split by patient")
    t = config.train
    if not len(val_set) and t.val_every > 0 and t.val_cases > 0:
        why = f"none of the patients in {source.val_list} is in the data" if source.val_list else "too few patients"
        raise UserError(
            f"data {d.root}: no validation patients ({why}); train without validation with train.val_every=0, "
            "or choose them with data.val_patients=FILE or data.val_fraction"
        )
    path = write_split(run_dir, split_record(source, d.root, train_set, val_set))
    patients = f"{len(set(train_set.patients))} training and {len(set(val_set.patients))} validation patient(s)"
    print(f"split: {source.describe()}: {patients}, recorded in {path}")
    return train_set, val_set


# --- Lightning -------------------------------------------------------------------------------------
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

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on GPUs that support it, 16-mixed on older GPUs; on a CPU bf16-mixed where it computes
    bf16 natively (AVX512-BF16 or AMX: 1.2-1.6x faster steps for MedSegDiff-B at 64-256 px and the demo UNet
    on a Zen 4 CPU, docs/training.md), else 32-true."""
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


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for k, v in values.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: values}


def check_resumable(stored: Config, given: Config, path: Path) -> None:
    """Refuse to resume when anything but run-control fields differs from the checkpoint's config."""
    a, b = _flatten(config_to_dict(stored)), _flatten(config_to_dict(given))
    changed = [
        f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not any(k == r or (r.endswith(".") and k.startswith(r)) for r in RESUMABLE)
    ]
    if changed:
        raise UserError(
            f"{path}: cannot resume with a different config; give the same preset and overrides as the run "
            "(only train.steps, devices, logging and data location may change). Differences:\n  " + "\n  ".join(changed)
        )


def with_dataset_classes(config: Config, scheme: LabelScheme) -> Config:
    """``config`` with ``data.classes`` set to the classes of ``scheme`` (the reader's) when the config declares
    none and the dataset does (nnU-Net ``dataset.json``, SSL4MIS label values): the checkpoint's resolved config
    then rebuilds the network of C channels and predicts without the dataset. Else ``config`` itself."""
    if config.data.classes or scheme.binary:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, classes=scheme.classes))


def _resume_state(config: Config, ckpt_path: Path, resume: bool) -> tuple[int, int, Config]:
    """(start step, stream position, config) of the run; checks the checkpoint when resuming. A resumed run whose
    config declares no classes takes the checkpoint's (classes a run took from its dataset, ``with_dataset_classes``),
    which the dataset must still match."""
    if not resume:
        if ckpt_path.exists():
            raise UserError(
                f"{ckpt_path}: the run folder already holds a checkpoint; continue it with --resume, "
                "or choose another --out"
            )
        return 0, 0, config
    if not ckpt_path.exists():
        raise UserError(f"{ckpt_path}: no checkpoint to resume from (start the run without --resume)")
    ckpt = read_checkpoint(ckpt_path)
    stored = checkpoint_config(ckpt, ckpt_path)
    if not config.data.classes and stored.data.classes:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, classes=stored.data.classes))
    check_resumable(stored, config, ckpt_path)
    meta = ckpt["diffuseg"]
    return int(meta["global_step"]), int(meta["sampler_position"]), config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic (temp file, fsync, rename) and read with ``read_checkpoint``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_atomic(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return read_checkpoint(path, map_location=map_location or "cpu")


class _DropAdverts(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger; every other message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def check_image_size(config: Config, net: torch.nn.Module) -> None:
    """``UserError`` unless ``data.image_size`` is divisible by the network's downsampling factor."""
    factor = getattr(net, "downsampling", None)
    size = config.data.image_size
    if factor and size % factor:
        raise UserError(
            f"data.image_size={size} does not fit model {config.model.name}: it downsamples {factor}x, so the "
            f"image size must be a multiple of {factor} (e.g. {max(factor, size // factor * factor)})"
        )


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


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates), or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _prepare(config: Config, run_dir: Path) -> tuple[Config, L.LightningModule, Any, Any, str]:
    """Create the run folder, build the module and the checked, cached data; write ``config.yaml``.

    Returns the run's resolved config (``with_dataset_classes``: the classes the dataset declares when the config
    declares none), its module, the data and the precision. The module is built before the data, so that a bad
    model fails at once, and built again (from the same seed) when the dataset brings classes of its own."""
    t = config.train
    _make_folder(run_dir)
    L.seed_everything(t.seed, workers=True, verbose=False)
    precision = resolve_precision(t.precision, t.accelerator)  # a bad model or precision fails before the data
    module = module_class(config.method)(config)
    check_image_size(config, module.net)
    train_set, val_set = build_datasets(config, run_dir)
    resolved = with_dataset_classes(config, train_set.scheme)
    if resolved is not config:
        names = ", ".join(f"{c.name}={'+'.join(map(str, c.values))}" for c in resolved.data.classes)
        print(f"classes from the dataset: {names} (recorded as data.classes in config.yaml and the checkpoints)")
        config = resolved
        L.seed_everything(t.seed, workers=True, verbose=False)  # the weights a run declaring these classes gets
        module = module_class(config.method)(config)
    params = sum(p.numel() for p in module.net.parameters())
    print(f"model {config.model.name}: {params / 1e6:.2f} M parameters")
    save_config(config, run_dir / "config.yaml")
    return config, module, train_set, val_set, precision


def _fit(
    config: Config,
    run_dir: Path,
    module: L.LightningModule,
    train_set: Any,
    val_set: Any,
    precision: str,
    start_step: int,
    position: int,
    resume: bool,
) -> L.Trainer:
    """Run Lightning's fit from ``start_step`` (data stream at ``position``); returns the trainer."""
    t = config.train
    ckpt_path = run_dir / "checkpoints" / LAST
    sampler = StreamBatchSampler(len(train_set), t.batch_size, t.seed, t.steps, start_step, position)
    loader = DataLoader(
        StreamItems(train_set),
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    callbacks: list[L.Callback] = [PeriodicCheckpoint(run_dir / "checkpoints", t.ckpt_every, t.steps)]
    if len(val_set) and t.val_every > 0 and t.val_cases > 0:
        callbacks.append(SampledValidation(val_set, t.val_every, t.val_cases, batch_size=t.batch_size))
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
            trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path if resume else None, weights_only=True)
        finally:
            rank_zero_log.removeFilter(adverts)
    return trainer


def primary_process() -> bool:
    """Whether this process is global rank 0 (or runs alone): no rank variable of torchrun, Lightning's
    launcher or SLURM says otherwise."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _make_folder(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{run_dir}: cannot create the run folder ({err.strerror or err})") from None


def _remove_temps(run_dir: Path, config: Config) -> None:
    """Delete the temporaries of killed writers in the run folder, its checkpoints and the cache; under the
    run's lock, also an older diffuseg's checkpoint temporaries (no writer but this run can be busy there)."""
    cache = Path(config.data.cache_dir) if config.data.cache_dir else run_dir / "cache"
    for folder in (run_dir, run_dir / "checkpoints", cache):
        remove_stale_temps(folder)
    for stale in (run_dir / "checkpoints").glob(f".{LAST}.*.tmp"):
        stale.unlink(missing_ok=True)


def train(config: Config, resume: bool = False) -> Path:
    """Train ``config`` (or continue its run with ``resume``); returns the run folder.

    Raises ``UserError`` for bad data (every problem listed), a foreign or corrupt checkpoint, a resume
    with another config, and a loss that turns NaN or infinite (the last good checkpoint is kept). A start
    that fails before training removes the run folder it created (never a folder that existed before).
    """
    t = config.train
    run_dir = Path(t.out_dir)
    ckpt_path = run_dir / "checkpoints" / LAST
    start_step, position, config = _resume_state(config, ckpt_path, resume)
    if start_step >= t.steps:
        print(f"{ckpt_path}: already at step {start_step} of train.steps={t.steps}; nothing to do")
        return run_dir
    created = _first_missing(run_dir)
    primary = primary_process()  # one writer per run folder: DDP's other ranks run under rank 0's lock
    with contextlib.ExitStack() as lock:
        if primary:
            _make_folder(run_dir)
            lock.enter_context(folder_lock(run_dir, "train"))
        try:
            config, module, train_set, val_set, precision = _prepare(config, run_dir)
        except BaseException:  # bad data, model or config: leave no half-made run folder behind
            lock.close()
            if created is not None and primary:
                shutil.rmtree(created, ignore_errors=True)
            raise
        if primary:
            _remove_temps(run_dir, config)
        trainer = _fit(config, run_dir, module, train_set, val_set, precision, start_step, position, resume)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return run_dir
