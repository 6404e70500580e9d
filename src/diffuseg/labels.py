"""Label schemes: which label values of a dataset make which class, and the maps between them.

Three spaces (letters as in docs/architecture.md: A annotators, C classes, L atoms):

- *label values*: the integers in the files (ACDC 0/1/2/3, BraTS 0/1/2/4).
- *atoms*: 0 = background, 1..L = the declared label values ``scheme.values`` in declaration order. Readers yield
  atom maps, the cache stores them, samplers decode into them. Binary (no classes declared) has one atom:
  1 = foreground (the ``foreground`` values, or any non-zero value when that is empty): {0,1} masks.
- *channels*: what a network sees, ``scheme.one_hot(atoms)`` (..., C, H, W), ``scheme.channels`` of them: 1 for
  one class (binary); C + 1 for C >= 2 exclusive classes (channel 0 = background, decoded by argmax); C for
  overlapping regions (nnU-Net's region-based training, Isensee et al. 2021; decoded by per-channel threshold
  and painting). Shapes below write C for that channel count.

Classes are EXCLUSIVE when no two share a label value, else overlapping REGIONS (BraTS WT {1,2,4}, TC {1,4},
ET {4}). The value written for a class (``painted``) is its ``label`` when given; else, for exclusive classes,
its single value; for regions, its values minus those of every later region (nnU-Net's ``regions_class_order``
painting: WT -> 2, TC -> 1, ET -> 4, painted in declaration order so later regions overwrite earlier ones).
A class whose painted set is not exactly one value must give ``label``.

The IGNORE label (nnU-Net v2's ``"ignore"`` in ``dataset.json``: not a class, the highest label value; pixels
with it are not annotated) is the stored atom ``ignore_atom`` = L + 1. It is no channel: ``class_masks`` and
``one_hot`` read it as background, ``decode`` never yields it, and ``valid`` marks the other pixels, over which
losses and metrics are taken.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffuseg.errors import UserError

__all__ = ["ClassSpec", "LabelScheme", "label_scheme"]

MAX_ATOMS = 255  # atoms are stored as uint8 (the ignore label's atom included)


@dataclass(frozen=True)
class ClassSpec:
    """One declared class: ``name``, the label ``values`` that make it, and optionally the ``label`` written for it."""

    name: str
    values: tuple[int, ...]
    label: int | None = None


@dataclass(frozen=True)
class LabelScheme:
    """The classes of a dataset and the maps label values <-> atoms <-> channels. Build it with ``label_scheme``.

    ``classes`` is ``()`` for binary (then ``foreground`` holds the foreground values, ``()`` = any non-zero).
    ``painted[k]`` is the label value written for class k. ``ignore``: the label value of unannotated pixels
    (module docstring), or ``None``.
    """

    classes: tuple[ClassSpec, ...] = ()
    foreground: tuple[int, ...] = ()
    painted: tuple[int, ...] = ()
    ignore: int | None = None

    # -- what the scheme is -------------------------------------------------------------------------------------

    @property
    def binary(self) -> bool:
        """No classes declared: binary (one class, any non-zero or ``foreground`` values)."""
        return not self.classes

    @property
    def names(self) -> tuple[str, ...]:
        """Class names, C of them (binary: ``("foreground",)``)."""
        return tuple(c.name for c in self.classes) if self.classes else ("foreground",)

    @property
    def exclusive(self) -> bool:
        """No label value is in two classes (binary counts as exclusive, C = 1)."""
        return len(self.values) == sum(len(c.values) for c in self.classes) if self.classes else True

    @property
    def values(self) -> tuple[int, ...]:
        """The declared label values; atom i (1..L) stands for ``values[i - 1]``. Binary: the ``foreground``
        values (``()`` = any non-zero), all of them atom 1."""
        if not self.classes:
            return self.foreground
        return tuple(dict.fromkeys(v for c in self.classes for v in c.values))

    @property
    def atoms(self) -> int:
        """L, the number of non-background atoms (binary: 1)."""
        return len(self.values) if self.classes else 1

    @property
    def stored_atoms(self) -> int:
        """The largest atom a label map read from disk holds: L, or L + 1 with an ignore label."""
        return self.atoms + (self.ignore is not None)

    @property
    def ignore_atom(self) -> int | None:
        """The atom of the ignore label (L + 1), or ``None``."""
        return None if self.ignore is None else self.atoms + 1

    def valid(self, atoms: Tensor) -> Tensor | None:
        """``(..., H, W)`` atom maps -> bool, False where a pixel is ``ignore``; ``None`` when no pixel is (then
        every pixel counts and callers keep their plain path)."""
        if self.ignore is None:
            return None
        valid = atoms != self.ignore_atom
        return None if bool(valid.all()) else valid

    @property
    def channels(self) -> int:
        """Network channels: 1 for one class; C + 1 for C >= 2 exclusive classes (channel 0 = background); C for
        regions."""
        k = len(self.names)
        if k == 1:
            return 1
        return k + 1 if self.exclusive else k

    def same_classes(self, other: LabelScheme) -> bool:
        """Whether ``other`` declares the same classes: the same values (and written labels) in the same order,
        with names equal up to case (``MYO`` and ``Myo`` are one class); the ignore label is not compared."""

        def key(scheme: LabelScheme) -> tuple:
            return scheme.foreground, tuple((c.name.casefold(), c.values, c.label) for c in scheme.classes)

        return key(self) == key(other)

    # -- label values <-> atoms ---------------------------------------------------------------------------------

    def undeclared(self, label_values: np.ndarray | Tensor | Iterable) -> set:
        """The non-zero values of ``label_values`` (an array, or the distinct values) that no class declares.
        Binary: always empty (any non-zero value is foreground, or the non-``foreground`` values are background)."""
        if not self.classes:
            return set()
        found = _distinct(label_values)
        declared = {*self.values, self.ignore}
        return {v for v in found if v != 0 and v not in declared}

    def encode(self, label_values: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Label map (any shape, values in the file) -> atom map uint8 of the same shape and type (NumPy or
        torch). Raises ``ValueError`` naming the undeclared values; readers check ``undeclared`` first."""
        unknown = self.undeclared(label_values)
        if unknown:
            raise ValueError(f"undeclared label value(s) {sorted(unknown)} (declared: {list(self.values)})")
        is_tensor = isinstance(label_values, Tensor)
        a = label_values.cpu().numpy() if is_tensor else np.asarray(label_values)
        if not self.classes:
            out = (np.isin(a, self.foreground) if self.foreground else a != 0).astype(np.uint8)
        else:
            out = np.zeros(a.shape, dtype=np.uint8)
            for atom, value in enumerate(self.values, start=1):
                out[a == value] = atom
        if self.ignore is not None:
            out[a == self.ignore] = self.ignore_atom
        return torch.from_numpy(out) if is_tensor else out

    def to_values(self, atoms: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Atom map -> label values in the dataset's own values (int64, same shape and type). Binary: {0, 1}
        unchanged (writers scale it, e.g. to 255 in PNG)."""
        lut = np.array((0, *self.values), dtype=np.int64) if self.classes else np.array([0, 1], dtype=np.int64)
        if self.ignore is not None:
            lut = np.append(lut, self.ignore)
        if isinstance(atoms, Tensor):
            return torch.from_numpy(lut).to(atoms.device)[atoms.long()]
        return lut[np.asarray(atoms).astype(np.int64)]

    # -- atoms <-> channels -------------------------------------------------------------------------------------

    def class_masks(self, atoms: Tensor) -> Tensor:
        """Atom map (..., H, W) int -> per-class masks (..., C, H, W) bool (regions overlap; ignore in none)."""
        atoms = self._without_ignore(atoms)
        if not self.classes:
            return (atoms == 1).unsqueeze(-3)
        table = self._membership(atoms.device)  # (L + 1, C)
        return table[atoms].movedim(-1, -3)

    def _without_ignore(self, atoms: Tensor) -> Tensor:
        """``atoms`` as int64 with the ignore atom read as background (0)."""
        atoms = atoms.long()
        return atoms if self.ignore is None else atoms.masked_fill(atoms == self.ignore_atom, 0)

    def one_hot(self, atoms: Tensor) -> Tensor:
        """Atom map (..., H, W) int -> channels (..., C, H, W) float {0, 1}. One class (binary): the foreground
        channel only, the {0, 1} mask itself; C >= 2 exclusive: background channel 0 then one per class (C + 1
        channels); regions: one channel per region. A training batch's ``mask`` (B, 1, H, W) gives (B, 1, C, H, W): pass
        ``mask[:, 0]``."""
        masks = self.class_masks(atoms)
        if self.channels == len(self.names) + 1:
            masks = torch.cat([(self._without_ignore(atoms) == 0).unsqueeze(-3), masks], dim=-3)
        return masks.float()

    def decode(self, soft: Tensor, threshold: float = 0.5) -> Tensor:
        """Channels (..., C, H, W) in [0, 1] (or not yet clipped to it) -> atom map (..., H, W) int64.

        One class and regions: channel k is on where ``soft > threshold``, regions painted in declaration order
        with their ``painted`` value (later ones overwrite). C >= 2 exclusive: argmax over the C + 1 channels
        (``threshold`` unused; ties go to the lower channel, background first)."""
        if soft.shape[-3] != self.channels:
            raise ValueError(f"decode: expected {self.channels} channels at dim -3, got shape {tuple(soft.shape)}")
        if not self.classes:
            return (soft[..., 0, :, :] > threshold).long()
        atom_of = [self.values.index(v) + 1 for v in self.painted]
        if self.channels == len(self.names) + 1:
            lut = torch.tensor([0, *atom_of], dtype=torch.int64, device=soft.device)
            return lut[soft.argmax(dim=-3)]
        out = torch.zeros(soft.shape[:-3] + soft.shape[-2:], dtype=torch.int64, device=soft.device)
        for k, atom in enumerate(atom_of):
            out = torch.where(soft[..., k, :, :] > threshold, torch.full_like(out, atom), out)
        return out

    def _membership(self, device: torch.device) -> Tensor:
        """(L + 1, C) bool: atom i belongs to class k."""
        table = torch.zeros((self.atoms + 1, len(self.classes)), dtype=torch.bool, device=device)
        for k, spec in enumerate(self.classes):
            for v in spec.values:
                table[self.values.index(v) + 1, k] = True
        return table

    # -- provenance ---------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML / JSON) that ``from_dict`` reads back."""
        return {
            "classes": [
                {"name": c.name, "values": list(c.values), **({} if c.label is None else {"label": c.label})}
                for c in self.classes
            ],
            "foreground": list(self.foreground),
            **({} if self.ignore is None else {"ignore": self.ignore}),
        }

    @staticmethod
    def from_dict(values: Mapping[str, Any]) -> LabelScheme:
        return label_scheme(values.get("classes", ()), values.get("foreground", ()), ignore=values.get("ignore"))


def _distinct(label_values: np.ndarray | Tensor | Iterable) -> set:
    if isinstance(label_values, Tensor):
        label_values = label_values.cpu().numpy()
    found = np.unique(label_values).tolist() if isinstance(label_values, np.ndarray) else list(label_values)
    return {int(v) if float(v).is_integer() else float(v) for v in found}


def _spec(item: ClassSpec | Mapping[str, Any], where: str) -> ClassSpec:
    """A ``ClassSpec`` from a spec or a mapping ``{name, values[, label]}``, with its own values checked."""
    if isinstance(item, ClassSpec):
        name, values, label = item.name, item.values, item.label
    elif isinstance(item, Mapping):
        unknown = sorted(set(item) - {"name", "values", "label"})
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: label, name, values")
        if "name" not in item or "values" not in item:
            raise UserError(f"{where}: a class needs a name and values, e.g. {{name: LV, values: [3]}}")
        name, values, label = item["name"], item["values"], item.get("label")
    else:
        raise UserError(f"{where}: expected a mapping {{name, values[, label]}}, got {item!r}")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}.name: expected a non-empty string, got {name!r}")
    if isinstance(values, (int, str)) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, Sequence) or not values:
        raise UserError(f"{where}.values: expected a non-empty list of label values, got {values!r}")
    out = []
    for i, v in enumerate(values):
        out.append(_label_value(v, f"{where}.values[{i}]"))
    if len(set(out)) != len(out):
        raise UserError(f"{where}.values: {list(out)} repeats a value")
    if label is not None:
        label = _label_value(label, f"{where}.label")
        if label not in out:
            raise UserError(f"{where}.label: {label} is not one of the class's values {list(out)}")
    return ClassSpec(name.strip(), tuple(out), label)


