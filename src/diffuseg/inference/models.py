"""The checkpoints a prediction draws its members from: one, or an ensemble of N whose member k comes from
checkpoint ``k mod N`` (``inference.ensemble.member_view``), e.g. a seed ensemble of UNets (Lakshminarayanan et
al., NeurIPS 2017, arXiv:1612.01474; ValUES, Kahl et al., ICLR 2024, arXiv:2401.08501, finds seed ensembles the
most robust uncertainty). The checkpoints of an ensemble must agree on what a member is (``AGREE``); they may
differ in anything else (seed, fold, network). The run's ``sample.*`` settings are the first checkpoint's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffuseg.checkpoint import KEY, checkpoint_file, read_checkpoint_sha256
from diffuseg.config import Config, config_to_dict
from diffuseg.enums import Method
from diffuseg.errors import UserError
from diffuseg.inference.ensemble import views
from diffuseg.methods import inference_model

AGREE = (
    "method",
    "data.image_size",
    "data.in_channels",
    "data.foreground",
    "data.classes",
    "data.resize",
    "data.spacing",
    "data.ct_window",
    "data.normalize",
    "data.ct_stats",
)
"""The config fields the checkpoints of an ensemble must share: the family, the input the networks read and the
classes their members are label maps of."""


@dataclass
class Model:
    """One checkpoint, read: its file, the SHA-256 of its bytes, its training step, config, EMA network (eval mode)
    and process (``methods.inference_model``)."""

    path: str
    sha256: str
    step: int
    config: Config
    net: torch.nn.Module
    process: Any


def load_models(checkpoints: Sequence[str | os.PathLike]) -> list[Model]:
    """Read every checkpoint (a file, or a run folder: ``checkpoint.checkpoint_file``); ``UserError`` for one that
    cannot be read, one given twice, or two whose ``AGREE`` fields differ (naming both files and the field)."""
    if not checkpoints:
        raise UserError("predict needs a checkpoint")
    models = []
    for given in checkpoints:
        path = checkpoint_file(given)
        ckpt, sha256 = read_checkpoint_sha256(path)  # the file read once: CRC-32s and SHA-256 in one pass
        config, net, process = inference_model(ckpt, path)
        step = int(ckpt[KEY].get("global_step", 0))
        models.append(Model(str(path), sha256, step, config, net, process))
    for i, model in enumerate(models[1:], 1):
        twin = next((m for m in models[:i] if m.sha256 == model.sha256), None)
        if twin is not None:
            raise UserError(
                f"{twin.path}, {model.path}: the same checkpoint twice (equal SHA-256); an ensemble needs different "
                "ones"
            )
        _check_agree(models[0], model)
    return models


def _field(config: Config, key: str) -> Any:
    value: Any = config_to_dict(config)
    for part in key.split("."):
        value = value[part]
    return value


def _check_agree(first: Model, other: Model) -> None:
    for key in AGREE:
        a, b = _field(first.config, key), _field(other.config, key)
        if a != b:
            raise UserError(
                f"{first.path}, {other.path}: the checkpoints of an ensemble must agree on {key} ({a!r} in the "
                f"first, {b!r} in the second)"
            )


def member_count(config: Config, checkpoints: int, given: set[str]) -> Config:
    """``config`` with the members of a deterministic model's views: with ``checkpoints`` > 1 or ``sample.tta``, a
    deterministic model has ``views`` distinct members (N checkpoints x 8 transforms with TTA; ``ensemble.views``).
    Unless ``given`` (the ``sample.*`` keys the user set) holds them, ``sample.samples`` becomes that count and
    ``sample.batch_size`` it too (all members in one call); more members than views is a ``UserError`` (they
    would repeat some views, which the fusion would then weigh twice). Stochastic models keep their
    ``sample.samples``, members cycling through the views."""
    s = config.sample
    distinct = views(checkpoints, s.tta)
    if config.method is not Method.DETERMINISTIC or distinct == 1:
        return config
    if "samples" in given and s.samples > distinct:
        how = f"{checkpoints} checkpoint(s)" + (" x 8 flips/turns (sample.tta)" if s.tta else "")
        raise UserError(
            f"sample.samples={s.samples}: a deterministic model has {distinct} distinct members here ({how}); more "
            f"would repeat some of them; use --samples {distinct} or fewer"
        )
    samples = s.samples if "samples" in given else distinct
    batch = s.batch_size if "batch_size" in given else samples
    return dataclasses.replace(config, sample=dataclasses.replace(s, samples=samples, batch_size=batch))
