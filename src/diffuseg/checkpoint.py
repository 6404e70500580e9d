"""Checkpoints: written atomically, read safely, and recognised before use.

A diffuseg checkpoint is a Lightning checkpoint (``state_dict`` with the raw weights under ``net.`` and the
EMA weights under ``ema.``, optimiser and scheduler states, loop progress with the global step) plus a
``diffuseg`` entry::

    {"format_version": 1, "config": <resolved config as a plain dict>, "method": "diffusion",
     "global_step": N, "sampler_position": items consumed, "rng": {torch, cuda, numpy, python states}}

Everything in it is a tensor or a plain Python value, so it loads with ``torch.load(weights_only=True)``:
opening a checkpoint never runs code from the file. Files are written to a temporary name in the same
folder and renamed (``os.replace``), so a crash or ``kill -9`` leaves either the old or the new file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import random
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.config import Config, config_from_dict, config_to_dict
from diffuseg.errors import UserError
from diffuseg.files import atomic_path

FORMAT_VERSION = 1
KEY = "diffuseg"
LAST = "last.ckpt"
SUFFIX = ".ckpt"


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path``, or for a run folder (one holding ``checkpoints/last.ckpt``) that checkpoint."""
    given = Path(path)
    last = given / "checkpoints" / LAST
    return last if given.is_dir() and last.is_file() else given