def _label_value(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str, float)):
        raise UserError(f"{where}: expected a label value (an integer >= 1), got {v!r}")
    try:
        number = float(v)
    except ValueError:
        raise UserError(f"{where}: expected a label value (an integer >= 1), got {v!r}") from None
    if not number.is_integer() or number < 1:
        reason = " (0 is the background)" if number == 0 else ""
        raise UserError(f"{where}: expected a label value (an integer >= 1), got {v!r}{reason}")
    return int(number)


def label_scheme(
    classes: Sequence[ClassSpec | Mapping[str, Any]] = (),
    foreground: Sequence[int] = (),
    where: str = "data.classes",
    ignore: int | None = None,
) -> LabelScheme:
    """The scheme of ``classes`` (``data.classes``; ``()`` = binary, foreground by ``foreground``), with the
    ``ignore`` label value (``data.ignore_label``; ``None``: none), which must be above every declared value.

    Raises ``UserError`` naming ``where[i]`` and the bad value: a class without name or values, a value < 1 or
    not an integer, a repeated name, ``label`` outside the class's values, a class whose written value is
    ambiguous (give ``label``), two classes written with the same value, two classes of the same values, regions
    declared in an order that never writes one of them (``_check_region_order``), or ``foreground`` given with
    classes.
    """
    foreground = tuple(int(v) for v in foreground)
    if isinstance(classes, (Mapping, str)):
        raise UserError(f"{where}: expected a list of classes {{name, values[, label]}}, got {classes!r}")
    specs = tuple(_spec(item, f"{where}[{i}]") for i, item in enumerate(classes))
    scheme = _classes_scheme(specs, foreground, where)
    if ignore is None:
        return scheme
    ignore = _label_value(ignore, "data.ignore_label")
    highest = max((*scheme.values, *([1] if scheme.binary and not foreground else [])), default=1)
    if ignore <= highest:
        raise UserError(
            f"data.ignore_label={ignore}: the ignore label must be above every label value ({highest}), as in nnU-Net"
        )
    if scheme.atoms + 1 > MAX_ATOMS:
        raise UserError(f"{where}: {scheme.atoms} label values and an ignore label; at most {MAX_ATOMS} in all")
    return dataclasses.replace(scheme, ignore=ignore)


