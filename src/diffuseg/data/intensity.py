"""The training set's foreground intensity statistics for ``data.normalize: ct``.

nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image
segmentation", Nature Methods 2021) normalises CT with numbers of the whole training set rather than of each
scan: it samples the intensities of the foreground voxels (label > 0) of every training case, clips every image to
their 0.5th and 99.5th percentiles and subtracts their mean and divides by their standard deviation
(``formats.files.ct_intensity``). As its dataset fingerprint does, each case contributes the same number of draws
(with replacement, from a generator seeded 1234 per case); nnU-Net draws 10^8 in all, we draw
``FOREGROUND_SAMPLES`` = 10^7 (40 MB of float32; the percentiles' sampling error stays far below one HU).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffuseg.data.formats import Reader
from diffuseg.data.formats.files import read_file
from diffuseg.errors import UserError

FOREGROUND_SAMPLES = 10**7


def ct_statistics(reader: Reader, indices: Sequence[int], samples: int = FOREGROUND_SAMPLES) -> tuple[float, ...]:
    """(low, high, mean, std) of the foreground intensities of the cases of entries ``indices``: the 0.5th and
    99.5th percentiles, mean and standard deviation of ``samples`` draws spread evenly over the cases.

    A case is an image file with its first annotator's label file (the slices of a volume are one case); images
    are read as stored (HU for CT), the foreground is every voxel whose label is > 0. ``UserError`` when an image
    and its label differ in shape (several channels: CT has one) or no case has foreground.
    """
    cases = list(dict.fromkeys((e.images[0], e.masks[0][0]) for e in (reader.entries[i] for i in indices) if e.masks))
    if not cases:
        raise UserError(f"{reader.root}: data.normalize=ct needs labelled training cases")
    per_case = max(1, samples // len(cases))
    draws = []
    for image_path, label_path in cases:
        image = read_file(image_path).array
        label = read_file(label_path, as_mask=True).array
        if image.shape != label.shape:
            raise UserError(
                f"{image_path}: data.normalize=ct needs one-channel images of their labels' shape "
                f"(image {image.shape}, label {label.shape} in {label_path})"
            )
        foreground = image[label > 0].astype(np.float32)
        foreground = foreground[np.isfinite(foreground)]
        if foreground.size:
            draws.append(np.random.RandomState(1234).choice(foreground, per_case, replace=True))
    if not draws:
        raise UserError(f"{reader.root}: data.normalize=ct found no foreground (label > 0) in the training cases")
    values = np.concatenate(draws)
    low, high = np.percentile(values, (0.5, 99.5))
    return float(low), float(high), float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
