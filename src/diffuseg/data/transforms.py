"""Paired transforms on tensors: resizing to the model size (``Fit``), training augmentation, the random crop.

Images are (channels,H,W) float, masks (A,H,W) atom maps (``labels``: {0,1} for binary, 0..L for L declared
label values); every geometric change is applied to both with the same parameters (images bilinear, masks
nearest, so atoms stay atoms). Every random function takes a ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffuseg.config import DataConfig
from diffuseg.data.case import Geometry
from diffuseg.data.spacing import resampled_shape
from diffuseg.enums import Resize


def pad_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where an (H,W) image sits in the S x S square of ``data.resize: pad``: (top, left, h, w).

    The longer side becomes S, the shorter ``round(side * S / longer)`` (at least 1), centred (the odd pixel of
    padding goes to the bottom or right).
    """
    scale = size / max(height, width)
    h, w = max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale)))
    return (size - h) // 2, (size - w) // 2, h, w


@dataclass(frozen=True)
class Fit:
    """How an (H,W) item becomes the S x S model input and back: ``data.resize`` and, for ``spacing``, the target
    ``data.spacing`` (rows, columns) in mm per pixel (module ``data.spacing``)."""

    mode: Resize = Resize.STRETCH
    spacing: tuple[float, ...] = ()

    @classmethod
    def of(cls, data: DataConfig) -> Fit:
        """The fit of a run's (or checkpoint's) resolved ``data`` config."""
        return cls(data.resize, tuple(data.spacing))

    def box(self, height: int, width: int, size: int, geometry: Geometry | None = None) -> tuple[int, int, int, int]:
        """Where an (H,W) item of ``geometry`` sits in the S x S input: (top, left, h, w). stretch: the whole
        square; pad: ``pad_box``; spacing: (h, w) = ``spacing.resampled_shape``, centred as pad centres
        (``UserError`` naming the file when it has no spacing or does not fit)."""
        if self.mode == Resize.STRETCH:
            return 0, 0, size, size
        if self.mode == Resize.PAD:
            return pad_box(height, width, size)
        where = geometry.sources[0] if geometry is not None and geometry.sources else "image"
        pixel = geometry.plane_spacing() if geometry is not None else None
        h, w = resampled_shape(height, width, pixel, self.spacing, size, where)
        return (size - h) // 2, (size - w) // 2, h, w


STRETCH_FIT = Fit()  # the default: both sides to S