def _classes_scheme(specs: tuple[ClassSpec, ...], foreground: tuple[int, ...], where: str) -> LabelScheme:
    """``label_scheme`` without the ignore label."""
    if not specs:
        return LabelScheme(foreground=foreground)
    if foreground:
        raise UserError(
            f"{where}: data.foreground ({list(foreground)}) and data.classes are exclusive; declare the values "
            "in data.classes"
        )
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        key = spec.name.casefold()
        if key == "background":
            raise UserError(f"{where}[{i}].name: 'background' is implicit (label value 0); do not declare it")
        if key in seen:
            raise UserError(f"{where}[{i}].name: {spec.name!r} is also the name of {where}[{seen[key]}]")
        seen[key] = i
    for i, spec in enumerate(specs):
        twin = next((j for j in range(i) if set(specs[j].values) == set(spec.values)), None)
        if twin is not None:
            raise UserError(
                f"{where}[{i}]: {spec.name!r} has the values {list(spec.values)} of {specs[twin].name!r} "
                f"({where}[{twin}]): two names for one class; keep one"
            )
    all_values = [v for s in specs for v in s.values]
    exclusive = len(set(all_values)) == len(all_values)
    if not exclusive:
        _check_region_order(specs, where)
    if len(set(all_values)) > MAX_ATOMS:
        raise UserError(f"{where}: {len(set(all_values))} label values declared; at most {MAX_ATOMS}")
    painted = []
    for i, spec in enumerate(specs):
        if spec.label is not None:
            painted.append(spec.label)
            continue
        later = {v for s in specs[i + 1 :] for v in s.values} if not exclusive else set()
        own = [v for v in spec.values if v not in later]
        if len(own) != 1:
            kind = "region" if not exclusive else "class"
            detail = f"its values {list(spec.values)}" if exclusive else f"values {own} (not in any later region)"
            raise UserError(
                f"{where}[{i}]: {kind} {spec.name!r} would be written as one of {detail}; "
                "give label: V, the value written for it"
            )
        painted.append(own[0])
    for i, value in enumerate(painted):
        if painted.index(value) != i:
            j = painted.index(value)
            raise UserError(
                f"{where}[{i}]: {specs[i].name!r} would be written as {value}, as {specs[j].name!r} is; "
                "give each class its own label"
            )
    return LabelScheme(classes=specs, painted=tuple(painted))


def _check_region_order(specs: Sequence[ClassSpec], where: str) -> None:
    """``UserError`` for a region whose values all lie in later regions: painted in declaration order, later regions
    overwrite it everywhere, so it could never be written (ET, TC, WT declared small to large). Names the order
    from large to small, which paints every nested region."""
    for i, spec in enumerate(specs):
        later = {v for s in specs[i + 1 :] for v in s.values}
        if set(spec.values) <= later:
            order = sorted(specs, key=lambda s: -len(s.values))
            raise UserError(
                f"{where}[{i}]: region {spec.name!r} can never be written: each of its values {list(spec.values)} is "
                f"in a later region, painted over it; declare the regions from large to small: "
                f"{', '.join(s.name for s in order)}"
            )