def names_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a checkpoint: a ``.ckpt`` file name, or a run folder (``checkpoint_file``)."""
    return Path(path).suffix == SUFFIX or checkpoint_file(path) != Path(path)


def leading_checkpoints(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``predict``'s positionals -> (checkpoints, the rest): the first item, and those after it that name a
    checkpoint (a ``.ckpt`` file or a run folder, ``names_checkpoint``) up to the first that does not."""
    n = 1
    while n < len(items) and names_checkpoint(items[n]):
        n += 1
    return list(items[:n]), list(items[n:])


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, flushed to disk, then renamed over ``path``."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def capture_rng() -> dict[str, Any]:
    """Global RNG states (torch CPU and CUDA, NumPy, Python) as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng``; CUDA states are restored when the device count matches."""
    torch.set_rng_state(states["torch"])
    npy = states["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def metadata(config: Config, global_step: int, sampler_position: int) -> dict[str, Any]:
    """The ``diffuseg`` entry added to every checkpoint."""
    return {
        "format_version": FORMAT_VERSION,
        "config": config_to_dict(config),
        "method": str(config.method),
        "global_step": int(global_step),
        "sampler_position": int(sampler_position),
        "rng": capture_rng(),
    }


def _load_any(path: Path, map_location: Any, sha256: bool = False) -> tuple[Any, str | None]:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the file is in torch.save's zip format (only
    the tensors used are read: prediction needs the EMA weights, a quarter of a training checkpoint; the legacy
    non-zip format cannot be mapped and is read whole), and the hex SHA-256 of the file's bytes when ``sha256``
    (else None), taken in the same read as the CRC-32 check; every failure becomes a ``UserError`` naming the file."""
    if not path.exists():
        raise UserError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise UserError(f"{path}: is not a file (expected a checkpoint, e.g. <run>/checkpoints/{LAST})")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (corrupt checkpoint)")
    with path.open("rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's zip format (possibly cut short or damaged)
    digest = check_crcs(path, sha256) if zipped else (_sha256(path) if sha256 else None)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=zipped), digest
    except pickle.UnpicklingError as err:
        if zipped and ("weights only" in str(err).lower() or "weights_only" in str(err)):
            raise UserError(
                f"{path}: not a diffuseg checkpoint: it holds pickled Python objects that are not loaded "
                "for safety (diffuseg checkpoints hold only tensors and plain values)"
            ) from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint (corrupt or another file type)") from None
    except Exception as err:  # torch.load raises many types on damaged input (RuntimeError, EOFError, KeyError, ...)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if zipped:
            raise UserError(f"{path}: corrupt or truncated checkpoint ({reason})") from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint (corrupt or another file type)") from None


def check_crcs(path: Path, sha256: bool = False) -> str | None:
    """``UserError`` unless every member of the zip file ``path`` matches the CRC-32 stored when it was written;
    returns the hex SHA-256 of the file's bytes when ``sha256`` (else None).

    torch.save's zip format stores one per tensor, so flipped or overwritten bytes anywhere in the weights
    are found before the file is used, instead of predicting other masks without an error. Reads the file once,
    memory-mapped, for both the CRC-32s and the SHA-256 (the check's cost: docs/benchmarks.md)."""
    try:
        with (
            path.open("rb") as fh,
            zipfile.ZipFile(fh) as zf,
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm,
            memoryview(mm) as view,
        ):
            bad = next((info.filename for info in zf.infolist() if not _crc_ok(zf, info, view)), None)
            digest = hashlib.sha256(view).hexdigest() if sha256 else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as err:
        raise UserError(f"{path}: corrupt or truncated checkpoint ({str(err) or type(err).__name__})") from None
    if bad is not None:
        raise UserError(
            f"{path}: corrupt checkpoint: {bad} does not match the checksum stored when it was written "
            "(the file was damaged or changed since); use another copy or an earlier checkpoint"
        )
    return digest


def _crc_ok(zf: zipfile.ZipFile, info: zipfile.ZipInfo, view: memoryview) -> bool:
    """Whether one member's bytes match its stored CRC-32: a stored member (torch.save stores every one) is
    checked in place in the mapped file; a compressed one through ``zipfile``, which checks it as it inflates."""
    if info.compress_type != zipfile.ZIP_STORED:
        try:
            with zf.open(info) as member:
                while member.read(1 << 20):
                    pass
        except zipfile.BadZipFile:
            return False
        return True
    head = info.header_offset
    if bytes(view[head : head + 4]) != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{info.filename}: no local file header")
    name_len, extra_len = struct.unpack("<HH", view[head + 26 : head + 30])
    start = head + 30 + name_len + extra_len
    if start + info.compress_size > len(view):
        raise EOFError(f"{info.filename}: cut short")
    return zlib.crc32(view[start : start + info.compress_size]) == info.CRC


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file that is not a zip file (the legacy torch.save format), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a diffuseg checkpoint dict, or raise ``UserError`` saying what the file is instead."""
    return _read(Path(path), map_location, sha256=False)[0]


def read_checkpoint_sha256(path: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """``read_checkpoint`` onto the CPU, and the hex SHA-256 of the file's bytes from the same read."""
    ckpt, digest = _read(Path(path), "cpu", sha256=True)
    assert digest is not None  # sha256=True always yields one
    return ckpt, digest


def _read(path: Path, map_location: Any, sha256: bool) -> tuple[dict[str, Any], str | None]:
    ckpt, digest = _load_any(path, map_location, sha256)
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{path}: not a diffuseg checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    meta = ckpt.get(KEY)
    if meta is None or "format_version" not in meta:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            kind = "a bare state dict of weights, e.g. an official MedSegDiff checkpoint"
        elif "state_dict" in ckpt:
            kind = "a checkpoint from another (Lightning) program"
        else:
            kind = "a file written by another program"
        raise UserError(
            f"{path}: not a diffuseg checkpoint (no diffuseg format version; this looks like {kind}). "
            "diffuseg needs the checkpoints that `diffuseg train` writes, which hold the config and EMA weights."
        )
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format version {version} is newer than this diffuseg reads ({FORMAT_VERSION}); "
            "upgrade diffuseg"
        )
    if "state_dict" not in ckpt or "config" not in meta:
        raise UserError(f"{path}: incomplete diffuseg checkpoint (no weights or no config)")
    return dict(ckpt), digest


def check_finite(state_dict: Mapping[str, Any], path: str | os.PathLike, prefix: str = "") -> None:
    """``UserError`` naming ``path`` and the first floating-point tensor under ``prefix`` that holds a NaN or an
    infinite value: a diverged or damaged model, whose checksums can still be valid, predicts nothing useful."""
    for name, value in state_dict.items():
        if not (name.startswith(prefix) and isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise UserError(
                f"{path}: weight {name} holds {bad} NaN or infinite value(s) (the training diverged or the "
                "file was changed); use an earlier checkpoint"
            )


def checkpoint_config(ckpt: Mapping[str, Any], path: str | os.PathLike = "") -> Config:
    """The resolved ``Config`` stored in a checkpoint."""
    try:
        return config_from_dict(ckpt[KEY]["config"])
    except UserError as err:
        raise UserError(f"{path}: the config stored in the checkpoint is not valid here ({err})") from None


def prefixed(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` under ``prefix`` with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
