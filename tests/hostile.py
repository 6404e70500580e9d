"""The hostile-input corpus: tiny datasets with one bad file or one bad piece of metadata each, written on the fly,
and the checks every refusal must pass (``refused``). Here the paired layout; ``hostile_layouts`` the nnU-Net and
SSL4MIS ones.

``PAIRED`` (``hostile_layouts.NNUNET``, ``SSL4MIS``) maps a name to ``(build, problem, commands)``:
``build(root)`` writes a dataset folder at ``root`` (good cases and one hostile thing) and returns the file the
refusal must name; ``problem`` is text the refusal must hold; ``commands`` are the subcommands that read what is
bad (``verify`` and ``train`` decode every file, ``predict`` reads images, never labels). Things outside the
dataset go to ``root.parent / "elsewhere"``.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

SIZE = 16
TINY_UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"
ALL = ("verify", "train", "predict")
LABELS = ("verify", "train")  # label files: predict never reads them


def refused(err: str, named: str, problem: str) -> None:
    """Exactly one ``error:`` line, the file named with its problem on one line (the error line or a line of the
    problem list below it), no traceback."""
    lines = err.strip().splitlines()
    assert sum(line.startswith("error:") for line in lines) == 1, err  # a progress bar may come first
    assert "Traceback" not in err and named in err and problem in err, err
    assert any(named in line and problem in line for line in lines), err


class Unblocker:
    """Opens every FIFO under ``root`` for writing now and then, and closes it at once: a reader blocked on one
    (the hang a refusal must prevent) then reads an empty file, and the test fails instead of hanging."""

    def __init__(self, root: Path):
        self.root, self.stop = root, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for folder, _, names in os.walk(self.root):
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        if stat.S_ISFIFO(os.lstat(path).st_mode):
                            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:  # no reader waiting
                        continue

    def __enter__(self) -> Unblocker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), str(path))
    return path


def h5(path: Path, image: np.ndarray | None, label: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if image is not None:
            f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)
    return path


def grey(seed: int = 0, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def disc(radius: float = 4, size: int = SIZE, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) <= radius**2).astype(np.uint8) * value


def elsewhere(root: Path) -> Path:
    out = root.parent / "elsewhere"
    out.mkdir(exist_ok=True)
    return out


def frames(path: Path, count: int = 3) -> Path:
    """A multi-page TIFF or an animated GIF / PNG of ``count`` different frames, by ``path``'s ending."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pages = [Image.fromarray(grey(k)) for k in range(count)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (8-bit grey) with an empty data stream."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def encoded(fmt: str) -> bytes:
    """A small grey image encoded as ``fmt`` (a Pillow format name)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(grey(7)).save(buf, format=fmt)
    return buf.getvalue()


def cut(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# ------------------------------------------------------------------------------------------------ paired layout
def paired(root: Path, n: int = 2) -> Path:
    """``images/`` + ``masks/`` with ``n`` good cases and the mask of case ``z`` (its image is the test's)."""
    for i in range(n):
        png(root / "images" / f"{i}_a.png", grey(i))
        png(root / "masks" / f"{i}_a.png", disc(3 + i))
    png(root / "masks" / "z.png", disc(5))
    return root


def image(root: Path, name: str = "z.png") -> Path:
    """The path of case ``z``'s image in a ``paired`` dataset (nothing written there yet)."""
    return paired(root) / "images" / name


def _nifti_named_png(root: Path) -> Path:
    path = image(root)
    nifti(path.with_name("z.nii"), grey()).rename(path)
    return path


def with_mask(root: Path, name: str = "z.png") -> Path:
    """A ``paired`` dataset whose case ``z`` has a good image; returns where its mask goes (removed)."""
    paired(root)
    png(root / "images" / "z.png", grey(9))
    (root / "masks" / "z.png").unlink()
    return root / "masks" / name


def link(path: Path, target: Path | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=Path(target).is_dir())
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def written(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def saved(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def _truncated(root: Path, name: str) -> Path:
    path = image(root, name)
    if name.endswith((".nii", ".nii.gz")):
        nifti(path, np.random.default_rng(0).random((SIZE, SIZE, 2)).astype(np.float32))
        return cut(path, 0.8)
    if name.endswith(".npy"):
        return cut(saved(path, np.ones((32, 32), np.float32)))
    png(path, np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8))
    return cut(path)


def _folder_of_images_outside(root: Path) -> Path:
    paired(root)
    (root / "masks" / "z.png").unlink()
    store = elsewhere(root) / "images"
    for i in range(2):
        (root / "images" / f"{i}_a.png").rename(png(store / f"{i}_a.png", grey(i)))
    (root / "images").rmdir()
    link(root / "images", store)
    return root / "images" / "0_a.png"


def _mask_folder_outside(root: Path) -> Path:
    paired(root)
    (root / "masks" / "z.png").unlink()
    store = elsewhere(root) / "masks"
    for i in range(2):
        png(store / f"{i}_a.png", disc(3))
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()
    link(root / "masks", store)
    return root / "masks" / "0_a.png"


def _ambiguous(root: Path) -> Path:
    paired(root)
    png(root / "images" / "z.png", grey(9))
    png(root / "benign" / "x.png", grey(3))
    png(root / "benign" / "x_mask.png", disc(3))
    return root


def _case_clash(root: Path) -> Path:
    paired(root)
    png(root / "images" / "z.png", grey(9))
    for stem in ("Scan", "scan"):
        png(root / "images" / f"{stem}.png", grey(len(stem)))
        png(root / "masks" / f"{stem}.png", disc(3))
    return root / "images" / "scan.png"


Build = Callable[[Path], Path]
PAIRED: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    # images: every subcommand reads them
    "image dangling link": (
        lambda r: link(image(r), r.parent / "gone.png"),
        "which does not exist (a dangling link)",
        ALL,
    ),
    "image fifo": (lambda r: fifo(image(r)), "a named pipe (FIFO), not a regular file", ALL),
    "image /dev/zero": (lambda r: link(image(r), "/dev/zero"), "a link to /dev/zero, a character device", ALL),
    "image folder named .png": (lambda r: _mkdir(image(r)), "a folder named like an image file", ALL),
    "image multi-page tiff": (
        lambda r: frames(image(r, "z.tif")),
        "holds 3 frames (a multi-page or animated TIFF)",
        ALL,
    ),
    "image animated gif": (lambda r: frames(image(r, "z.gif")), "holds 3 frames (a multi-page or animated GIF)", ALL),
    "image animated png": (lambda r: frames(image(r, "z.png")), "holds 3 frames (a multi-page or animated PNG)", ALL),
    "image png named .nii.gz": (
        lambda r: written(image(r, "z.nii.gz"), encoded("PNG")),
        "holds PNG data but is named .nii.gz",
        ALL,
    ),
    "image jpeg named .png": (lambda r: written(image(r), encoded("JPEG")), "holds JPG data but is named .png", ALL),
    "image hdf5 named .npy": (lambda r: h5(image(r, "z.npy"), grey()), "holds H5 data but is named .npy", ALL),
    "image png named .npy": (
        lambda r: written(image(r, "z.npy"), encoded("PNG")),
        "holds PNG data but is named .npy",
        ALL,
    ),
    "image nifti named .png": (lambda r: _nifti_named_png(r), "holds NII data but is named .png", ALL),
    "image linked from outside": (
        lambda r: link(image(r), png(elsewhere(r) / "z.png", grey())),
        "images are never read from outside the dataset",
        ALL,
    ),
    "images folder linked from outside": (_folder_of_images_outside, "outside the dataset folder", ALL),
    "image empty file": (lambda r: written(image(r), b""), "unreadable or corrupt", ALL),
    "image random bytes": (lambda r: written(image(r), bytes(range(256)) * 4), "unreadable or corrupt", ALL),
    "image png truncated": (lambda r: _truncated(r, "z.png"), "Truncated File Read", ALL),
    "image png 0 wide": (lambda r: written(image(r), png_bytes(0, SIZE)), "unreadable or corrupt", ALL),
    "image png bomb": (lambda r: written(image(r), png_bytes(20000, 20000)), "decompression bomb", ALL),
    "image jpeg truncated": (lambda r: _truncated(r, "z.jpg"), "unreadable or corrupt", ALL),
    "image gif truncated": (lambda r: _truncated(r, "z.gif"), "unreadable or corrupt", ALL),
    "image npy truncated": (lambda r: _truncated(r, "z.npy"), "unreadable or corrupt", ALL),
    "image nii truncated": (lambda r: _truncated(r, "z.nii"), "truncated", ALL),
    "image nii.gz truncated": (lambda r: _truncated(r, "z.nii.gz"), "unreadable or corrupt", ALL),
    "image npy of text": (
        lambda r: saved(image(r, "z.npy"), np.full((SIZE, SIZE), "x")),
        "holds <U1 values, not numbers",
        ALL,
    ),
    "image npy empty": (
        lambda r: saved(image(r, "z.npy"), np.zeros((0, SIZE), np.float32)),
        "holds no values (shape 0x16)",
        ALL,
    ),
    "image npy of objects": (
        lambda r: saved(image(r, "z.npy"), np.array([{}, None], dtype=object)),
        "unreadable or corrupt",
        ALL,
    ),
    "image npy 4d": (
        lambda r: saved(image(r, "z.npy"), np.zeros((2, SIZE, SIZE, 2), np.float32)),
        "not a 2D image",
        LABELS,
    ),
    "image npy NaN": (
        lambda r: saved(image(r, "z.npy"), np.full((SIZE, SIZE), np.nan, np.float32)),
        "NaN or infinite intensity",
        LABELS,
    ),
    "image without a mask": (lambda r: png(image(r).parent / "y.png", grey()), "image without a mask", ALL),
    # masks: verify and train decode them
    "mask dangling link": (
        lambda r: link(with_mask(r), r.parent / "gone.png"),
        "which does not exist (a dangling link)",
        ALL,
    ),
    "mask fifo": (lambda r: fifo(with_mask(r)), "a named pipe (FIFO), not a regular file", ALL),
    "mask /dev/zero": (lambda r: link(with_mask(r), "/dev/zero"), "a character device", ALL),
    "mask folder named .png": (lambda r: _mkdir(with_mask(r)), "a folder named like an image file", ALL),
    "mask multi-page tiff": (lambda r: frames(with_mask(r, "z.tif")), "holds 3 frames", LABELS),
    "mask animated gif": (lambda r: frames(with_mask(r, "z.gif")), "holds 3 frames", LABELS),
    "mask jpeg named .png": (
        lambda r: written(with_mask(r), encoded("JPEG")),
        "holds JPG data but is named .png",
        LABELS,
    ),
    "mask linked from outside": (
        lambda r: link(with_mask(r), png(elsewhere(r) / "m.png", disc())),
        "labels are never read from outside",
        LABELS,
    ),
    "masks folder linked from outside": (_mask_folder_outside, "labels are never read from outside", LABELS),
    "mask not binary": (
        lambda r: png(with_mask(r), disc(6, value=1) + disc(3, value=1)),
        "mask is not binary (values {0, 1, 2})",
        LABELS,
    ),
    "mask of another size": (
        lambda r: png(with_mask(r), disc(3, size=8)),
        "mask size 8x8 differs from image size 16x16",
        LABELS,
    ),
    "mask npy NaN": (
        lambda r: saved(with_mask(r, "z.npy"), np.full((SIZE, SIZE), np.nan, np.float32)),
        "NaN or infinite value(s) in a mask",
        LABELS,
    ),
    "mask npy of text": (lambda r: saved(with_mask(r, "z.npy"), np.full((SIZE, SIZE), "x")), "not numbers", LABELS),
    "mask empty file": (lambda r: written(with_mask(r), b""), "unreadable or corrupt", LABELS),
    "mask truncated": (lambda r: cut(png(with_mask(r), disc())), "unreadable or corrupt", LABELS),
    "mask without an image": (
        lambda r: png(image(r).parent.parent / "masks" / "orphan.png", disc()),
        "mask without an image",
        ALL,
    ),
    "layout ambiguous": (_ambiguous, "the layout is ambiguous", ALL),
    "ids that differ only in case": (_case_clash, "both would be predicted as scan.*", ALL),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
