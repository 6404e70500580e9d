"""The item every reader yields: one 2D image with the masks of its A annotators and its geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Geometry:
    """Everything a writer needs to put a prediction back where the input came from.

    ``size`` is the original (H, W) of the 2D item. For NIfTI, MetaImage, NRRD and DICOM series inputs ``affine``
    is the 4x4 RAS matrix of the source file (a series: its folder) and ``spacing`` its voxel sizes. A 2D slice of
    a 3D volume has ``volume_id``, ``slice_index`` along ``slice_axis`` (``None``: the format's, the third array
    axis; the first for HDF5, whose volumes are (D,H,W); ``formats.orientation``) and ``volume_shape``; writers
    re-assemble those slices.
    """

    size: tuple[int, int]
    format: str  # file suffix of the image: "png", "gif", "jpg", "tif", "bmp", "npy", "nii", "nii.gz", "h5", "dcm"
    sources: tuple[str, ...] = ()  # image file per channel
    mask_sources: tuple[tuple[str, ...], ...] = ()  # per annotator, the files joined into its mask
    affine: tuple[tuple[float, ...], ...] | None = None
    spacing: tuple[float, ...] | None = None
    volume_id: str | None = None
    slice_index: int | None = None
    volume_shape: tuple[int, ...] | None = None
    slice_axis: int | None = None
    layout: str = ""
    category: str = ""  # the class folder of the case (``classes`` layout, e.g. BUSI's benign/malignant/normal)

    def plane_spacing(self) -> tuple[float, ...] | None:
        """The voxel sizes of the 2D item's two axes (mm), or ``None`` when the file gives none."""
        if not self.spacing:
            return None
        if len(self.spacing) < 3:
            return tuple(self.spacing[:2])
        axis = 2 if self.slice_axis is None else self.slice_axis
        return tuple(s for i, s in enumerate(self.spacing[:3]) if i != axis)

    def volume_spacing(self) -> tuple[float, ...] | None:
        """The voxel sizes of the item's volume with its slices stacked last (in-plane, then through-plane), or
        ``None`` without three spacings."""
        if not self.spacing or len(self.spacing) < 3:
            return None
        axis = 2 if self.slice_axis is None else self.slice_axis
        return (*(self.plane_spacing() or ()), float(self.spacing[axis]))


@dataclass
class Case:
    """One item: ``image`` (channels,H,W) float32, ``masks`` (A,H,W) uint8 atom maps (``labels``: {0,1} for
    binary, 0..L for L declared label values); A = 0 when unlabelled."""

    image: torch.Tensor
    masks: torch.Tensor
    case_id: str
    patient_id: str
    geometry: Geometry
    extra: dict = field(default_factory=dict)

    @property
    def annotators(self) -> int:
        return int(self.masks.shape[0])