def resize_pair(
    image: torch.Tensor,
    masks: torch.Tensor,
    size: int,
    atoms: int = 1,
    fit: Fit = STRETCH_FIT,
    geometry: Geometry | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size`` x ``size``; writers map predictions back to the original size (``unpad``).

    ``fit`` stretch: both sides to S (aspect ratio not kept). pad: the image is resized to ``pad_box``'s
    (h, w), keeping its aspect ratio, and padded to S x S with zeros (image) and background 0 (masks). spacing:
    resized to ``geometry``'s spacing resampled to ``fit.spacing`` (``Fit.box``), padded as pad pads.
    image (channels,H,W) float -> (channels,S,S) bilinear with antialiasing; masks (A,H,W) {0,1} -> (A,S,S)
    {0,1}: the same antialiased bilinear map, foreground where it is >= 0.5. Both commute with flips and
    90-degree turns, so image and mask stay aligned and no border is favoured (nearest-neighbour halving keeps
    pixels 1, 3, 5, ..., which shifts the mask a quarter of an output pixel towards the bottom-right of the
    image). Atom maps with
    ``atoms`` = L >= 2 (values 0..L): the same map on the one-hot over the L + 1 atoms, then the argmax (ties
    to the lower atom); L = 1 is exactly the binary rule above.

    Args:
        image: (channels,H,W).
        masks: (A,H,W) atom maps.
        size: S.
        atoms: L, the atoms of the masks.
        fit: ``data.resize`` and ``data.spacing``.
        geometry: the item's (its file and pixel spacing), for ``fit`` spacing.
    """
    top, left, h, w = fit.box(*image.shape[-2:], size, geometry)
    img, msk = _resize_to(image, masks, (h, w), atoms)
    if (h, w) == (size, size):
        return img, msk
    sides = (left, size - w - left, top, size - h - top)
    return F.pad(img, sides), F.pad(msk, sides)


def _resize_to(
    image: torch.Tensor, masks: torch.Tensor, shape: tuple[int, int], atoms: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``resize_pair``'s maps to (h, w) = ``shape``."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image.float(), masks
    img = F.interpolate(image[None].float(), size=shape, mode="bilinear", align_corners=False, antialias=True)[0]
    if masks.shape[0] == 0:
        return img, masks.new_zeros((0, *shape))
    if atoms >= 2:
        return img, resize_atoms(masks, shape, atoms)
    soft = F.interpolate(masks[None].float(), size=shape, mode="bilinear", align_corners=False, antialias=True)
    return img, (soft[0] >= 0.5).to(masks.dtype)


def unpad(
    array: torch.Tensor, original: tuple[int, int], fit: Fit = STRETCH_FIT, geometry: Geometry | None = None
) -> torch.Tensor:
    """A model-size map (..., S, S) -> the part that covers the (H,W) = ``original`` item of ``geometry``: (..., h, w)
    of ``fit.box`` (the whole map for stretch). Writers then resize it to (H,W)."""
    if fit.mode == Resize.STRETCH:
        return array
    top, left, h, w = fit.box(int(original[0]), int(original[1]), int(array.shape[-1]), geometry)
    return array[..., top : top + h, left : left + w]


def resize_atoms(masks: torch.Tensor, shape: tuple[int, int], atoms: int) -> torch.Tensor:
    """Atom maps (A,H,W) with values 0..``atoms`` -> (A,h,w) = ``shape``: antialiased bilinear resize of the
    one-hot over the atoms, then the argmax (ties to the lower atom)."""
    one_hot = F.one_hot(masks.long(), atoms + 1).movedim(-1, 1).float()  # (A, L+1, H, W)
    soft = F.interpolate(one_hot, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return soft.argmax(1).to(masks.dtype)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run small per-item tensor ops on one thread, then restore the thread count.

    On a busy machine torch's thread pool makes such small ops many times slower (docs/benchmarks.md);
    DataLoader worker processes already use one thread.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


@dataclass(frozen=True)
class Augment:
    """Training augmentation: flips, 90-degree turns, a small rotation, contrast/brightness/gamma.

    Probabilities and ranges are per item; ``rotation`` is the largest extra angle in degrees.
    """

    flip: float = 0.5
    rot90: bool = True
    rotation: float = 15.0
    contrast: float = 0.1  # image * U(1-c, 1+c)
    brightness: float = 0.1  # + U(-b, b)
    gamma: float = 0.2  # image ** exp(U(-g, g)) on the [0, 1] part

    def __call__(
        self, image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (channels,S,S) float, masks (A,S,S) -> the same shapes, transformed alike."""
        with single_thread():
            return self._apply(image, masks, generator)

    def _apply(
        self, image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if float(torch.rand((), generator=generator)) < self.flip:
            image, masks = image.flip(-1), masks.flip(-1)
        if float(torch.rand((), generator=generator)) < self.flip:
            image, masks = image.flip(-2), masks.flip(-2)
        if self.rot90:
            k = int(torch.randint(0, 4, (), generator=generator))
            image, masks = torch.rot90(image, k, (-2, -1)), torch.rot90(masks, k, (-2, -1))
        if self.rotation > 0:
            angle = _uniform(generator, -self.rotation, self.rotation)
            image, masks = rotate_pair(image, masks, angle)
        image = image * _uniform(generator, 1 - self.contrast, 1 + self.contrast)
        image = image + _uniform(generator, -self.brightness, self.brightness)
        if self.gamma > 0:
            g = math.exp(_uniform(generator, -self.gamma, self.gamma))
            image = image.clamp(0, 1) ** g + (image - image.clamp(0, 1))
        return image.contiguous(), masks.contiguous()


def rotate_pair(image: torch.Tensor, masks: torch.Tensor, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate about the centre by ``degrees`` (zeros fill the corners); image bilinear, masks nearest."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])[None]
    grid = F.affine_grid(theta, [1, 1, *image.shape[-2:]], align_corners=False)
    img = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    if masks.shape[0] == 0:
        return img, masks
    msk = F.grid_sample(masks[None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    return img, msk.to(masks.dtype)


def random_crop(
    image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The random-crop LIDC variant (ambiguity paper, section 2), as we read it.

    A window of ``fraction`` of the side, at a position drawn uniformly over all positions inside the
    image, is cut and resized back to the input size, so the lesion is no longer centred and may be cut
    or absent. image (channels,S,S), masks (A,S,S) -> same shapes.
    """
    with single_thread():
        return _crop(image, masks, generator, fraction)


def _crop(
    image: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, fraction: float
) -> tuple[torch.Tensor, torch.Tensor]:
    size = image.shape[-1]
    side = max(1, round(size * fraction))
    top = int(torch.randint(0, image.shape[-2] - side + 1, (), generator=generator))
    left = int(torch.randint(0, size - side + 1, (), generator=generator))
    img = image[..., top : top + side, left : left + side]
    msk = masks[..., top : top + side, left : left + side]
    img = F.interpolate(img[None].float(), size=image.shape[-2:], mode="bilinear", align_corners=False)[0]
    msk = F.interpolate(msk[None].float(), size=image.shape[-2:], mode="nearest-exact")[0].to(masks.dtype)
    return img, msk


# ITU-R BT.601 luma weights of R, G, B (the conversion PIL's convert("L") uses)
LUMA_601 = (0.299, 0.587, 0.114)


def match_channels(image: torch.Tensor, channels: int, where: str, colour: bool = True) -> torch.Tensor:
    """image (stored channels,H,W) -> (channels,H,W), the one channel policy of verify, training and prediction
    (docs/data.md).

    The same count is kept; a colour picture (``colour``: an RGB raster) becomes grey by ITU-R BT.601 luma
    when ``channels`` is 1; a grey image is repeated when ``channels`` is 3. Anything else (3 NIfTI
    channels or modalities to 1, 4 to 3, ...) raises ``ValueError`` naming ``where`` and both counts:
    averaging modalities or volume planes gives no image.
    """
    c = image.shape[0]
    if c == channels:
        return image
    if c == 3 and channels == 1 and colour:
        weights = torch.tensor(LUMA_601, dtype=image.dtype, device=image.device).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    if c == 1 and channels == 3:
        return image.expand(channels, *image.shape[1:]).clone()
    kind = "" if colour or c != 3 else " (not an RGB picture: only RGB rasters are turned into grey)"
    raise ValueError(
        f"{where}: images have {c} channels but data.in_channels is {channels}{kind}; "
        f"set data.in_channels={c} (diffuseg verify --in-channels {c})"
    )


def model_channels_problem(sources: Sequence[str], case: str, stored: int, in_channels: int) -> str:
    """The ``predict`` message for a case of ``stored`` channels (read from the files ``sources``) that a model
    reading ``in_channels`` cannot take: the model is fixed, so it names what the files hold, not a setting. It
    names the file by its path, or, for channels in several files, the case (``case``: a volume's name, not its
    slice's) in their folder."""
    where, held, grouped = (sources[0] if sources else case), "", ""
    if len(sources) > 1:
        where = Path(sources[0]).parent / case
        files = ", ".join(Path(s).name for s in sources[:4]) + (", ..." if len(sources) > 4 else "")
        held = f" ({len(sources)} file(s): {files})"
        grouped = (
            "; files named CASE_XXXX are the channels of one case (nnU-Net's naming): --layout images reads each "
            "as an image of its own"
        )
    return (
        f"{where}: the input has {stored} channel(s){held} but the model reads "
        f"{in_channels} (the checkpoint's data.in_channels); predict with a model trained on {stored}-channel "
        f"images, or give inputs of {in_channels} channel(s){grouped}"
    )


def model_input(
    image: torch.Tensor,
    size: int,
    in_channels: int,
    where: str = "image",
    colour: bool = True,
    fit: Fit = STRETCH_FIT,
    geometry: Geometry | None = None,
) -> torch.Tensor:
    """A case's image (channels,H,W) as the network sees it at prediction time: (in_channels,S,S) float32.

    The same resize and channel matching as training (``build_datasets``); ``ValueError`` on a channel
    count that cannot be matched.

    Args:
        image: the case's image (channels,H,W).
        size: S, the model size.
        in_channels: the channels the network reads (``data.in_channels``).
        where: what the error message names (a file or case id).
        colour: whether the channels are an RGB picture (see ``match_channels``).
        fit: ``data.resize`` and ``data.spacing`` (see ``resize_pair``).
        geometry: the case's, for ``fit`` spacing.
    """
    empty = image.new_zeros((0, *image.shape[-2:]), dtype=torch.uint8)
    resized, _ = resize_pair(image, empty, size, fit=fit, geometry=geometry)
    return match_channels(resized, in_channels, where, colour).float()
