"""Write predictions in the input's own format and geometry, as ``inference.outputs`` lays the folder out.

- Model-size maps are cropped to the image's part (``data.resize: pad`` or ``spacing``, ``transforms.unpad``) and
  resized back to the original size (its own grid): the fused mask and samples are resized bilinearly
  as soft maps and thresholded at 0.5 (for {0,1} input this is nearest-like, with smoother boundaries);
  the uncertainty bilinearly.
- Several classes (``scheme``, a non-binary ``labels.LabelScheme``): ``fused`` and ``samples`` are atom
  maps (h,w) int; they are resized back as the one-hot over the atoms, bilinearly, then the argmax.
- 2D slices of a 3D volume are collected and written as one volume once all its slices are in (``close``
  writes unfinished ones, missing slices 0); NIfTI keeps the source's affine and header (units, qform/sform
  codes), MetaImage and NRRD its spacing, origin, direction and metadata, a DICOM series is written as a series
  of the input's geometry and patient and study tags (``formats.write.write_dicom``), HDF5 holds the mask only (the
  image is not copied).
Two cases that would write files of one name (``x`` and ``x_uncertainty``; ``A`` and ``a``) are refused
before anything is written (``check_output_names``).
Every file (and every DICOM series folder) is written to a temporary name in its folder and renamed. The writer
refuses an OUTPUT inside the input folder and never overwrites an input file (``UserError``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffuseg.data.case import Case, Geometry
from diffuseg.data.formats.base import Entry, name_clashes
from diffuseg.data.formats.dicom import DICOM_FORMAT
from diffuseg.data.formats.files import HDF5_SUFFIXES, ITK_SUFFIXES, VOLUME_SUFFIXES
from diffuseg.data.formats.write import write_dicom, write_itk, write_nifti
from diffuseg.data.transforms import STRETCH_FIT, Fit, unpad
from diffuseg.errors import UserError
from diffuseg.files import atomic_folder, atomic_path
from diffuseg.inference.outputs import (
    MASK_DATASET,
    UNCERTAINTY,
    UNCERTAINTY_DATASET,
    UNCERTAINTY_SCALE,
    class_uncertainty_dataset,
    output_format,
    output_name,
    prediction_files,
    slice_axis,
)
from diffuseg.labels import LabelScheme


def check_output_names(entries: Sequence[Entry]) -> None:
    """``UserError`` naming both input files when two cases would write files of the same name (compared
    without case, as on macOS and Windows: ``formats.base.name_clashes``), or a case's name ends in
    ``_uncertainty`` (the suffix of the uncertainty maps, which ``evaluate`` reads as such). Slices of one volume
    share their volume's files."""
    clashes = name_clashes(entries)
    if clashes:
        raise UserError(clashes[0])
    owners = {(e.volume_id or e.case_id).casefold(): e.images[0] for e in entries}
    for folded, source in owners.items():
        if folded.endswith(UNCERTAINTY):
            partner = owners.get(folded[: -len(UNCERTAINTY)])
            also = f" and {partner}" if partner else ""
            raise UserError(
                f"{source}{also}: a case named *{UNCERTAINTY} would be written where predict puts uncertainty "
                f"maps ({partner.name if partner else 'its base name'}'s {UNCERTAINTY} file); rename it"
            )


