"""Splits by patient: which patients train and which validate, from lists, folds or a seed. No patient is ever on
both sides, and the patients of a dataset's ``test.list`` are on neither.

Patients (``apply_patient_rule``): each layout names a case's patient by its own rule (``Reader.patient_rule``:
SSL4MIS and nnU-Net drop ACDC's ``_frameNN``, DDTI takes the number before the first ``_``, LIDC the patient
folder, ...). ``data.patient_regex`` replaces it by a regular expression matched at the start of each case name
(``case_names``): its group ``patient``, else its first group, else the whole match.

Where the split comes from (``split_source``), first match wins:
1. ``data.train_patients`` and ``data.val_patients`` (both or neither);
2. ``data.splits_file``, nnU-Net's ``splits_final.json``: its fold ``data.fold`` (default 0);
3. ``data.fold`` (``--fold K``): fold K of ``splits_final.json`` in the dataset root when there is one, else of a
   k-fold split by patient (``data.folds`` folds, seeded by ``data.split_seed``; ``folds.kfold_groups``);
4. ``train_patients.txt`` and ``val_patients.txt`` in the dataset root (``data.root``);
5. the same two files in the root's parent folder (e.g. ``--data lidc/LIDC-IDRI-slices`` finds ``lidc/*.txt``);
6. ``splits_final.json`` in the dataset root: its fold 0;
7. SSL4MIS's ``val.list`` in the root, with ``train.list`` (they name cases, ``patient038_frame01``; the case's
   patient goes to that side) or without it (every other patient trains);
8. a seeded split by patient (``data.val_fraction`` of the patients, ``data.split_seed``); when the root has a
   ``train.list`` (and no ``val.list``), of its patients only.
Whatever the source, the patients of a ``test.list`` in the root are held out of both sides; a list or fold that
puts one on a side is refused. Case lists name cases of the dataset: an entry that names none, or one that leads
out of the folder (``../x``, an absolute path), is refused, naming the file, the line and the entry.

A training run writes what it used to ``RUN/split.json`` (``split_record``, ``write_split``): the source, the
patient rule, the train and validation patients and case ids, the held-out patients and every fold by case name;
and those folds as nnU-Net's ``RUN/splits_final.json``. ``split_cases`` reads split.json back for ``predict`` and
``evaluate --split``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from diffuseg.config import DataConfig
from diffuseg.data.folds import SPLITS_FINAL, Fold, kfold_groups, read_splits_final, write_splits_final
from diffuseg.data.formats import Reader
from diffuseg.data.formats.ssl4mis import case_of, read_list
from diffuseg.enums import Layout, SplitKind
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic

LIST_NAMES = ("train_patients.txt", "val_patients.txt")
DATASET_LIST_NAMES = ("train.list", "val.list")  # SSL4MIS, one case name per line
TEST_LIST = "test.list"  # SSL4MIS: its patients are held out of training and validation
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class SplitSource:
    """The rule that chooses a split. ``train_list``/``val_list`` are set for the list kinds (``train_list`` alone
    for a seeded split over a ``train.list``), ``splits_file`` and ``fold`` for the fold kinds, ``test_list`` when
    a ``test.list`` holds patients out."""

    kind: SplitKind
    train_list: str = ""
    val_list: str = ""
    val_fraction: float = 0.0
    seed: int = 0
    test_list: str = ""
    splits_file: str = ""
    fold: int = 0
    folds: int = 0

    def describe(self) -> str:
        kind = self.kind
        if kind is SplitKind.SEED:
            pool = f" over the patients of {self.train_list}" if self.train_list else ""
            return f"seeded split by patient{pool} (data.val_fraction={self.val_fraction}, data.split_seed={self.seed})"
        if kind is SplitKind.KFOLD:
            return (
                f"fold {self.fold} of a {self.folds}-fold split by patient (data.fold={self.fold}, "
                f"data.folds={self.folds}, data.split_seed={self.seed})"
            )
        if kind is SplitKind.SPLITS_FILE:
            return f"fold {self.fold} of {self.splits_file} (nnU-Net's splits, by case name)"
        if kind is SplitKind.DATASET_LISTS:
            if not self.train_list:
                return f"case list {self.val_list} for validation, every other patient for training (the dataset's own)"
            return f"case lists {self.train_list} and {self.val_list} (the dataset's own split, by patient)"
        where = {
            SplitKind.CONFIG: "data.train_patients / data.val_patients",
            SplitKind.ROOT_LISTS: "found in the dataset folder",
            SplitKind.PARENT_LISTS: "found in the dataset's parent folder",
        }[kind]
        return f"patient lists {self.train_list} and {self.val_list} ({where})"


@dataclass(frozen=True)
class Split:
    """A split of a reader's entries: ``train`` and ``val`` entry indices, chosen by ``source``, with patients told
    apart by ``patient_rule``. ``held_out``: patients on neither side by a ``test.list``; ``left_out``: patients on
    neither side because no list or fold names them; ``folds``: every fold by case name (this split alone when it
    is not a fold split), as ``splits_final.json`` holds them."""

    source: SplitSource
    train: list[int]
    val: list[int]
    patient_rule: str
    held_out: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    folds: tuple[Fold, ...] = ()

    def describe(self) -> str:
        """One line: where the split comes from and who is on neither side."""
        text = self.source.describe()
        if self.held_out:
            text += f"; the {len(self.held_out)} patient(s) of {self.source.test_list} held out (never trained on)"
        if self.left_out:
            text += f"; {len(self.left_out)} patient(s) on no list left out"
        return text


def find_patient_lists(root: str | os.PathLike) -> tuple[SplitKind, Path, Path] | None:
    """``train_patients.txt`` and ``val_patients.txt`` in ``root``, else in its parent; None when neither has both.
    ``UserError`` for one alone in ``root`` (the dataset's own list; one alone in the parent is no pair, not read)."""
    root = Path(root).resolve()
    for kind, folder in ((SplitKind.ROOT_LISTS, root), (SplitKind.PARENT_LISTS, root.parent)):
        found = [folder / name for name in LIST_NAMES]
        if all(p.is_file() for p in found):
            return kind, found[0], found[1]
        if kind is SplitKind.ROOT_LISTS and (alone := [p for p in found if p.is_file()]):  # used or refused
            raise UserError(f"{alone[0]}: patient lists come in pairs ({' and '.join(LIST_NAMES)}); add the other one")
    return None


def split_source(cfg: DataConfig) -> SplitSource:
    """The split ``cfg`` asks for, by the rule in the module docstring; ``UserError`` for one list alone, for two
    sources named at once and for a fold outside ``data.folds``."""
    root = Path(cfg.root)
    test = root / TEST_LIST
    common: dict[str, Any] = {"seed": cfg.split_seed, "test_list": str(test) if test.is_file() else ""}
    fold, beside = cfg.fold, root / SPLITS_FINAL
    if cfg.train_patients or cfg.val_patients:
        if not (cfg.train_patients and cfg.val_patients):
            raise UserError("data.train_patients and data.val_patients must be given together")
        if fold is not None or cfg.splits_file:
            raise UserError(
                "data.train_patients/val_patients and data.fold/data.splits_file both choose the split: give one"
            )
        return SplitSource(SplitKind.CONFIG, str(cfg.train_patients), str(cfg.val_patients), **common)
    if cfg.splits_file or (fold is not None and beside.is_file()):
        return SplitSource(SplitKind.SPLITS_FILE, splits_file=cfg.splits_file or str(beside), fold=fold or 0, **common)
    if fold is not None:
        if fold >= cfg.folds:
            raise UserError(f"data.fold={fold}: the folds are 0 .. {cfg.folds - 1} (data.folds={cfg.folds})")
        return SplitSource(SplitKind.KFOLD, fold=fold, folds=cfg.folds, **common)
    found = find_patient_lists(root)
    if found is not None:
        return SplitSource(found[0], str(found[1]), str(found[2]), **common)
    if beside.is_file():
        return SplitSource(SplitKind.SPLITS_FILE, splits_file=str(beside), **common)
    train, val = (root / name for name in DATASET_LIST_NAMES)
    pool = str(train) if train.is_file() else ""
    if val.is_file():
        return SplitSource(SplitKind.DATASET_LISTS, pool, str(val), **common)
    return SplitSource(SplitKind.SEED, pool, val_fraction=cfg.val_fraction, **common)


def case_names(reader: Reader) -> list[str]:
    """Per entry, the name of its case as lists and ``splits_final.json`` give it: the volume's for a slice of a
    volume, the slice file's case for an SSL4MIS slice (``patient003_frame01``), else the case id."""
    ssl4mis = reader.layout == Layout.SSL4MIS
    return [e.volume_id or (case_of(e.case_id) if ssl4mis else e.case_id) for e in reader.entries]


def apply_patient_rule(reader: Reader, regex: str) -> str:
    """Set each entry's ``patient_id`` by ``regex`` (``data.patient_regex``) matched at the start of its case name
    (group ``patient``, else group 1, else the whole match); ``""`` keeps the reader's own rule. Returns the rule in
    words; ``UserError`` naming a case that the regex gives no patient id."""
    if not regex:
        return reader.patient_rule
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise UserError(f"data.patient_regex {regex!r}: not a regular expression ({err})") from None
    group: str | int = "patient" if "patient" in pattern.groupindex else int(pattern.groups > 0)
    entries = []
    for entry, name in zip(reader.entries, case_names(reader)):
        m = pattern.match(name)
        if m is None or not m.group(group):
            raise UserError(f"data.patient_regex {regex!r} gives no patient id for case {name!r} ({entry.images[0]})")
        entries.append(dataclasses.replace(entry, patient_id=m.group(group)))
    reader.entries = entries
    return f"data.patient_regex {regex!r} on each case name"


def plan_split(reader: Reader, cfg: DataConfig) -> Split:
    """The split of ``reader``'s entries that ``cfg`` asks for (module docstring). First sets each entry's patient
    id by the patient rule (``apply_patient_rule``), so the cache, the items and split.json name the same patients.
    ``UserError`` for a bad list, fold or rule, and for a ``test.list`` patient on a side."""
    rule = apply_patient_rule(reader, cfg.patient_regex)
    source = split_source(cfg)
    names, patients = case_names(reader), reader.patients
    cases = dict(zip(names, patients))
    held = set(list_patients(source.test_list, cases)) if source.test_list else set()
    folds: list[Fold] = []
    if source.kind in (SplitKind.SEED, SplitKind.KFOLD):
        pool_ids = set(list_patients(source.train_list, cases)) if source.train_list else set(patients) - held
        _refuse_held(pool_ids, held, source.train_list, source.test_list)
        pool = [i for i, p in enumerate(patients) if p in pool_ids]
        if source.kind is SplitKind.SEED:
            tr, va = split_by_patient([patients[i] for i in pool], cfg.val_fraction, cfg.split_seed)
            train, val = [pool[i] for i in tr], [pool[i] for i in va]
        else:
            groups = kfold_groups([patients[i] for i in pool], source.folds, source.seed)
            folds = [_fold(*_by_patients(pool, patients, set(group)), names) for group in groups]
            train, val = _sides(folds[source.fold], names)
    elif source.kind is SplitKind.SPLITS_FILE:
        folds = read_splits_final(source.splits_file)
        train, val = _file_fold(folds, source, names, patients, rule)
        _refuse_held({patients[i] for i in train + val}, held, source.splits_file, source.test_list)
    else:
        train, val = split_from_lists(patients, source.train_list, source.val_list, cases, held)
        lists = " and ".join(p for p in (source.train_list, source.val_list) if p)
        _refuse_held({patients[i] for i in train + val}, held, lists, source.test_list)
    on_a_side = {patients[i] for i in train + val}
    return Split(
        source,
        train,
        val,
        rule,
        held_out=tuple(sorted(held)),
        left_out=tuple(sorted(set(patients) - on_a_side - held)),
        folds=tuple(folds or [_fold(train, val, names)]),
    )


def _by_patients(pool: Sequence[int], patients: Sequence[str], val: Collection[str]) -> tuple[list[int], list[int]]:
    """The indices of ``pool`` whose patient is not in ``val``, and those whose patient is."""
    return [i for i in pool if patients[i] not in val], [i for i in pool if patients[i] in val]


def _fold(train: Sequence[int], val: Sequence[int], names: Sequence[str]) -> Fold:
    return {"train": list(dict.fromkeys(names[i] for i in train)), "val": list(dict.fromkeys(names[i] for i in val))}


def _sides(fold: Fold, names: Sequence[str]) -> tuple[list[int], list[int]]:
    train, val = set(fold["train"]), set(fold["val"])
    return [i for i, n in enumerate(names) if n in train], [i for i, n in enumerate(names) if n in val]


def _file_fold(
    folds: Sequence[Fold], source: SplitSource, names: Sequence[str], patients: Sequence[str], rule: str
) -> tuple[list[int], list[int]]:
    """(train, val) entry indices of fold ``source.fold`` of a splits file; ``UserError`` for a fold it lacks, a
    case the dataset lacks, or a patient it puts on both sides."""
    path, k = source.splits_file, source.fold
    if k >= len(folds):
        raise UserError(f"{path}: has {len(folds)} fold(s), 0 .. {len(folds) - 1}; data.fold={k}")
    known = set(names)
    for side in ("train", "val"):
        missing = [n for n in folds[k][side] if n not in known]
        if missing:
            raise UserError(f"{path}: fold {k} {side}: {len(missing)} case(s) not in the dataset, e.g. {missing[0]!r}")
    train, val = _sides(folds[k], names)
    both = sorted({patients[i] for i in train} & {patients[i] for i in val})
    if both:
        raise UserError(
            f"{path}: fold {k} puts patient(s) {', '.join(both[:5])} on both sides (patients: {rule}); give a split "
            "by patient, or set data.patient_regex if those cases are not one subject"
        )
    return train, val


def _refuse_held(ids: Collection[str], held: Collection[str], where: str, test_list: str) -> None:
    both = sorted(set(ids) & set(held))
    if both:
        raise UserError(
            f"{where} and {test_list} both name patient(s) {', '.join(both[:5])}: the patients of a test.list are "
            "never trained or validated on; take them out of one"
        )


def _leaves_folder(name: str) -> bool:
    """Whether a list entry points out of the dataset folder (``../x``, ``/x``, ``C:\\x``)."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts or bool(PureWindowsPath(name).drive)


def list_patients(path: str | os.PathLike, cases: Mapping[str, str]) -> list[str]:
    """The patients of the cases that a case list (``train.list``, ``val.list``, ``test.list``: one case name a
    line) names, each once; ``cases`` maps case names to patients. ``UserError`` naming the file, the line and the
    entry for an entry that leads out of the dataset folder or names no case of it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: case list not found")
    example = next(iter(cases), "CASE")
    out, bad = [], []
    for line, name in read_list(path):
        if _leaves_folder(name):
            bad.append(f"line {line}: entry {name!r} leads out of the dataset folder (list case names, e.g. {example})")
        elif name not in cases:
            bad.append(f"line {line}: entry {name!r} names no case of the dataset (no readable file of that name)")
        else:
            out.append(cases[name])
    if bad:
        raise UserError(f"{path} {bad[0]}" + (f" (and {len(bad) - 1} more such line(s))" if len(bad) > 1 else ""))
    return list(dict.fromkeys(out))


def split_record(split: Split, data_root: str, train: Any, val: Any) -> dict[str, Any]:
    """The content of ``split.json``: ``train``/``val`` are datasets with ``patients`` and ``case_ids``."""

    def side(dataset: Any) -> dict[str, list[str]]:
        return {"patients": sorted(set(dataset.patients)), "cases": list(dataset.case_ids)}

    source, kind = split.source, split.source.kind
    return {
        "data_root": str(Path(data_root).absolute()),
        "source": kind.value,
        "description": split.describe(),
        "patient_rule": split.patient_rule,
        "train_list": source.train_list or None,
        "val_list": source.val_list or None,
        "test_list": source.test_list or None,
        "splits_file": source.splits_file or None,
        "val_fraction": source.val_fraction if kind is SplitKind.SEED else None,
        "split_seed": source.seed if kind in (SplitKind.SEED, SplitKind.KFOLD) else None,
        "fold": source.fold if kind in (SplitKind.KFOLD, SplitKind.SPLITS_FILE) else None,
        "train": side(train),
        "val": side(val),
        "held_out": {"patients": list(split.held_out)},
        "folds": list(split.folds),
    }


def write_split(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``RUN/split.json`` and, from its ``folds``, nnU-Net's ``RUN/splits_final.json``, atomically; returns
    the path of split.json."""
    path = Path(run_dir) / SPLIT_FILE
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    if record.get("folds"):
        write_splits_final(run_dir, record["folds"])
    return path


def run_folder(run: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> Path:
    """The run folder: ``run`` when given, else the checkpoint's ``RUN`` in ``RUN/checkpoints/FILE.ckpt``."""
    if run:
        return Path(run)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent
    raise UserError(
        f"--split needs the run folder: give --run RUN_DIR (the checkpoint {ckpt} is not in RUN/checkpoints/)"
        if ckpt is not None
        else "--split needs the run folder: give --run RUN_DIR (the folder with split.json)"
    )


def split_cases(
    side: str, run: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None
) -> set[str]:
    """Case ids of ``side`` (``train`` or ``val``) in the run's ``split.json``; ``UserError`` when it is missing."""
    if side not in ("train", "val"):
        raise UserError(f"--split {side!r}: expected train or val")
    path = run_folder(run, checkpoint) / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"{path}: no split.json in the run folder (runs trained before it was recorded have none)")
    try:
        record = json.loads(path.read_text())
        cases = record[side]["cases"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a readable split record ({err})") from None
    if not cases:
        raise UserError(f"{path}: the {side} split of this run is empty")
    return set(cases)


def select_cases(reader: Any, cases: Collection[str] | None, where: str) -> Any:
    """``reader`` restricted to the entries whose case id, or case name (``case_names``: a volume's id, an SSL4MIS
    slice file's case), is in ``cases`` (all when None): a split, ``--split test`` or ``--cases``. ``UserError``
    naming the cases it lacks (a few, then their count) when not every one is in it."""
    if cases is None:
        return reader
    names = case_names(reader)
    keep = [i for i, e in enumerate(reader.entries) if e.case_id in cases or names[i] in cases]
    if not keep:
        example = next(iter(sorted(cases)))
        raise UserError(f"{where}: none of the {len(cases)} case(s) of the split (e.g. {example}) is in it")
    found = {reader.entries[i].case_id for i in keep} | {names[i] for i in keep}
    missing = sorted(set(cases) - found)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(
            f"{where}: {len(missing)} of the {len(cases)} case(s) of the split are not in it ({shown}); "
            "give the whole dataset that holds them"
        )
    return reader.subset(keep)


def read_case_list(path: str | os.PathLike) -> set[str]:
    """The cases a ``--cases`` file names: one case id or case name (a volume, ``patient038_frame01``) a line, blank
    lines and ``#`` comments ignored. ``UserError`` naming the file for a missing or empty one, or an entry that
    leads out of the dataset folder (a path, not a name)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: case list not found (--cases)")
    names = {}
    for line, text in enumerate(path.read_text().splitlines(), 1):
        name = text.split("#", 1)[0].strip()
        if name and _leaves_folder(name):
            raise UserError(f"{path} line {line}: entry {name!r} is a path; list case names, one a line")
        if name:
            names[name] = line
    if not names:
        raise UserError(f"{path}: names no case (one case id a line)")
    return set(names)


def test_split(root: str | os.PathLike, labels: bool = False) -> tuple[Path, set[str] | None, str]:
    """Where the dataset at ``root`` keeps its test cases (``--split test``): nnU-Net's ``imagesTs/`` (its
    ``labelsTs/`` for ground truth, ``labels``), read whole; else the cases SSL4MIS's ``test.list`` names, in the
    folder itself. Returns (the folder to read, the case names to keep or ``None`` for all, a line saying which);
    ``UserError`` when the dataset has neither."""
    root = Path(root)
    folder = root / ("labelsTs" if labels else "imagesTs")
    if (root / "dataset.json").is_file() and (root / "imagesTs").is_dir():
        if not folder.is_dir():
            raise UserError(f"{folder}: not found; --split test scores against nnU-Net's labelsTs/")
        return folder, None, f"--split test: nnU-Net's {folder}"
    listed = root / TEST_LIST
    if listed.is_file():
        names = read_case_list(listed)
        return root, names, f"--split test: the {len(names)} case(s) of {listed}"
    raise UserError(
        f"{root}: no test split here (neither nnU-Net's dataset.json with imagesTs/ nor a {TEST_LIST}); "
        "give the test images as INPUT, or list their cases with --cases FILE"
    )


def split_by_patient(patients: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) of items; ``round(val_fraction * n_patients)`` patients (at least one when the
    fraction is positive and there are two or more patients) go to validation, chosen by a seeded permutation
    of the sorted patient ids."""
    unique = sorted(set(patients))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) > 1:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    val_patients = {unique[i] for i in order[:n_val]}
    train = [i for i, p in enumerate(patients) if p not in val_patients]
    val = [i for i, p in enumerate(patients) if p in val_patients]
    return train, val


