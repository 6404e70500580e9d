"""Configuration: one frozen dataclass per concern, YAML load/save, dotted command-line overrides and the role
of each field.

A ``Config`` is fully resolved: every field has a value, and ``save_config`` writes all of them, so the
YAML stored with a run or a checkpoint reproduces it exactly. Unknown keys and bad values raise
``UserError`` naming the file (or override) and the key. Named presets are found by ``presets.load_config``.

Each field has a ``Role`` (``role`` in the field's metadata, else its section's, else the recipe): what makes two runs
the same experiment (``presets.recipe``) and what a resumed run may change (``training.run``) are read from it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import re
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
    Normalize,
    PredictionType,
    RecycleStart,
    Resize,
    SamplerKind,
    ScheduleKind,
    SegWeighting,
    Spacing,
    StrEnum,
    TimeSampler,
    Uncertainty,
    Weighting,
)
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme


class Role(StrEnum):
    """What a config field is to a run, kept as ``metadata={"role": ...}`` of the field or of its section."""

    RECIPE = "recipe"  # what makes two runs the same experiment: the default
    CASES = "cases"  # which cases the run uses: not the recipe, but fixed for the life of a run
    RUN = "run"  # where the data and outputs are, how long and on what it runs, sampling and evaluation


ROLE = "role"
_CASES = {ROLE: Role.CASES}
_RUN = {ROLE: Role.RUN}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how items are prepared. ``layout`` is a reader name or ``auto``."""

    root: str = field(default="", metadata=_RUN)
    layout: str = "auto"
    image_size: int = 256
    in_channels: int = 1  # 0: the channels of the data's first case (generic presets), recorded by the run
    foreground: tuple[int, ...] = ()  # label values counted as foreground; () = any non-zero
    classes: tuple[ClassSpec, ...] = ()  # [{name: RV, values: [1]}, ...] (labels.label_scheme); () = binary as above
    ignore_label: int | None = None  # nnU-Net's "ignore": unannotated pixels, out of losses and metrics; None: none
    annotators: int = 0  # 0 = as many as the dataset has
    train_patients: str = field(default="", metadata=_CASES)  # one patient id per line; empty = split from seed
    val_patients: str = field(default="", metadata=_CASES)
    val_fraction: float = 0.2
    split_seed: int = 0
    # the split's rules beyond the above (data.splits, docs/data.md "Splits")
    patient_regex: str = field(default="", metadata=_CASES)  # from a case name's start; "" = the layout's rule
    splits_file: str = field(default="", metadata=_CASES)  # nnU-Net splits_final.json; "" = ROOT's, when present
    fold: int | None = field(default=None, metadata=_CASES)  # the validation fold (k-fold or splits_file); None: none
    folds: int = field(default=5, metadata=_CASES)  # k of that split (nnU-Net's 5)
    resize: Resize = Resize.STRETCH  # pad: keep the aspect ratio (docs/data.md "Geometry and intensities")
    spacing: tuple[float, ...] = ()  # resize=spacing's [row, col] mm per pixel; () = the finest that fits, recorded
    ct_window: tuple[float, ...] = ()  # [low, high] HU: clipped and scaled to [0, 1], not per-file percentiles
    normalize: Normalize = Normalize.PER_IMAGE  # ct: nnU-Net's CT normalisation (docs/data.md)
    ct_stats: tuple[float, ...] = ()  # normalize=ct's (low, high, mean, std); () = computed by training, recorded
    augment: bool = True
    random_crop: bool = False  # the ambiguity paper's random-crop LIDC variant
    cache_dir: str = field(default="", metadata=_RUN)  # empty = <run>/cache
    num_workers: int = field(default=0, metadata=_RUN)
    max_cases: int = field(default=0, metadata=_CASES)  # 0 = all; a cap for quick runs and demos

    @property
    def intensity(self) -> tuple[float, ...]:
        """The intensity mapping every file is read through (``data.formats.files.fixed_intensity``): ``ct_stats``
        for ``normalize: ct``, else ``ct_window``; ``()`` = each file's own percentiles."""
        return tuple(self.ct_stats) if self.normalize == Normalize.CT else tuple(self.ct_window)

    @property
    def scheme(self) -> LabelScheme:
        """What a mask is: ``classes``, or binary with ``foreground`` when none are declared; ``ignore_label``."""
        return label_scheme(self.classes, self.foreground, ignore=self.ignore_label)


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
    # recipes beyond the papers (diffusion.recipes), off in the papers' presets
    aux_weight: float = 0.0  # lambda of the auxiliary Dice + BCE loss on x_hat_0
    self_condition: bool = False  # Chen, Zhang & Hinton 2022 (Analog Bits)
    recycle: bool = False  # Fu et al. 2023 (recycling training)
    recycle_from: RecycleStart = RecycleStart.TRUTH  # noise: the first pass starts from pure noise
    train_grid: int = 0  # > 0: train only at the times of this many-step sampling grid (Fu et al. 2023)
    train_grid_spacing: Spacing = Spacing.LINEAR  # where that grid's steps sit, as sample.spacing


