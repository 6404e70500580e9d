"""``OUTPUT/prediction.json``: which checkpoint (path, training step) and network wrote a prediction folder.

The report's headline reads it beside ``OUTPUT/config.yaml`` (the resolved config, sampler settings
included). Fields: ``checkpoint`` (absolute path), ``step`` (training steps the checkpoint had made),
``network`` (registry name), ``parameters`` (count), ``run_folder`` (the run folder, absolute),
``diffuseg`` (version); with several classes also ``classes`` (``[{name, values[, label]}, ...]``, the label
values each class is written with in the label maps: ``labels.LabelScheme.to_dict``). No time stamp: a
rerun writes the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from diffuseg.config import Config
from diffuseg.files import write_text_atomic

PROVENANCE_NAME = "prediction.json"


def write_provenance(out: Path, checkpoint: str | os.PathLike, step: int, config: Config, net: torch.nn.Module) -> None:
    """Write ``out/prediction.json`` (atomically) for the prediction of ``net`` from ``checkpoint`` at ``step``.

    Args:
        out: the prediction folder.
        checkpoint: the checkpoint predicted with (recorded as an absolute path).
        step: training steps the checkpoint had made.
        config: the resolved config (network name, run folder, classes).
        net: the network (its parameter count).
    """
    from diffuseg import __version__

    record = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "step": int(step),
        "network": config.model.name,
        "parameters": sum(p.numel() for p in net.parameters()),
        "run_folder": _run_folder(Path(checkpoint), config.train.out_dir),
        "diffuseg": __version__,
    }
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


def read_provenance(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/prediction.json`` as a dict; ``{}`` when it is missing or unreadable."""
    try:
        record = json.loads((Path(folder) / PROVENANCE_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}
