"""What a prediction folder holds: one manifest per part of a run, so a run can be resumed and never mixed.

``OUTPUT/manifest.json`` (a run in one part) or ``OUTPUT/manifest.part-I-of-N.json`` (part I of N, see
``inference.predict``) records the run's key (the SHA-256 of the checkpoint file, for an ensemble every checkpoint's
in member order joined by ``+``; the resolved config, whether samples are saved, the list of input cases and
the volume of each case that is a slice of one), the part, and per case of the part its source file, whether it
is done and, once done, the files written for it and its input files' records (``input_record``: size, times and
SHA-256 of the content that was read). It is written atomically (``files.write_text_atomic``) before the first
case and rewritten as cases finish (at most every ``SAVE_INTERVAL`` seconds, and at the end).

A case is done only after all its files are renamed into place; a case written but not yet recorded is
predicted again on resume, which rewrites the same bytes (members are seeded by case and member). Parts of
one run may differ in N: the cases done by any manifest with the same key count as done, as long as their
input files still hold the content recorded (``same_input``); a case whose input changed is predicted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffuseg.data.formats.dicom import input_files, input_stat
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic
from diffuseg.inference.outputs import SAMPLES

FORMAT = 1  # ``RunKey.volumes`` is optional: a manifest without it counts each slice as a case
MANIFEST = "manifest.json"
_PART_FILE = re.compile(r"^manifest(?:\.part-(\d+)-of-(\d+))?\.json$")
SAVE_INTERVAL = 1.0  # seconds between two rewrites of a manifest while cases finish


def manifest_name(part_id: int, num_parts: int) -> str:
    """``manifest.json`` for a run in one part, else ``manifest.part-I-of-N.json``."""
    return MANIFEST if num_parts == 1 else f"manifest.part-{part_id}-of-{num_parts}.json"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_sha256(path: str | os.PathLike) -> str:
    """``file_sha256`` of an input file; of a folder (a DICOM series), the SHA-256 of its files' names and
    digests (``formats.dicom.input_files``)."""
    if not Path(path).is_dir():
        return file_sha256(path)
    lines = "".join(f"{p.name}\0{file_sha256(p)}\n" for p in input_files(path))
    return hashlib.sha256(lines.encode()).hexdigest()


def input_record(path: str | os.PathLike, known: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``{"file", "size", "mtime_ns", "ctime_ns", "sha256"}`` of an input file (or series folder,
    ``formats.dicom.input_stat``): its stat taken before its bytes are hashed, so a change during or after the
    hashing shows as a changed input later. ``known``: records already taken in this run, by path (the slices of
    one volume hash it once)."""
    key = os.fspath(path)
    if known is not None and key in known:
        return known[key]
    size, mtime_ns, ctime_ns = input_stat(path)
    record = {
        "file": key,
        "size": size,
        "mtime_ns": mtime_ns,
        "ctime_ns": ctime_ns,
        "sha256": input_sha256(path),
    }
    if known is not None:
        known[key] = record
    return record


