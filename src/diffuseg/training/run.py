"""``train(config, resume)``: check and cache the data, then train with Lightning on CPU, GPUs or nodes.

A run folder (``train.out_dir``) holds ``config.yaml`` (the resolved config), ``checkpoints/last.ckpt``
(written atomically every ``train.ckpt_every`` steps and at the end), ``logs/version_N/metrics.csv`` and
``tensorboard/version_N/`` (one version per start or resume), ``split.json`` and ``cache/`` (the decoded data).

A resumed run continues the data stream (``training.stream``) and the random draws where the checkpoint left
them; its config may differ from the checkpoint's only in fields of ``config.Role.RUN``. The same code runs DDP
on many GPUs and nodes (``train.devices``, ``train.num_nodes``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L

from diffuseg.checkpoint import LAST, checkpoint_config, read_checkpoint
from diffuseg.config import Config, Role, config_to_dict, role_fields, role_of, save_config
from diffuseg.errors import UserError
from diffuseg.files import remove_stale_temps
from diffuseg.labels import LabelScheme
from diffuseg.methods import check_image_size
from diffuseg.runlock import folder_lock
from diffuseg.training.callbacks import PeriodicCheckpoint, SampledValidation
from diffuseg.training.module import module_class, schedule_lengths
from diffuseg.training.stream import build_datasets, stream_loader
from diffuseg.training.trainer import fit, resolve_precision


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for k, v in values.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: values}


def check_resumable(stored: Config, given: Config, path: Path) -> None:
    """Refuse to resume when anything but fields of ``Role.RUN`` differs from the checkpoint's config."""
    a, b = _flatten(config_to_dict(stored)), _flatten(config_to_dict(given))
    changed = [
        f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and role_of(k) is not Role.RUN
    ]
    if changed:
        raise UserError(
            f"{path}: cannot resume with a different config; give the same preset and overrides as the run "
            f"(only {', '.join(role_fields(Role.RUN))} may change). Differences:\n  " + "\n  ".join(changed)
        )


def with_dataset_classes(config: Config, scheme: LabelScheme) -> Config:
    """``config`` with ``data.classes`` set to the classes of ``scheme`` (the reader's) when the config declares
    none and the dataset does (nnU-Net ``dataset.json``, SSL4MIS label values), and ``data.ignore_label`` to its
    ignore label (nnU-Net's): the checkpoint's resolved config then rebuilds the network of C channels and
    predicts without the dataset. Else ``config`` itself."""
    data = config.data
    if scheme.ignore is not None and data.ignore_label is None:  # nnU-Net's ignore label, from dataset.json
        data = dataclasses.replace(data, ignore_label=scheme.ignore)
    if not data.classes and not scheme.binary:
        data = dataclasses.replace(data, classes=scheme.classes)
    return config if data == config.data else dataclasses.replace(config, data=data)


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
    taken = {}  # what a run took from its dataset (classes handled above): its checkpoint keeps it
    if config.data.ignore_label is None and stored.data.ignore_label is not None:
        taken["ignore_label"] = stored.data.ignore_label
    if not config.data.in_channels:
        taken["in_channels"] = stored.data.in_channels
    if not config.data.ct_stats:
        taken["ct_stats"] = stored.data.ct_stats
    if not config.data.spacing:
        taken["spacing"] = stored.data.spacing
    if taken:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, **taken))
    check_resumable(stored, config, ckpt_path)
    meta = ckpt["diffuseg"]
    return int(meta["global_step"]), int(meta["sampler_position"]), config