def read_id_list(path: str | os.PathLike, cases: Mapping[str, str] | None = None) -> list[str]:
    """One patient id per line; blank lines and ``#`` comments ignored. A ``.list`` file names cases
    (``patient038_frame01``): their patients, by ``cases`` (case name -> patient; ``list_patients``)."""
    path = Path(path)
    if path.suffix == ".list":
        return list_patients(path, cases or {})
    if not path.is_file():
        raise UserError(f"{path}: patient list not found")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def split_from_lists(
    patients: Sequence[str],
    train_file: str | os.PathLike,
    val_file: str | os.PathLike,
    cases: Mapping[str, str] | None = None,
    held: Collection[str] = (),
) -> tuple[list[int], list[int]]:
    """Indices (train, val) from two id lists; a patient named in both is a ``UserError``.

    Args:
        patients: the patient id of each item.
        train_file: the training side's list; ``""``: every patient not in ``val_file`` nor ``held``.
        val_file: the validation side's list.
        cases: case name -> patient, for lists of cases (``.list``).
        held: patients held out of both sides (a ``test.list``'s).

    Items whose patient is in neither list are left out of both sides.
    """
    val_ids = set(read_id_list(val_file, cases))
    train_ids = set(read_id_list(train_file, cases)) if train_file else set(patients) - val_ids - set(held)
    both = sorted(train_ids & val_ids)
    if both:
        raise UserError(f"{train_file} and {val_file} both list patient(s) {', '.join(both[:5])}")
    train = [i for i, p in enumerate(patients) if p in train_ids]
    val = [i for i, p in enumerate(patients) if p in val_ids]
    if not train:
        raise UserError(
            f"{train_file}: none of its patients is in the dataset"
            if train_file
            else f"{val_file}: every patient of the dataset is in it or held out; none is left for training"
        )
    return train, val
