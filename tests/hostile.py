"""The hostile-input corpus: tiny datasets with one bad file or one bad piece of metadata each, written on the fly.

``DATASETS`` maps a name to ``(build, problem, commands)``: ``build(root)`` writes a dataset folder at ``root``
(good cases and one hostile thing) and returns the file the refusal must name; ``problem`` is text the refusal
must hold; ``commands`` are the subcommands that read what is bad (``verify`` and ``train`` decode every file,
``predict`` reads images, never labels). Things outside the dataset go to ``root.parent / "elsewhere"``.
"""

from __future__ import annotations

import json
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


# ----------------------------------------------------------------------------------------------------- nnU-Net
def nnunet(root: Path, labels: dict | str | None = None, ending: str = ".png", **extra) -> Path:
    """Two 2D PNG cases ``c0``, ``c1``; ``dataset.json`` with ``labels`` (default binary), ``ending``; returns it."""
    meta = {"channel_names": {"0": "US"}, "labels": labels or {"background": 0, "lesion": 1}, "file_ending": ending}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(meta if isinstance(labels, str) else json.dumps({**meta, **extra}))
    for i in range(2):
        png(root / "imagesTr" / f"c{i}_0000.png", grey(i))
        png(root / "labelsTr" / f"c{i}.png", (disc(3 + i) > 0).astype(np.uint8))
    return root / "dataset.json"


