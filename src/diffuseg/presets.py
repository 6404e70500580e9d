"""The bundled YAML presets: finding one by name (``load_config``), a one-line description of each for
``diffuseg presets``, and which presets a run's config is.

A preset's description is the first line of its header comment, cut to its first clause (up to a ``;``
outside brackets, or, when the line runs on into the next, up to its last ``:``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffuseg.config import (
    Config,
    Role,
    config_from_dict,
    config_to_dict,
    merge,
    parse_overrides,
    read_yaml,
    role_fields,
)
from diffuseg.errors import UserError

# Families by the name's first word, in the order listed: a title, and the lead phrases the title makes
# redundant in the members' descriptions.
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "demo": ("Demo", ()),
    "medsegdiff": ("MedSegDiff (Wu et al., MIDL 2023): variants S / B / L per dataset", ()),
    "ablation": ("MedSegDiff Table 2 ablation (variant B)", ("MedSegDiff Table 2 ablation, ",)),
    "lidc": ("Diffusion for ambiguous segmentation, LIDC (the ambiguity paper)", ("The ambiguity paper's ",)),
    "diffusion": ("The ambiguity paper's diffusion UNet on other data", ("The ambiguity paper's ",)),
    "probunet": (
        "Baselines of the ambiguity paper: Prob. UNet (Kohl et al. 2018), Gen. Prob. UNet (Bhat et al. 2022)",
        ("Table 4 of the ambiguity paper: ", "Table 4 of the ambiguity paper, "),
    ),
    "phiseg": ("Baselines of the ambiguity paper: PHiSeg", ()),
    "unet": ("Baselines: deterministic UNet", ("Deterministic UNet baseline ",)),
    "ssn": (
        "Baselines: Stochastic Segmentation Networks (Monteiro et al., NeurIPS 2020)",
        ("Stochastic Segmentation Network ",),
    ),
    "anchored": ("Anchored diffusion: a UNet trunk and a diffusion head on its residual", ("Anchored diffusion ",)),
}
_ASIDE = re.compile(r"\s*\((?:[^()]*\s){2,}[^()]*\)")  # a bracketed aside of three or more words


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


def seed_configs(path: str | os.PathLike, overrides: Sequence[str], seeds: int) -> list[Config]:
    """A seed ensemble's runs (``diffuseg train --seeds N``): ``load_config(path, overrides)`` with ``train.seed``
    s and ``train.out_dir`` OUT/seed-s for s = 1 .. ``seeds`` (OUT: that config's run folder); ``UserError`` when
    ``overrides`` set ``train.seed`` themselves."""
    if any(o.startswith("train.seed=") for o in overrides):
        raise UserError("--seeds sets train.seed (1 .. N) of each run; drop the train.seed override")
    out = Path(load_config(path, overrides).train.out_dir)
    return [
        load_config(path, [*overrides, f"train.seed={s}", f"train.out_dir={out / f'seed-{s}'}"])
        for s in range(1, seeds + 1)
    ]


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


def preset_files() -> dict[str, Path]:
    """Preset name -> YAML file; the repository's ``configs/`` wins over the installed copy."""
    found: dict[str, Path] = {}
    for folder in preset_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def describe(path: Path) -> str:
    """The first clause of the first header-comment line of a preset ("" when it has none)."""
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
    except (OSError, UnicodeDecodeError):
        return ""
    if not first.startswith("#"):
        return ""
    line = first.lstrip("#").strip()
    depth, cut = 0, len(line)
    for i, ch in enumerate(line):
        depth += (ch in "([") - (ch in ")]")
        if ch == ";" and depth == 0:
            cut = i
            break
    clause = line[:cut].rstrip()
    if cut == len(line) and not clause.endswith("."):  # the sentence runs on into the next line
        depth, colon = 0, -1
        for i, ch in enumerate(clause):
            depth += (ch in "([") - (ch in ")]")
            if ch == ":" and depth == 0:
                colon = i
        if colon > 0:
            clause = clause[:colon]
    return clause.rstrip(" .,:")


def short(text: str, lead: tuple[str, ...] = ()) -> str:
    """``text`` without a lead phrase from ``lead`` and without bracketed asides of three or more words."""
    for phrase in lead:
        if text.startswith(phrase):
            text = text[len(phrase) :]
            break
    text = _ASIDE.sub("", text).strip()
    return text[:1].upper() + text[1:]


def format_presets(width: int | None = None) -> str:
    """Every preset on one line, grouped by family, names aligned; a line longer than ``width`` (the
    terminal's) ends in an ellipsis (the whole description is the YAML file's header)."""
    files = preset_files()
    if not files:
        return "no presets found (looked in: " + ", ".join(map(str, preset_dirs())) + ")"
    width = width or shutil.get_terminal_size((120, 24)).columns
    pad = max(len(n) for n in files) + 2
    by_group: dict[str, list[str]] = {}
    for name in files:
        family = name.split("-")[0]
        by_group.setdefault(family if family in GROUPS else "", []).append(name)
    blocks = []
    for family in [*GROUPS, ""]:
        if not by_group.get(family):
            continue
        title, lead = GROUPS.get(family, ("Other presets", ()))
        lines = [title]
        for name in by_group[family]:
            line = f"  {name:<{pad}}{short(describe(files[name]), lead) or '(no description)'}"
            lines.append(line if len(line) <= width else line[: max(width - 1, pad + 12)] + "\u2026")
        blocks.append("\n".join(lines))
    where = preset_dirs()[0]
    return "\n\n".join(
        [*blocks, f"Train one with `diffuseg train NAME --data DATASET_FOLDER`; the YAML files are in {where}"]
    )


def recipe(config: Config) -> dict:
    """``config`` as a dict without the fields whose role is not ``Role.RECIPE`` (where the data, the cases and the
    outputs are, how long and on what it runs, sampling and evaluation): what makes two runs the same experiment."""
    values = config_to_dict(config)
    for name in (*role_fields(Role.RUN), *role_fields(Role.CASES)):
        section, _, key = name.partition(".")
        if key == "*":
            values.pop(section, None)
        else:
            values.get(section, {}).pop(key, None)
    return values


def matching_presets(config: Config) -> list[str]:
    """The presets whose recipe ``config`` has (often one; the full MedSegDiff-B and its ablation row (c) are
    the same); [] for a custom config or one changed by overrides."""
    target = recipe(config)
    found = []
    for name, path in preset_files().items():
        try:
            if recipe(load_config(path)) == target:
                found.append(name)
        except UserError:  # a broken preset file is `diffuseg train`'s error to report, not the report's
            continue
    return found