@dataclass(frozen=True)
class AnchoredConfig:
    """``method: anchored`` (``training.module.AnchoredModule``): the trunk ``model`` trains with the UNet's loss; a
    light head (a ``diffusion-unet``, the trunk's ``downsample``, ``padding``) models its residual by ``diffusion``."""

    form: AnchorForm = AnchorForm.RESIDUAL
    seg_weight: float = 1.0  # weight of the head's Dice + cross-entropy on mu + r_hat
    seg_weighting: SegWeighting = SegWeighting.UNIFORM  # over the drawn times; signal: alpha_t^2 per row
    head_channels: tuple[int, ...] = (16, 32, 64, 64)  # widths per level of the head
    head_blocks: int = 1  # residual blocks per level (and in the middle) of the head
    head_time_dim: int = 64
    head_patch: int = 1  # p > 1: the head works on p x p patches, at 1/p of the resolution (nets.anchored)
    trunk_features: bool = True  # the head sees the trunk's last decoder features
    mu_input: bool = True  # the head sees mu (false: mu is only the residual's origin, the head sees the image)


@dataclass(frozen=True)
class SSNConfig:
    """``method: ssn`` (Monteiro et al. 2020, arXiv:2006.06015): ``model`` is the backbone, ``nets.ssn`` the head."""

    rank: int = 10  # R, the rank of P (the paper's 10)
    mc_samples: int = 20  # M, the loss's Monte Carlo draws per image, in antithetic pairs (the paper's 20)
    epsilon: float = 1e-5  # added to D (the authors' code)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and run control."""

    out_dir: str = field(default="runs/default", metadata=_RUN)
    seed: int = 0
    steps: int = field(default=1000, metadata=_RUN)
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    decay_steps: int = 0  # cosine decay over the last N steps; 0 = constant after warm-up
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "32-true"  # Lightning precision, e.g. bf16-mixed
    accelerator: str = field(default="auto", metadata=_RUN)
    devices: str = field(default="auto", metadata=_RUN)
    num_nodes: int = field(default=1, metadata=_RUN)
    log_every: int = field(default=10, metadata=_RUN)
    val_every: int = field(default=0, metadata=_RUN)  # steps between sampled validations; 0 = never
    val_cases: int = field(default=8, metadata=_RUN)
    ckpt_every: int = field(default=500, metadata=_RUN)
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
    uncertainty: Uncertainty = Uncertainty.DISAGREEMENT  # what the written uncertainty map holds
    seed: int = 0
    precision: str = "32"  # "32", "bf16" or "auto" (bf16 where the device computes it natively)
    channels_last: bool = False  # network and inputs in channels_last memory format
    tta: bool = False  # test-time augmentation: member k sees the image flipped/turned (inference.tta)


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
    ssn: SSNConfig = field(default_factory=SSNConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig, metadata=_RUN)
    eval: EvalConfig = field(default_factory=EvalConfig, metadata=_RUN)


@functools.cache
def role_fields(role: Role) -> tuple[str, ...]:
    """The dotted names of the fields of ``role`` in ``Config`` order; a section whose metadata gives the role
    is one name, ``section.*`` (``("data.root", ..., "train.steps", ..., "sample.*", "eval.*")``)."""
    hints = typing.get_type_hints(Config)
    names: list[str] = []
    for section in dataclasses.fields(Config):
        kind, own = hints[section.name], section.metadata.get(ROLE, Role.RECIPE)
        if not dataclasses.is_dataclass(kind):
            names += [section.name] if own is role else []
        elif ROLE in section.metadata:
            names += [f"{section.name}.*"] if own is role else []
        else:
            names += [f"{section.name}.{f.name}" for f in dataclasses.fields(kind) if f.metadata.get(ROLE, own) is role]
    return tuple(names)


