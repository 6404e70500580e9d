"""Label maps in ``evaluate``: which classes to read them with, reading predicted label maps, class masks of
any spatial rank, per-class calibration sums.

The classes come from ``--classes`` (``parse_classes``), else ``PRED/config.yaml`` (``data.classes``), else the
dataset (nnU-Net ``dataset.json``, SSL4MIS label values); none means binary, read as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diffuseg.data.formats.files import LOSSY_SUFFIXES, label_values, read_file, suffix_of
from diffuseg.errors import UserError
from diffuseg.evaluation import class_metrics as CM
from diffuseg.labels import ClassSpec, LabelScheme

__all__ = ["add_class_calibration", "class_masks", "parse_classes", "read_label_map", "scheme_classes"]


def class_masks(scheme: LabelScheme, atoms: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """``scheme.class_masks`` for atom maps of any spatial rank: ``(..., *S)`` with ``dims`` spatial axes (2, or 3
    for a volume) -> ``(..., K, *S)`` bool."""
    lead, spatial = atoms.shape[: atoms.dim() - dims], atoms.shape[atoms.dim() - dims :]
    flat = scheme.class_masks(atoms.reshape(*lead, 1, -1))  # (..., K, 1, P)
    return flat.reshape(*lead, len(scheme.names), *spatial)


def scheme_classes(pred: str | os.PathLike, classes: Sequence | str | None) -> tuple[tuple, tuple[int, ...]]:
    """The ``(classes, foreground)`` to read PRED and GT with: ``classes`` when given (``ClassSpec``s, mappings, or
    the ``--classes`` text ``parse_classes`` reads), else ``data.classes`` and ``data.foreground`` of
    ``PRED/config.yaml`` (the resolved config ``predict`` writes), else ``((), ())``: binary, unless the dataset
    declares classes itself (nnU-Net ``dataset.json``, SSL4MIS label values)."""
    if isinstance(classes, str):
        return parse_classes(classes), ()
    if classes:
        return tuple(classes), ()
    path = Path(pred) / "config.yaml"
    if not path.is_file():
        return (), ()
    import yaml

    try:
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as err:
        raise UserError(f"{path}: unreadable config ({err}); pass the classes with --classes") from None
    found = data.get("classes") or ()
    foreground = data.get("foreground") or ()
    if not isinstance(found, (list, tuple)) or not isinstance(foreground, (list, tuple)):
        raise UserError(f"{path}: data.classes and data.foreground must be lists; pass the classes with --classes")
    return tuple(found), tuple(int(v) for v in foreground)


def parse_classes(text: str) -> tuple[ClassSpec, ...]:
    """``--classes`` text -> class specs: ``NAME=V[+V...][:LABEL]`` separated by commas, e.g. ``RV=1,Myo=2,LV=3``
    or the BraTS regions ``WT=1+2+4,TC=1+4,ET=4`` (``LABEL``: the value written for a region whose own value is
    ambiguous; ``labels.label_scheme`` checks them)."""
    specs = []
    for item in (t.strip() for t in text.split(",")):
        name, sep, rest = item.partition("=")
        values, colon, label = rest.partition(":")
        try:
            numbers = tuple(int(v) for v in values.split("+"))
            written = int(label) if colon else None
        except ValueError:
            numbers = ()
        if not sep or not name.strip() or not numbers:
            raise UserError(
                f"--classes: {item!r} is not NAME=V[+V...][:LABEL] (e.g. RV=1,Myo=2,LV=3 or WT=1+2+4,TC=1+4,ET=4)"
            )
        specs.append(ClassSpec(name.strip(), numbers, written))
    return tuple(specs)


def read_label_map(path: Path, scheme: LabelScheme) -> np.ndarray:
    """A predicted label map (the dataset's own values, as ``predict`` writes them for several classes) as an
    atom map uint8 of ``scheme``; ``UserError`` for a lossy file, a non-integer value or an undeclared value."""
    data = read_file(path, as_mask=True)
    array = data.array
    if array.ndim == 3 and array.shape[2] == 1 and data.affine is not None:
        array = array[:, :, 0]
    if suffix_of(path) in LOSSY_SUFFIXES:
        raise UserError(f"{path}: a label map cannot be scored from a lossy JPEG; write it as PNG (predict does)")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise UserError(f"{path}: predicted label map holds non-integer values (a probability map?)")
        array = array.astype(np.int64)
    unknown = scheme.undeclared(label_values(array))
    if unknown:
        shown = ", ".join(str(v) for v in sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        declared = ", ".join(f"{c.name}={'+'.join(map(str, c.values))}" for c in scheme.classes)
        raise UserError(f"{path}: label value(s) {shown} not declared by the classes ({declared})")
    return scheme.encode(array)


def add_class_calibration(
    sums: dict[str, torch.Tensor], scheme: LabelScheme, samples: torch.Tensor, masks: torch.Tensor, bins: int
) -> None:
    """Per class k: the bins of the members' frequency of k against the annotators' (``class_metrics.
    class_calibration_bins``), over all pixels (``all/<k>``) and the pixels any sample or annotator marks as k
    (``foreground/<k>``); ``all`` and ``foreground`` pool every (pixel, class) pair of every class."""
    s_cm, y_cm = class_masks(scheme, samples), class_masks(scheme, masks)
    for kind, only in (("all", False), ("foreground", True)):
        per = CM.class_calibration_bins(s_cm, y_cm, bins, foreground_only=only)
        for k, name in enumerate(scheme.names):
            sums[f"{kind}/{name}"] += per[k]
        sums[kind] += per.sum(0)