def same_input(
    record: Any, path: str | os.PathLike, known: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The record of ``path`` now (``input_record``) when it holds the content ``record`` describes, else
    ``None`` (changed, missing, or no record). Cheap when the file's size, mtime and ctime are those recorded (a
    user can set the mtime back, not the ctime); otherwise its bytes are hashed again and compared. A file
    rewritten with the same size within the file system's timestamp resolution of being hashed (milliseconds;
    a second on ext3 or HFS+) is taken as unchanged."""
    try:
        now_stat = input_stat(path)
    except OSError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return None
    if now_stat == (record.get("size"), record.get("mtime_ns"), record.get("ctime_ns")):
        return {**record, "file": os.fspath(path)}
    now = input_record(path, known)
    return now if now["sha256"] == record["sha256"] else None


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(digests: str) -> str:
    return " + ".join(f"{d[:12]}..." for d in digests.split("+"))


@dataclass(frozen=True)
class RunKey:
    """What makes two predictions the same run: equal keys write byte-identical files. ``checkpoint_sha256``:
    the checkpoint's SHA-256, or an ensemble's, in member order, joined by ``+``; ``cases`` the input's 2D items,
    ``volumes`` the volume id of each item that is a slice of one (a 2D case has none)."""

    checkpoint_sha256: str
    config: dict
    save_samples: bool
    cases: tuple[str, ...]
    volumes: Mapping[str, str] = field(default_factory=dict)

    def units(self) -> list[list[str]]:
        """The run's cases as predict writes and counts them, in order: a 2D case alone, a volume's slices
        together."""
        groups: dict[tuple[str, str], list[str]] = {}
        for c in self.cases:
            groups.setdefault(("volume", self.volumes[c]) if c in self.volumes else ("case", c), []).append(c)
        return list(groups.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint_sha256": self.checkpoint_sha256,
            "config": _plain(self.config),
            "save_samples": self.save_samples,
            "cases": list(self.cases),
            "volumes": dict(self.volumes),
        }

    @classmethod
    def from_json(cls, d: dict) -> RunKey:
        cases, volumes = tuple(d["cases"]), {str(k): str(v) for k, v in d.get("volumes", {}).items()}
        return cls(str(d["checkpoint_sha256"]), d["config"], bool(d["save_samples"]), cases, volumes)

    def differences(self, other: RunKey) -> list[str]:
        """How ``other`` (the run in the folder) differs from this one, one phrase per difference."""
        out = []
        if self.checkpoint_sha256 != other.checkpoint_sha256:
            there, now = _short(other.checkpoint_sha256), _short(self.checkpoint_sha256)
            out.append(f"checkpoint (sha256 {there} there, {now} now)")
        mine, theirs = _flat(_plain(self.config)), _flat(_plain(other.config))
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                out.append(f"{key} ({theirs.get(key)!r} there, {mine.get(key)!r} now)")
        if self.save_samples != other.save_samples:
            out.append(f"--save-samples ({'on' if other.save_samples else 'off'} there)")
        if self.cases != other.cases:
            only_now = sorted(set(self.cases) - set(other.cases))
            only_there = sorted(set(other.cases) - set(self.cases))
            detail = f"{len(other.cases)} there, {len(self.cases)} now"
            if only_now:
                detail += f"; e.g. {only_now[0]} only now"
            if only_there:
                detail += f"; e.g. {only_there[0]} only there"
            out.append(f"the input cases ({detail})")
        return out


@dataclass
class Manifest:
    """One part's record. ``cases``: case id -> ``{"source", "inputs", "done", "files"}`` for the cases of this
    part (``inputs``: one ``input_record`` per image file of the case, set when it is done)."""

    path: Path
    key: RunKey
    part_id: int
    num_parts: int
    checkpoint: str = ""
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    _saved: float = 0.0

    @property
    def complete(self) -> bool:
        return all(c["done"] for c in self.cases.values())

    def done_ids(self) -> set[str]:
        """Cases recorded done whose files (or DICOM series folders, put in place whole) are all still there."""
        root = self.path.parent

        def there(f: str) -> bool:
            return (root / f).is_file() or (root / f).is_dir()

        return {cid for cid, c in self.cases.items() if c["done"] and all(there(f) for f in c["files"])}

    def files(self, case_ids: Iterable[str] | None = None) -> list[Path]:
        """The files recorded for ``case_ids`` (default: every case), only those inside the manifest's folder
        and never the folder itself or its ``samples`` folder (what ``--overwrite`` and a changed input may
        delete)."""
        root = self.path.parent
        ids = self.cases if case_ids is None else [c for c in case_ids if c in self.cases]
        rel = [Path(f) for c in ids for f in self.cases[c].get("files", [])]
        inside = [f for f in rel if f.parts and not f.is_absolute() and ".." not in f.parts]
        return [root / f for f in inside if f != Path(SAMPLES)]

    def mark_done(self, case_ids: Iterable[str], files: Sequence[Path], inputs: Mapping[str, list[dict]]) -> None:
        """Record ``case_ids`` done with ``files`` written for them from the inputs ``inputs[case id]``."""
        rel = sorted(str(Path(p).relative_to(self.path.parent)) for p in files)
        for cid in case_ids:
            self.cases[cid].update(done=True, files=rel, inputs=inputs[cid])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "tool": "diffuseg predict",
            "complete": self.complete,
            "part": {"id": self.part_id, "of": self.num_parts},
            "checkpoint": self.checkpoint,
            **self.key.to_json(),
            "part_cases": self.cases,
        }

    def save(self, force: bool = True) -> None:
        """Write atomically; unless ``force``, only when ``SAVE_INTERVAL`` has passed since the last write."""
        now = time.monotonic()
        if force or now - self._saved >= SAVE_INTERVAL:
            write_text_atomic(self.path, json.dumps(self.to_json(), indent=1) + "\n")
            self._saved = now

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise UserError(f"{path}: manifest format {d.get('format')!r}, this diffuseg reads {FORMAT}")
            return cls(
                path,
                RunKey.from_json(d),
                int(d["part"]["id"]),
                int(d["part"]["of"]),
                str(d.get("checkpoint", "")),
                {str(k): dict(v) for k, v in d["part_cases"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(
                f"{path}: unreadable prediction manifest ({err}); delete it, or choose another folder"
            ) from None


def read_manifests(folder: Path) -> list[Manifest]:
    """Every manifest in ``folder`` (none when the folder does not exist)."""
    if not folder.is_dir():
        return []
    return [Manifest.load(p) for p in sorted(folder.iterdir()) if _PART_FILE.match(p.name)]


def completeness(folder: Path) -> tuple[int, int] | None:
    """(cases done, cases of the run) over the manifests in ``folder``, a volume one case as predict counts it
    (``RunKey.units``: done when all its slices are); ``None`` when it has none. ``UserError`` when the manifests
    belong to different runs."""
    manifests = read_manifests(folder)
    if not manifests:
        return None
    first = manifests[0]
    for m in manifests[1:]:
        if first.key.differences(m.key):
            raise UserError(f"{folder}: holds two different prediction runs ({m.path.name}, {first.path.name})")
    done = set().union(*(m.done_ids() for m in manifests))
    units = max((m.key for m in manifests), key=lambda k: len(k.volumes)).units()  # parts written before volumes
    return sum(all(c in done for c in unit) for unit in units), len(units)
