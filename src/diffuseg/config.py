"""Configuration: one frozen dataclass per concern, YAML load/save and dotted command-line overrides.

A ``Config`` is fully resolved: every field has a value, and ``save_config`` writes all of them, so the
YAML stored with a run or a checkpoint reproduces it exactly. Unknown keys and bad values raise
``UserError`` naming the file (or override) and the key.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffuseg.enums import (
    AnchorForm,
    DDPMVariance,
    Fusion,
    Method,
    PredictionType,
    SamplerKind,
    ScheduleKind,
    Spacing,
    StrEnum,
    TimeSampler,
    Uncertainty,
    Weighting,
)
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how items are prepared. ``layout`` is a reader name or ``auto``."""

    root: str = ""
    layout: str = "auto"
    image_size: int = 256
    in_channels: int = 1
    foreground: tuple[int, ...] = ()  # label values counted as foreground; () = any non-zero
    # Several classes: [{name: RV, values: [1]}, ...] (labels.label_scheme); () = binary as above.
    classes: tuple[ClassSpec, ...] = ()
    annotators: int = 0  # 0 = as many as the dataset has
    train_patients: str = ""  # file with one patient id per line; empty = split from seed
    val_patients: str = ""
    val_fraction: float = 0.2
    split_seed: int = 0
    augment: bool = True
    random_crop: bool = False  # the ambiguity paper's random-crop LIDC variant
    cache_dir: str = ""  # empty = <run>/cache
    num_workers: int = 0
    max_cases: int = 0  # 0 = all; a cap for quick runs and demos

    @property
    def scheme(self) -> LabelScheme:
        """What a mask is: ``classes``, or binary with ``foreground`` when none are declared (every checkpoint
        written before classes existed)."""
        return label_scheme(self.classes, self.foreground)