def check_output(output: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """``UserError`` when ``output`` is an input folder or lies inside one."""
    out = output.resolve()
    for item in inputs:
        src = Path(item).resolve()
        if src.is_dir() and (out == src or src in out.parents):
            raise UserError(f"{output}: the output folder must not be inside the input folder {item}")
        if out == src:
            raise UserError(f"{output}: the output is an input file")


def _resize(array: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(h,w) float map -> (H,W) float32 by bilinear interpolation (no change when sizes match)."""
    a = array.detach().float().cpu()
    a = a.reshape(a.shape[-2:])
    if tuple(a.shape) != tuple(size):
        a = F.interpolate(a[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return a.numpy()


def _to_mask(array: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    return (_resize(array, size) >= 0.5).astype(np.uint8)


def _to_values(atoms: torch.Tensor, size: tuple[int, int], scheme: LabelScheme) -> np.ndarray:
    """(h,w) atom map -> (H,W) label values: the one-hot over the atoms resized bilinearly, then the argmax."""
    a = atoms.detach().cpu().long()
    a = a.reshape(a.shape[-2:])
    if tuple(a.shape) != tuple(size):
        one_hot = F.one_hot(a, scheme.atoms + 1).movedim(-1, 0).float()[None]
        a = F.interpolate(one_hot, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
    values = scheme.to_values(a.numpy())
    return values.astype(np.uint8 if values.max(initial=0) <= 255 else np.uint16)


@dataclass
class _Volume:
    geometry: Geometry
    name: str
    slices: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]] = field(
        default_factory=dict
    )


class PredictionWriter:
    """Writes cases as they come; use as a context manager (or call ``close``) to flush volumes.

    ``inputs`` are the input folder(s) or file(s): the output may not be inside them, and no input file
    (any ``geometry.sources``/``mask_sources``) is ever overwritten.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        inputs: Sequence[str | os.PathLike],
        save_samples: bool = False,
        scheme: LabelScheme | None = None,
        fit: Fit = STRETCH_FIT,
    ):
        self.output = Path(output)
        self.fit = fit  # ``data.resize`` and ``data.spacing``: how the model input was made from the image
        self.scheme = scheme if scheme is not None and not scheme.binary else None
        check_output(self.output, inputs)
        self.save_samples = save_samples
        self.written: list[Path] = []
        self._volumes: dict[str, _Volume] = {}

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()

    def write(
        self,
        case: Case,
        fused: torch.Tensor,
        uncertainty: torch.Tensor | None = None,
        samples: torch.Tensor | None = None,
        class_uncertainty: torch.Tensor | None = None,
    ) -> list[Path]:
        """Write one case (or keep it, a slice of a volume not yet complete); returns the files written now.

        Args:
            case: the input case; its ``geometry`` says where and how its files go.
            fused: ``(h, w)`` or ``(1, h, w)`` in [0, 1]; with several classes (``scheme``) an atom map (0..L).
            uncertainty: ``(h, w)`` in [0, 1], or None.
            samples: ``(K, h, w)`` or ``(K, 1, h, w)`` {0, 1} (atom maps with several classes), written with
                ``save_samples`` only.
            class_uncertainty: ``(C, h, w)`` in [0, 1], one map per class, written beside the uncertainty where
                the format holds several maps in one file (HDF5); elsewhere not written.
        """
        g = case.geometry
        size = (int(g.size[0]), int(g.size[1]))
        scheme = self.scheme

        def to_mask(a, s):
            a = unpad(a, s, self.fit, g)
            return _to_mask(a, s) if scheme is None else _to_values(a, s, scheme)

        def to_map(a, s):
            return _resize(unpad(a, s, self.fit, g), s).clip(0.0, 1.0)

        mask = to_mask(fused, size)
        unc = to_map(uncertainty, size) if uncertainty is not None else None
        per_class = None
        if self.scheme is not None and class_uncertainty is not None and output_format(g) in HDF5_SUFFIXES:
            per_class = np.stack([to_map(m, size) for m in class_uncertainty])
        samp = None
        if self.save_samples and samples is not None:
            samp = np.stack([to_mask(s, size) for s in samples.reshape(-1, *samples.shape[-2:])])
        if g.volume_id is not None and g.slice_index is not None and g.volume_shape is not None:
            vol = self._volumes.setdefault(g.volume_id, _Volume(g, output_name(g, case.case_id)))
            vol.slices[g.slice_index] = (mask, unc, samp, per_class)
            if len(vol.slices) == g.volume_shape[slice_axis(g)]:
                return self._flush(g.volume_id)
            return []
        return self._write_all(g, output_name(g, case.case_id), mask, unc, samp, per_class)

    def close(self) -> list[Path]:
        """Write every volume still open (missing slices are 0); returns the files written."""
        return [p for _, files in self.flush_all() for p in files]

    def flush_all(self) -> Iterator[tuple[str, list[Path]]]:
        """Write every volume still open (missing slices are 0), yielding (volume id, its files)."""
        for vid in list(self._volumes):
            yield vid, self._flush(vid)

    def _flush(self, volume_id: str) -> list[Path]:
        vol = self._volumes.pop(volume_id)
        shape = tuple(vol.geometry.volume_shape[:3])
        dtype = np.result_type(*(s[0].dtype for s in vol.slices.values()))
        mask = np.zeros(shape, dtype)
        unc = np.zeros(shape, np.float32) if any(s[1] is not None for s in vol.slices.values()) else None
        n_samples = max((len(s[2]) for s in vol.slices.values() if s[2] is not None), default=0)
        samp = np.zeros((n_samples, *shape), dtype) if n_samples else None
        n_classes = max((len(s[3]) for s in vol.slices.values() if s[3] is not None), default=0)
        per_class = np.zeros((n_classes, *shape), np.float32) if n_classes and unc is not None else None
        axis = slice_axis(vol.geometry)
        for z, (m, u, s, c) in vol.slices.items():
            _put(mask, z, m, axis)
            if unc is not None and u is not None:
                _put(unc, z, u, axis)
            if samp is not None and s is not None:
                _put(samp[: len(s)], z, s, axis + 1)
            if per_class is not None and c is not None:
                _put(per_class, z, c, axis + 1)
        return self._write_all(vol.geometry, vol.name, mask, unc, samp, per_class)

    def _write_all(self, g: Geometry, name: str, mask, unc, samp, per_class=None) -> list[Path]:
        files = prediction_files(self.output, name, output_format(g), 0 if samp is None else len(samp))
        out = [self._save(files.fused, mask, g, "mask")]
        if unc is not None:
            extra = {}
            if per_class is not None and self.scheme is not None:
                extra = {class_uncertainty_dataset(n): m for n, m in zip(self.scheme.names, per_class)}
            out.append(self._save(files.uncertainty, unc, g, "uncertainty", extra))
        for k, (path, s) in enumerate(zip(files.samples, () if samp is None else samp)):
            out.append(self._save(path, s, g, "mask", role=f"sample {k}"))
        self.written += out
        return out

    def _save(
        self, path: Path, array: np.ndarray, g: Geometry, kind: str, extra: dict | None = None, role: str = ""
    ) -> Path:
        """Write one file (``kind`` ``mask`` or ``uncertainty``; ``role``, what a DICOM series describes itself
        as, defaults to ``kind``) through a temporary."""
        sources = {Path(p).resolve() for p in g.sources} | {Path(p).resolve() for f in g.mask_sources for p in f}
        if path.resolve() in sources:
            raise UserError(f"{path}: refusing to overwrite an input file; choose another output folder")
        ext = output_format(g)
        if ext == DICOM_FORMAT:
            affine = np.array(g.affine, dtype=np.float64)
            data = array.astype(_mask_dtype(array)) if kind == "mask" else array.astype(np.float32)
            with atomic_folder(path) as tmp:
                write_dicom(tmp, data, affine, g.sources[0], role or kind)
            return path
        with atomic_path(path, suffix=f".tmp.{ext}") as tmp:  # the encoders go by the file ending
            _encode(tmp, array, g, kind, ext, labels=self.scheme is not None, extra=extra or {})
        return path


def _put(volume: np.ndarray, z: int, plane: np.ndarray, axis: int) -> None:
    """Set slice ``z`` of ``volume`` along ``axis`` (0: HDF5 (D,H,W); NIfTI/ITK: the through-plane axis; +1 for a
    stack of samples)."""
    index = [slice(None)] * volume.ndim
    index[axis] = z
    volume[tuple(index)] = plane


def _mask_dtype(array: np.ndarray) -> np.dtype:
    """uint8 for masks and label maps up to 255, uint16 above."""
    return np.dtype(np.uint16 if array.dtype == np.uint16 else np.uint8)


def _encode(
    path: Path, array: np.ndarray, g: Geometry, kind: str, ext: str, labels: bool = False, extra: dict | None = None
) -> None:
    """Write ``array`` to ``path`` in format ``ext``; ``extra``: more float maps by dataset name (HDF5 only)."""
    if ext in HDF5_SUFFIXES:
        import h5py

        key = MASK_DATASET if kind == "mask" else UNCERTAINTY_DATASET
        data = array.astype(_mask_dtype(array)) if kind == "mask" else array.astype(np.float32)
        with h5py.File(path, "w") as f:
            f.create_dataset(key, data=data, compression="gzip")
            for name, values in (extra or {}).items():
                f.create_dataset(name, data=values.astype(np.float32), compression="gzip")
    elif ext in VOLUME_SUFFIXES:  # the input's header and geometry (``formats.write``)
        data = array.astype(_mask_dtype(array)) if kind == "mask" else array.astype(np.float32)
        affine = np.array(g.affine, dtype=np.float64) if g.affine is not None else np.eye(4)
        source = g.sources[0] if g.sources else None
        if ext in ITK_SUFFIXES:
            write_itk(path, data, affine, source, ext)
        else:
            write_nifti(path, data, affine, source)
    elif ext == "npy":
        with open(path, "wb") as fh:
            np.save(fh, array.astype(_mask_dtype(array)) if kind == "mask" else array.astype(np.float32))
    else:
        from PIL import Image

        if kind == "mask" and labels:
            Image.fromarray(array.astype(_mask_dtype(array))).save(path, format="PNG")
        elif kind == "mask":
            Image.fromarray((array > 0).astype(np.uint8) * 255).save(path, format="PNG")
        else:
            scaled = np.round(np.clip(array, 0, 1) * UNCERTAINTY_SCALE).astype(np.uint16)
            Image.fromarray(scaled).save(path, format="PNG")