def role_of(key: str) -> Role:
    """The role of a dotted key of a config: a field (``train.steps``), a field of a section (``sample.seed``) or
    a key inside a mapping field (``model.options.channels``)."""
    for role in (Role.RUN, Role.CASES):
        for name in role_fields(role):
            prefix = name[:-1] if name.endswith(".*") else f"{name}."
            if key == name or key.startswith(prefix):
                return role
    return Role.RECIPE


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


def save_config(config: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file, then rename)."""
    write_text_atomic(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


def _validate(c: Config) -> None:
    """Range checks a dataclass cannot express."""
    spacing_ok = not (s := c.data.spacing) or (c.data.resize == Resize.SPACING and len(s) == 2 and min(s) > 0)
    window_ok = not (w := c.data.ct_window) or (len(w) == 2 and w[0] < w[1])
    a = c.anchored
    checks = [
        (c.data.image_size >= 8, "data.image_size must be >= 8"),
        (c.data.in_channels >= 0, "data.in_channels must be >= 1, or 0 for the channels the data's images have"),
        (0.0 <= c.data.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
        (c.data.fold is None or c.data.fold >= 0, "data.fold must be >= 0 (null: no folds)"),
        (c.data.folds >= 2, "data.folds must be >= 2"),
        (window_ok, "data.ct_window must be [low, high] in HU with low < high (or [] for none)"),
        (
            not (c.data.normalize == Normalize.CT and c.data.ct_window),
            "data.normalize=ct computes its own clipping range: leave data.ct_window empty",
        ),
        (
            not c.data.ct_stats or (len(c.data.ct_stats) == 4 and c.data.ct_stats[0] <= c.data.ct_stats[1]),
            "data.ct_stats must be [low, high, mean, std] with low <= high (or [] to compute them)",
        ),
        (spacing_ok, "data.spacing must be [row_mm, col_mm] > 0, with data.resize=spacing ([]: the finest that fits)"),
        (_compiles(c.data.patient_regex), f"data.patient_regex {c.data.patient_regex!r}: not a regular expression"),
        (c.diffusion.timesteps >= 2, "diffusion.timesteps must be >= 2"),
        (c.diffusion.input_scale > 0, "diffusion.input_scale must be > 0"),
        (c.diffusion.logsnr_min < c.diffusion.logsnr_max, "diffusion.logsnr_min must be < logsnr_max"),
        (c.diffusion.aux_weight >= 0, "diffusion.aux_weight must be >= 0 (0: no auxiliary loss)"),
        (c.diffusion.train_grid >= 0, "diffusion.train_grid must be >= 0 (0: every time)"),
        (
            c.diffusion.prediction != PredictionType.LOGITS or c.diffusion.weighting == Weighting.UNIFORM,
            "diffusion.prediction=logits trains with Dice + CE on every row alike: set diffusion.weighting=uniform",
        ),
        (
            c.method != Method.ANCHORED
            or a.form != AnchorForm.RESIDUAL
            or c.diffusion.prediction != PredictionType.LOGITS,
            "anchored.form=residual predicts the residual, which has no logits: use diffusion.prediction eps, x or v, "
            "or anchored.form=mean_shift",
        ),
        (a.seg_weight >= 0, "anchored.seg_weight must be >= 0 (0: no segmentation loss on the head)"),
        (len(h := a.head_channels) >= 2 and min(h) >= 1, "anchored.head_channels: >= 2 levels, each >= 1"),
        (min(a.head_blocks, a.head_time_dim, a.head_patch) > 0, "anchored.head_{blocks,time_dim,patch} must be >= 1"),
        (c.ssn.rank >= 1, "ssn.rank must be >= 1"),
        (c.ssn.mc_samples >= 2 and not c.ssn.mc_samples % 2, "ssn.mc_samples must be even and >= 2 (antithetic pairs)"),
        (c.ssn.epsilon > 0, "ssn.epsilon must be > 0 (it keeps the covariance positive definite)"),
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