def check_model(config: Config) -> None:
    """``UserError`` for a bad model name or option, or a ``data.image_size`` the network cannot take
    (``methods.check_image_size``: built on the meta device, no weights, no random draws)."""
    if not config.data.in_channels:  # taken from the data later; any count checks the rest of the model
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, in_channels=1))
    check_image_size(config)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates), or None."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _prepare(config: Config, run_dir: Path) -> tuple[Config, L.LightningModule, Any, Any, str]:
    """Create the run folder, read the checked, cached data and build the module; write ``config.yaml``.

    Returns the run's resolved config (``with_dataset_classes``: the classes the dataset declares when the config
    declares none; ``data.in_channels`` 0 replaced by the data's channel count), its module, the data and the
    precision. A bad precision or model fails before the data is read (``check_model``); the module is built once,
    for the resolved config."""
    t = config.train
    _make_folder(run_dir)
    precision = resolve_precision(t.precision, t.accelerator)
    check_model(config)
    train_set, val_set = build_datasets(config, run_dir)
    if not config.data.in_channels:  # a generic preset: the channels the data's images have
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, in_channels=train_set.in_channels))
        print(f"image channels from the dataset: {train_set.in_channels} (recorded as data.in_channels)")
    if train_set.ct_stats and not config.data.ct_stats:  # data.normalize=ct: the training set's statistics
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, ct_stats=train_set.ct_stats))
        low, high, mean, std = train_set.ct_stats
        print(
            f"CT statistics of the training foreground: clip [{low:g}, {high:g}], mean {mean:g}, std {std:g} "
            "(recorded as data.ct_stats)"
        )
    if train_set.spacing and not config.data.spacing:  # data.resize=spacing: the finest that fits every case
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, spacing=train_set.spacing))
        rows, cols = train_set.spacing
        print(
            f"pixel spacing at which the largest case fits data.image_size: {rows:g} x {cols:g} mm "
            "(recorded as data.spacing)"
        )
    resolved = with_dataset_classes(config, train_set.scheme)
    if resolved.data.classes != config.data.classes:
        names = ", ".join(f"{c.name}={'+'.join(map(str, c.values))}" for c in resolved.data.classes)
        print(f"classes from the dataset: {names} (recorded as data.classes in config.yaml and the checkpoints)")
    if resolved.data.ignore_label != config.data.ignore_label:
        print(f"ignore label from the dataset: {resolved.data.ignore_label} (data.ignore_label; out of the loss)")
    config = resolved
    L.seed_everything(t.seed, workers=True, verbose=False)
    module = module_class(config.method)(config)
    params = sum(p.numel() for p in module.net.parameters())
    print(f"model {config.model.name}: {params / 1e6:.2f} M parameters")
    t = config.train
    fitted = schedule_lengths(t.warmup_steps, t.decay_steps, t.steps)
    if fitted != (t.warmup_steps, t.decay_steps):
        print(
            f"note: train.warmup_steps + train.decay_steps ({t.warmup_steps} + {t.decay_steps}) exceed train.steps="
            f"{t.steps}: this run warms up over {fitted[0]} and decays over {fitted[1]} steps (set them to choose)"
        )
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
    """Run Lightning's fit from ``start_step`` (data stream at ``position``) with the run's callbacks."""
    t = config.train
    callbacks: list[L.Callback] = [PeriodicCheckpoint(run_dir / "checkpoints", t.ckpt_every, t.steps)]
    if len(val_set) and t.val_every > 0 and t.val_cases > 0:
        callbacks.append(SampledValidation(val_set, t.val_every, t.val_cases, batch_size=t.batch_size))
    loader = stream_loader(config, train_set, start_step, position)
    ckpt_path = run_dir / "checkpoints" / LAST if resume else None
    return fit(config, run_dir, module, loader, callbacks, precision, ckpt_path)


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


def absolute_paths(config: Config) -> Config:
    """``config`` with ``train.out_dir`` and ``data.root`` made absolute (from the working folder), so the run's
    config.yaml, split.json and checkpoints name them wherever they are read from later."""
    data, t = config.data, config.train
    root = str(Path(data.root).absolute()) if data.root else ""
    return dataclasses.replace(
        config,
        data=dataclasses.replace(data, root=root),
        train=dataclasses.replace(t, out_dir=str(Path(t.out_dir).absolute())),
    )


def train(config: Config, resume: bool = False) -> Path:
    """Train ``config`` (or continue its run with ``resume``); returns the run folder.

    Raises ``UserError`` for bad data (every problem listed), a foreign or corrupt checkpoint, a resume
    with another config, and a loss that turns NaN or infinite (the last good checkpoint is kept). A start
    that fails before training removes the run folder it created (never a folder that existed before). The run
    folder and the data folder are recorded as absolute paths (``absolute_paths``).
    """
    config = absolute_paths(config)
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