@dataclass(frozen=True)
class ModelConfig:
    """A network from ``nets.registry`` by name, with its keyword options."""

    name: str = "medsegdiff-b"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion process: schedule, input scaling, prediction type and loss weighting."""

    schedule: ScheduleKind = ScheduleKind.LINEAR
    timesteps: int = 1000  # T for discrete schedules; ignored by continuous ones
    input_scale: float = 1.0  # b in the ambiguity paper, eq. 7: logSNR shifted by 2 log b
    logsnr_min: float = -15.0
    logsnr_max: float = 15.0
    prediction: PredictionType = PredictionType.EPS
    weighting: Weighting = Weighting.SNR  # SNR on ||x - x_hat||^2 is MedSegDiff's eps-MSE (eq. 7)
    sigmoid_bias: float = -3.0
    time_sampler: TimeSampler = TimeSampler.UNIFORM
    # recipes beyond the papers (diffusion.recipes; issue 14), off in the papers' presets
    aux_weight: float = 0.0  # lambda of the auxiliary Dice + BCE loss on x_hat_0
    self_condition: bool = False  # Chen, Zhang & Hinton 2022 (Analog Bits)
    recycle: bool = False  # Fu et al. 2023 (recycling training)


@dataclass(frozen=True)
class AnchoredConfig:
    """``method: anchored`` (``training.anchored_module``): the trunk is ``model``, trained with the UNet's loss;
    a light diffusion head (a ``diffusion-unet`` with the trunk's ``downsample`` and ``padding``) models the
    residual of its prior with the ``diffusion`` process."""

    form: AnchorForm = AnchorForm.RESIDUAL
    seg_weight: float = 1.0  # weight of the head's Dice + cross-entropy on mu + r_hat
    head_channels: tuple[int, ...] = (16, 32, 64, 64)  # widths per level of the head
    head_blocks: int = 1  # residual blocks per level (and in the middle) of the head
    head_time_dim: int = 64


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run control."""

    out_dir: str = "runs/default"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    decay_steps: int = 0  # cosine decay over the last N steps; 0 = constant after warm-up
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "32-true"  # Lightning precision, e.g. bf16-mixed
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    log_every: int = 10
    val_every: int = 0  # steps between sampled validations; 0 = never
    val_cases: int = 8
    ckpt_every: int = 500
    channels_last: bool = False


@dataclass(frozen=True)
class SampleConfig:
    """How masks are drawn and fused at prediction time."""

    sampler: SamplerKind = SamplerKind.DDIM
    steps: int = 100
    spacing: Spacing = Spacing.LINEAR  # where the steps sit on [0, 1]
    eta: float = 0.0  # DDIM stochasticity
    ddpm_variance: DDPMVariance = DDPMVariance.POSTERIOR
    samples: int = 25
    batch_size: int = 25  # members drawn together in one network call
    micro_batch: int = 0  # MedSegDiff: rows of a call's per-member part computed at once; 0 = all
    workers: int = 0  # threads drawing a call's members side by side; 0 = one per torch thread on a CPU, 1 on a GPU
    fusion: Fusion = Fusion.STAPLE
    threshold: float = 0.5
    relative_area: float = 0.0  # the ambiguity paper's supplement 7.1; 0 = off
    uncertainty: Uncertainty = Uncertainty.VARIANCE
    seed: int = 0
    precision: str = "32"  # "32", "bf16" or "auto" (bf16 where the device computes it natively)
    channels_last: bool = False  # network and inputs in channels_last memory format


@dataclass(frozen=True)
class EvalConfig:
    """Which metrics and estimators the evaluation reports."""

    ged_samples: tuple[int, ...] = (4, 16)
    hd95_percentile: float = 95.0
    calibration_bins: int = 10


@dataclass(frozen=True)
class Config:
    method: Method = Method.DIFFUSION
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    anchored: AnchoredConfig = field(default_factory=AnchoredConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a YAML value to the field's type, or raise ``UserError`` naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation):
        if value is None:
            return None
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        try:
            return annotation.parse(value)
        except ValueError as err:
            raise UserError(f"{where}: {err}") from None
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
        if out != out:
            raise UserError(f"{where}: NaN is not allowed")
        if out in (float("inf"), float("-inf")):
            raise UserError(f"{where}: an infinite value is not allowed")
        return out
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, Sequence):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or annotation is Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"no coercion for {annotation!r}")  # a programming error, not a user one


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    if not isinstance(values, Mapping):
        raise UserError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(
            f"{where or 'top level'}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}"
        )
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UserError(f"{where or 'top level'}: missing key(s) {', '.join(missing)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, key)
        else:
            kwargs[name] = _coerce(value, hint, key)
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> Config:
    """Build and validate a ``Config``; missing keys take their defaults."""
    config = _build(Config, values or {}, "")
    _validate(config)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-able dict of every field (enums as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


def parse_overrides(overrides: Sequence[str], example: str = "train.steps=100") -> dict[str, Any]:
    """``["train.steps=10", "model.options.channels=16"]`` -> nested dict (values parsed as YAML); ``example``
    is the valid override the error message shows."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value, e.g. {example}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part} is set twice")
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], update: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. A section of ``base`` that is not a mapping is a ``UserError``
    (an override must not silently replace a preset's malformed ``data: 5`` with defaults)."""
    out = dict(base)
    for k, v in update.items():
        key = f"{where}.{k}" if where else str(k)
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v, key)
        elif isinstance(v, Mapping) and out.get(k) is not None:
            raise UserError(f"{key}: expected a mapping, got {out[k]!r}")
        else:
            out[k] = v
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        detail = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark and problem else str(err)
        raise UserError(f"{path}: not valid YAML ({detail})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return values


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML preset (``path`` may name a file or a bundled preset) and apply dotted overrides."""
    values: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        resolved = resolve_preset(path)
        values = read_yaml(resolved)
        where = f"{resolved} with overrides" if overrides else str(resolved)  # the bad key may be either's
    updates = parse_overrides(overrides)
    try:
        return config_from_dict(merge(values, updates))
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def resolve_preset(path: str | os.PathLike) -> Path:
    """A path to a YAML file, or the name of a preset in ``configs/`` (with or without ``.yaml``)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    name = candidate.name if candidate.suffix == ".yaml" else f"{candidate.name}.yaml"
    for folder in preset_dirs():
        if (folder / name).is_file():
            return folder / name
    raise UserError(f"{path}: config file not found (nor a preset of that name; see `diffuseg presets`)")


def preset_dirs() -> list[Path]:
    """Folders searched for named presets: the repository's ``configs/`` and the installed copy."""
    here = Path(__file__).resolve()
    return [p for p in (here.parents[2] / "configs", here.parent / "configs") if p.is_dir()]


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file, then rename)."""
    write_text_atomic(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _validate(c: Config) -> None:
    """Range checks a dataclass cannot express."""
    checks = [
        (c.data.image_size >= 8, "data.image_size must be >= 8"),
        (c.data.in_channels >= 1, "data.in_channels must be >= 1"),
        (0.0 <= c.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
        (c.diffusion.timesteps >= 2, "diffusion.timesteps must be >= 2"),
        (c.diffusion.input_scale > 0, "diffusion.input_scale must be > 0"),
        (c.diffusion.logsnr_min < c.diffusion.logsnr_max, "diffusion.logsnr_min must be < logsnr_max"),
        (c.diffusion.aux_weight >= 0, "diffusion.aux_weight must be >= 0 (0: no auxiliary loss)"),
        (c.anchored.seg_weight >= 0, "anchored.seg_weight must be >= 0 (0: no segmentation loss on the head)"),
        (len(c.anchored.head_channels) >= 2, "anchored.head_channels needs at least 2 levels"),
        (min(c.anchored.head_channels, default=0) >= 1, "anchored.head_channels must be >= 1"),
        (c.anchored.head_blocks >= 1 and c.anchored.head_time_dim >= 1, "anchored.head_blocks, head_time_dim >= 1"),
        (c.train.steps >= 1, "train.steps must be >= 1"),
        (c.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (c.train.lr > 0, "train.lr must be > 0"),
        (0.0 <= c.train.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
        (c.train.ckpt_every >= 1, "train.ckpt_every must be >= 1"),
        (c.sample.steps >= 1, "sample.steps must be >= 1"),
        (c.sample.samples >= 1, "sample.samples must be >= 1"),
        (c.sample.batch_size >= 1, "sample.batch_size must be >= 1"),
        (c.sample.micro_batch >= 0, "sample.micro_batch must be >= 0 (0: all rows of a call at once)"),
        (c.sample.workers >= 0, "sample.workers must be >= 0 (0: one per torch thread on a CPU)"),
        (c.sample.eta >= 0.0, "sample.eta must be >= 0"),
        (0.0 < c.sample.threshold < 1.0, "sample.threshold must be in (0, 1)"),
        (0.0 <= c.sample.relative_area <= 1.0, "sample.relative_area must be in [0, 1]"),
        (c.sample.precision in ("32", "bf16", "auto"), "sample.precision must be 32, bf16 or auto"),
    ]
    problems = [msg for ok, msg in checks if not ok]
    if problems:
        raise UserError("; ".join(problems))
    _ = c.data.scheme  # names the bad class and value
