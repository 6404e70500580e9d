"""The case figures' drawing rules: NIfTI planes as a viewer shows them (checked against nibabel's own
reorientation and against the affine's world coordinates), titles that wrap, legends that fit."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from diffuseg.data.formats import open_dataset
from diffuseg.evaluation.figures import TITLE_CHARS, View, viewer_view

SHAPE = (7, 9, 5)

# voxel axes -> world: the slices (voxel axis 2) are coronal, axial (x/y swapped and flipped, slightly oblique),
# and sagittal planes
CORONAL = np.array([[0, 1.5, 0, -4], [0, 0, 3, 10], [-2, 0, 0, 7], [0, 0, 0, 1]], float)
AXIAL = np.array([[0, -0.9, 0.05, 3], [-1.1, 0.04, 0, 2], [0, 0, 2.5, -30], [0, 0, 0, 1]], float)
SAGITTAL = np.array([[0, 0, -3, 0], [1, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 0, 1]], float)


def _viewer_reference(img: nib.Nifti1Image, k: int) -> np.ndarray:
    """Slice k (voxel axis 2) as a radiological viewer draws it, from nibabel's RAS reorientation: find the plane
    of the canonical array that holds that slice, then rows from A (axial) or S down, columns from R (A for a
    sagittal plane) to the right."""
    index = np.zeros(SHAPE, np.uint8)
    index[:, :, k] = 1
    canonical = nib.as_closest_canonical(nib.Nifti1Image(index, img.affine))
    data, marker = nib.as_closest_canonical(img).get_fdata(), canonical.get_fdata()
    axis = next(a for a in range(3) if len(np.unique(np.nonzero(marker)[a])) == 1)
    plane = np.take(data, int(np.nonzero(marker)[axis][0]), axis=axis)  # the other two RAS axes, in RAS order
    return plane[::-1, ::-1].T  # rows: the larger RAS axis, decreasing; columns: the smaller, decreasing


@pytest.mark.parametrize(
    ("affine", "edges"),
    [(CORONAL, ("S", "I", "R", "L")), (AXIAL, ("A", "P", "R", "L")), (SAGITTAL, ("S", "I", "A", "P"))],
)
def test_nifti_plane_drawn_as_nibabel_reorients_it(tmp_path, affine, edges):
    rng = np.random.default_rng(0)
    mask = (rng.random(SHAPE) > 0.6).astype(np.uint8)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), affine), tmp_path / "images" / "v.nii.gz")
    img = nib.Nifti1Image(mask, affine)
    nib.save(img, tmp_path / "masks" / "v.nii.gz")
    reader = open_dataset(tmp_path, "auto")
    for i in (0, 3):
        case = reader.load(i)
        view = viewer_view(case.geometry.affine)
        assert view.edges == edges
        assert np.array_equal(view(case.masks.numpy())[0], _viewer_reference(img, case.geometry.slice_index))


@pytest.mark.parametrize("affine", [CORONAL, AXIAL, SAGITTAL])
def test_world_coordinates_run_as_a_radiological_viewer_shows_them(affine):
    """From the affine alone: along the drawn rows the world coordinate of the row axis falls (A or S on top),
    along the columns that of the column axis falls (patient's right on the left; anterior for sagittal)."""
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    view = viewer_view(affine)
    voxels = np.stack([i.ravel(), j.ravel(), np.full(i.size, 2)])
    world = [view(c) for c in (affine[:3, :3] @ voxels).reshape(3, *i.shape)]
    axes = {"RL": 0, "AP": 1, "SI": 2}
    top, _, left, _ = view.edges
    rows_axis = next(a for k, a in axes.items() if top in k)
    cols_axis = next(a for k, a in axes.items() if left in k)
    assert (np.diff(world[rows_axis], axis=0) < 0).all() and (np.diff(world[cols_axis], axis=1) < 0).all()


def test_without_an_affine_planes_are_drawn_as_stored():
    plane = np.arange(12).reshape(3, 4)
    assert viewer_view(None) == View() and np.array_equal(View()(plane), plane)


def test_long_titles_wrap_and_many_classes_fit_the_legend():
    """A case figure is 2 inches per panel: a long title wraps within its panel, and 14 classes' legend wraps
    into rows inside the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from diffuseg.evaluation.figures import _tidy, figure_legend
    from diffuseg.labels import label_scheme

    fig = Figure(figsize=(8.0, 2.5), dpi=100, layout="constrained")
    axes = [fig.add_subplot(1, 4, k + 1) for k in range(4)]
    for ax in axes:
        _tidy(ax, "annotator 12 of the second reading session (empty)")
    scheme = label_scheme([{"name": f"structure-{k}", "values": [k]} for k in range(1, 15)])
    figure_legend(fig, scheme)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert all(len(line) <= TITLE_CHARS for line in axes[0].get_title().split("\n"))
    titles = [ax.title.get_window_extent(renderer) for ax in axes]
    assert all(a.x1 < b.x0 for a, b in itertools.pairwise(titles))  # no title runs into the next panel's
    assert titles[0].x0 >= 0 and titles[-1].x1 <= fig.bbox.width
    box = fig.legends[0].get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # the legend's rows stay inside the figure
