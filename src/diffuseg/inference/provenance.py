"""``OUTPUT/prediction.json``: which checkpoint (path, digest, training step) and network wrote a prediction folder.

The report's headline reads it beside ``OUTPUT/config.yaml`` (the resolved config, sampler settings
included). Fields: ``checkpoint`` (absolute path), ``sha256`` (of the checkpoint file), ``step`` (training steps
the checkpoint had made), ``network`` (registry name), ``parameters`` (count), ``run_folder`` (the run folder,
absolute), ``diffuseg`` (version); with several classes also ``classes`` (``[{name, values[, label]}, ...]``,
the label values each class is written with in the label maps: ``labels.LabelScheme.to_dict``). An ensemble of
checkpoints (``inference.models``) records ``checkpoints``, one such record (checkpoint ... run_folder) per
checkpoint in member order, instead of the one checkpoint's fields. No time stamp: a rerun writes the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffuseg.config import Config
from diffuseg.files import write_text_atomic
from diffuseg.inference.models import Model

PROVENANCE_NAME = "prediction.json"


def checkpoint_record(model: Model) -> dict[str, Any]:
    """``{checkpoint, sha256, step, network, parameters, run_folder}`` of one checkpoint."""
    return {
        "checkpoint": str(Path(model.path).resolve()),
        "sha256": model.sha256,
        "step": int(model.step),
        "network": model.config.model.name,
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "run_folder": _run_folder(Path(model.path), model.config.train.out_dir),
    }


def write_provenance(out: Path, models: Sequence[Model], config: Config) -> None:
    """Write ``out/prediction.json`` (atomically) for a prediction from ``models`` (one checkpoint, or an
    ensemble) with the resolved ``config`` (its classes)."""
    from diffuseg import __version__

    if len(models) == 1:
        record = checkpoint_record(models[0])
    else:
        record = {"checkpoints": [checkpoint_record(m) for m in models]}
    record["diffuseg"] = __version__
    scheme = config.data.scheme
    if not scheme.binary:
        record["classes"] = scheme.to_dict()["classes"]
    write_text_atomic(out / PROVENANCE_NAME, json.dumps(record, indent=1) + "\n")


def _run_folder(checkpoint: Path, out_dir: str) -> str:
    """The run folder, absolute: the checkpoint's ``RUN`` in ``RUN/checkpoints/FILE``, else ``train.out_dir``
    (absolute for runs that recorded it so)."""
    if checkpoint.parent.name == "checkpoints":
        return str(checkpoint.parent.parent.absolute())
    return out_dir


def recorded_checkpoints(record: dict[str, Any]) -> list[str]:
    """The checkpoint paths a ``prediction.json`` record names, in member order (one, or an ensemble's)."""
    if "checkpoint" in record:
        return [str(record["checkpoint"])]
    members = record.get("checkpoints")
    return (
        [str(m["checkpoint"]) for m in members if isinstance(m, dict) and "checkpoint" in m]
        if isinstance(members, list)
        else []
    )


def read_provenance(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/prediction.json`` as a dict; ``{}`` when it is missing or unreadable."""
    try:
        record = json.loads((Path(folder) / PROVENANCE_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}