def nnunet_volume(root: Path, label_shape: tuple[int, ...]) -> Path:
    """One NIfTI case of shape 16x16x3 whose label has ``label_shape``; returns the label file."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    nifti(root / "imagesTr" / "v_0000.nii.gz", np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32))
    return nifti(root / "labelsTr" / "v.nii.gz", np.zeros(label_shape, np.uint8))


def _dataset_json(root: Path, text: str) -> Path:
    path = nnunet(root)
    path.write_text(text)
    return path


def _png_named_nii(root: Path) -> Path:
    nnunet(root, ending=".nii.gz")
    for p in sorted((root / "imagesTr").iterdir()):
        p.rename(p.with_name(p.name.replace(".png", ".nii.gz")))
    for p in sorted((root / "labelsTr").iterdir()):
        p.rename(p.with_name(p.name.replace(".png", ".nii.gz")))
    return root / "imagesTr" / "c0_0000.nii.gz"


def _rater_outside(root: Path) -> Path:
    nnunet(root)
    rater = elsewhere(root) / "rater1"
    for i in range(2):
        png(rater / f"c{i}.png", (disc(3) > 0).astype(np.uint8))
    link(root / "labelsTr_rater1", rater)
    return root / "labelsTr_rater1" / "c0.png"


def _nn_image_outside(root: Path) -> Path:
    nnunet(root)
    target = png(elsewhere(root) / "c0_0000.png", grey(5))
    path = root / "imagesTr" / "c0_0000.png"
    path.unlink()
    return link(path, target)


REGIONS_SMALL_FIRST = {"background": 0, "ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}
NNUNET: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "nnunet file_ending lies": (
        lambda r: nnunet(r, ending=".nii.gz"),
        "file_ending '.nii.gz' matches no file in imagesTr/",
        ALL,
    ),
    "nnunet file_ending a path": (lambda r: nnunet(r, ending="/../../x.png"), "is not a file ending", ALL),
    "nnunet png named .nii.gz": (_png_named_nii, "holds PNG data but is named .nii.gz", ALL),
    "nnunet label named twice": (
        lambda r: _dataset_json(r, '{"labels": {"background": 0, "RV": 1, "RV": 2}}'),
        "the key 'RV' appears twice",
        ALL,
    ),
    "nnunet two names one value": (
        lambda r: nnunet(r, {"background": 0, "RV": 1, "right ventricle": 1, "LV": 2}),
        "two names for one class",
        ALL,
    ),
    "nnunet ignore label": (
        lambda r: nnunet(r, {"background": 0, "lesion": 1, "ignore": 2}),
        "nnU-Net's ignore label",
        ALL,
    ),
    "nnunet regions small to large": (
        lambda r: nnunet(r, REGIONS_SMALL_FIRST, regions_class_order=[3, 2, 1]),
        "region 'ET' can never be written",
        ALL,
    ),
    "nnunet dataset.json not json": (lambda r: _dataset_json(r, "{labels: "), "not valid JSON", ALL),
    "nnunet dataset.json a list": (lambda r: _dataset_json(r, "[1, 2]"), "expected a JSON object", ALL),
    "nnunet labels not values": (
        lambda r: nnunet(r, {"background": 0, "RV": "one", "LV": 2}),
        "is not a label value",
        ALL,
    ),
    "nnunet rater folder outside": (_rater_outside, "outside the dataset folder", LABELS),
    "nnunet image linked from outside": (_nn_image_outside, "images are never read from outside", ALL),
    "nnunet 2D label of a 3D image": (lambda r: nnunet_volume(r, (SIZE, SIZE)), "label geometry 16x16", LABELS),
    "nnunet label volume a slice short": (
        lambda r: nnunet_volume(r, (SIZE, SIZE, 2)),
        "label geometry 16x16x2",
        LABELS,
    ),
    "nnunet annotator folder ..": (
        lambda r: nnunet(r, annotator_folders=["labelsTr", "../x"]),
        "annotator_folders entry '../x' is outside the dataset folder",
        ALL,
    ),
}


# ----------------------------------------------------------------------------------------------------- SSL4MIS
def ssl4mis(root: Path) -> Path:
    """Two labelled 2D slice files and ``train.list``, which lists a third patient, p2, for the test to write
    (training reads only listed cases); returns the data folder."""
    for i in range(2):
        h5(root / "data" / f"p{i}_frame01_slice_1.h5", grey(i) / 255.0, (disc(3) > 0).astype(np.uint8))
    (root / "train.list").write_text("p0_frame01\np1_frame01\np2_frame01\n")
    return root / "data"


def _external(root: Path, key: str) -> Path:
    data = ssl4mis(root)
    other = h5(elsewhere(root) / "x.h5", grey() / 255.0, (disc(3) > 0).astype(np.uint8))
    path = data / "p2_frame01_slice_1.h5"
    with h5py.File(path, "w") as f:
        for k in ("image", "label"):
            f[k] = h5py.ExternalLink(str(other), f"/{k}") if k == key else other_data(other, k)
    return path


def other_data(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f[key][()])


def _volume(root: Path, label_shape: tuple[int, ...]) -> Path:
    data = ssl4mis(root)
    return h5(data / "p2_frame01.h5", np.random.default_rng(0).random((3, SIZE, SIZE)), np.zeros(label_shape, np.uint8))


def _group_image(root: Path) -> Path:
    path = ssl4mis(root) / "p2_frame01_slice_1.h5"
    with h5py.File(path, "w") as f:
        f.create_group("image")
        f.create_dataset("label", data=np.zeros((SIZE, SIZE), np.uint8))
    return path


def _listed(root: Path, line: str) -> Path:
    ssl4mis(root)
    (root / "train.list").write_text(f"p0_frame01\np1_frame01\n{line}\n")
    return root / "train.list"


SSL4MIS: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "hdf5 dangling link": (lambda r: link(ssl4mis(r) / "p2_frame01_slice_1.h5", r / "gone.h5"), "a dangling link", ALL),
    "hdf5 fifo": (lambda r: fifo(ssl4mis(r) / "p2_frame01_slice_1.h5"), "a named pipe (FIFO)", ALL),
    "hdf5 png bytes": (
        lambda r: written(ssl4mis(r) / "p2_frame01_slice_1.h5", encoded("PNG")),
        "holds PNG data but is named .h5",
        ALL,
    ),
    "hdf5 image external link": (lambda r: _external(r, "image"), "'image' is an external link to", ALL),
    "hdf5 label external link": (lambda r: _external(r, "label"), "'label' is an external link to", LABELS),
    "hdf5 image a group": (_group_image, "'image' is a group, not a dataset", ALL),
    "hdf5 image empty": (
        lambda r: h5(ssl4mis(r) / "p2_frame01.h5", np.zeros((0, SIZE, SIZE)), np.zeros((0, SIZE, SIZE), np.uint8)),
        "holds no values",
        ALL,
    ),
    "hdf5 image of text": (
        lambda r: h5(ssl4mis(r) / "p2_frame01_slice_1.h5", np.array([b"ab"] * SIZE), disc()),
        "holds |S2 values, not numbers",
        ALL,
    ),
    "hdf5 without label": (
        lambda r: h5(ssl4mis(r) / "p2_frame01_slice_1.h5", grey() / 255.0),
        "no dataset 'label', while the other files",
        ALL,
    ),
    "hdf5 2D label of a 3D image": (
        lambda r: _volume(r, (SIZE, SIZE)),
        "label shape 16x16 differs from the image volume's 3x16x16",
        LABELS,
    ),
    "hdf5 label volume a slice short": (
        lambda r: _volume(r, (2, SIZE, SIZE)),
        "label shape 2x16x16 differs from the image volume's 3x16x16",
        LABELS,
    ),
    "ssl4mis list entry without a file": (lambda r: _listed(r, "ghost_frame01"), "ghost_frame01", ("verify", "train")),
    "ssl4mis list entry ..": (lambda r: _listed(r, "../../etc/passwd"), "../../etc/passwd", ("verify", "train")),
}

DATASETS = {**PAIRED, **NNUNET, **SSL4MIS}
