"""Multi-class data: data.classes in the config, readers yielding atom maps (paired, nnU-Net dataset.json,
BraTS, SSL4MIS HDF5), splits from SSL4MIS lists, verify naming every bad file, the cache and resizing."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from datafixtures import ACDC, grey, h5, label_map, nifti, png, shared, ssl4mis

from diffuseg.config import DataConfig
from diffuseg.data.cache import load_cached
from diffuseg.data.dataset import build_datasets, split_indices
from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.brats import BRATS_REGIONS
from diffuseg.data.splits import split_source
from diffuseg.data.transforms import resize_pair
from diffuseg.data.verify import verify_dataset
from diffuseg.enums import SplitKind
from diffuseg.errors import DatasetError, UserError
from diffuseg.labels import ClassSpec
from diffuseg.presets import load_config

# -- config ---------------------------------------------------------------------------------------------------


def test_config_classes_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  classes:\n    - {name: RV, values: [1]}\n    - {name: Myo, values: [2]}\n")
    assert load_config(path).data.classes == (ClassSpec("RV", (1,)), ClassSpec("Myo", (2,)))
    over = load_config(None, ["data.classes=[{name: WT, values: [1, 2]}, {name: TC, values: [1]}]"])
    assert over.data.classes == (ClassSpec("WT", (1, 2)), ClassSpec("TC", (1,)))
    assert DataConfig().classes == ()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.classes=[{name: RV, values: [0]}]", r"data.classes\[0\].values\[0\]: .*0 is the background"),
        ("data.classes=[{name: RV}]", r"data.classes\[0\]: missing key\(s\) values"),
        ("data.classes=[{name: RV, values: [x]}]", r"data.classes\[0\].values\[0\]: expected an integer, got 'x'"),
        ("data.classes=[{name: A, values: [1, 2]}]", r"data.classes\[0\]: class 'A' .* give label"),
    ],
)
def test_config_bad_classes(override, message):
    with pytest.raises(UserError, match=message):
        load_config(None, [override])


# -- readers --------------------------------------------------------------------------------------------------


def test_paired_integer_label_images(tmp_path):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16))
    reader = open_dataset(tmp_path, classes=ACDC)
    case = reader[0]
    assert case.masks.dtype == torch.uint8 and case.masks[0].numpy().tolist() == label_map(16).tolist()
    with pytest.raises(UserError, match="not binary"):  # binary default unchanged: several values are an error
        open_dataset(tmp_path)[0]


def test_atoms_follow_declaration_order(tmp_path):
    png(tmp_path / "images" / "a.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16) * 10)  # values 0, 10, 20, 30
    classes = (ClassSpec("b", (30,)), ClassSpec("a", (10, 20), 10))
    case = open_dataset(tmp_path, classes=classes)[0]
    assert case.masks[0, 0, -1] == 2 and case.masks[0, -1, 0] == 3 and case.masks[0, -1, -1] == 1


def nnunet(root, labels: dict, values: np.ndarray, **extra):
    (root / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "MRI"}, "labels": labels, "file_ending": ".nii.gz", **extra}
    (root / "dataset.json").write_text(json.dumps(meta))
    nifti(root / "imagesTr" / "c1_0000.nii.gz", np.random.default_rng(0).random((16, 16, 2)).astype(np.float32))
    nifti(root / "labelsTr" / "c1.nii.gz", values)
    return root


def test_nnunet_dataset_json_classes(tmp_path):
    values = np.stack([label_map(16), label_map(16, 3)], -1)
    reader = open_dataset(nnunet(tmp_path, {"background": 0, "RV": 1, "MLV": 2, "LVC": 3}, values))
    assert reader.scheme.names == ("RV", "MLV", "LVC") and reader.scheme.channels == 4
    assert reader[1].masks[0].numpy().tolist() == label_map(16, 3).tolist()
    assert reader[0].geometry.volume_id == "c1"
    binary = open_dataset(tmp_path, foreground=[3])  # data.foreground keeps it binary, as before
    assert binary.scheme.binary and set(binary[0].masks.unique().tolist()) == {0, 1}
    with pytest.raises(UserError, match=r"dataset.json: its labels .* do not match data.classes"):
        open_dataset(tmp_path, classes=(ClassSpec("RV", (1,)), ClassSpec("LV", (3,))))


def test_nnunet_msd_v1_labels_and_regions(tmp_path):
    values = np.stack([label_map(16)] * 2, -1)
    v1 = open_dataset(nnunet(tmp_path / "v1", {"0": "background", "1": "a", "2": "b", "3": "c"}, values))
    assert v1.scheme.names == ("a", "b", "c") and v1.scheme.exclusive
    regions = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    reader = open_dataset(nnunet(tmp_path / "v2", regions, values, regions_class_order=[1, 2, 3]))
    scheme = reader.scheme
    assert not scheme.exclusive and scheme.channels == 3 and scheme.painted == (1, 2, 3)
    atoms = reader[0].masks[0]
    decoded = scheme.decode(scheme.one_hot(atoms))
    assert torch.equal(scheme.to_values(decoded), torch.from_numpy(label_map(16)).long())
    with pytest.raises(UserError, match="regions_class_order"):
        open_dataset(nnunet(tmp_path / "bad", regions, values, regions_class_order=[1, 2]))


@pytest.mark.realdata
def test_brats_all_labels_with_declared_regions():
    root = shared("brats_sample")
    reader = open_dataset(root, classes=BRATS_REGIONS)
    labelled = [i for i, e in enumerate(reader.entries) if e.masks]
    case = reader[labelled[0]]
    import nibabel as nib

    seg = np.asarray(nib.load(case.geometry.mask_sources[0][0]).dataobj)
    seg = seg[:, :, 0] if seg.ndim == 3 else seg
    assert torch.equal(reader.scheme.to_values(case.masks[0]), torch.from_numpy(seg.astype(np.int64)))
    assert open_dataset(root).scheme.binary  # BraTS without classes: the whole tumour, as before


def test_ssl4mis_slices_volumes_and_lists(tmp_path):
    root = ssl4mis(tmp_path)
    reader = open_dataset(root)
    assert reader.layout == "ssl4mis" and len(reader) == 4 + 3
    assert reader.scheme.names == ("class_1", "class_2", "class_3") and reader.notes  # values taken as classes
    by_id = {e.case_id: i for i, e in enumerate(reader.entries)}
    two_d = reader[by_id["patient001_frame01_slice_2"]]
    assert two_d.patient_id == "patient001" and two_d.masks[0].numpy().tolist() == label_map(16, 2).tolist()
    assert two_d.geometry.format == "h5" and two_d.geometry.volume_id is None
    with h5py.File(root / "data" / "patient001_frame01_slice_2.h5") as f:  # [0, 1] images kept as stored
        assert np.allclose(two_d.image[0].numpy(), f["image"][()])
    z1 = reader[by_id["patient003_frame01_z0001"]]
    g = z1.geometry
    assert (g.volume_id, g.slice_index, g.volume_shape) == ("patient003_frame01", 1, (3, 16, 16))
    assert z1.masks[0].numpy().tolist() == label_map(16, 1).tolist()
    cfg = DataConfig(root=str(root), classes=ACDC)
    assert split_source(cfg).kind is SplitKind.DATASET_LISTS
    train, val = split_indices(reader, cfg)
    assert {reader.entries[i].patient_id for i in train} == {"patient001", "patient002"}
    assert {reader.entries[i].patient_id for i in val} == {"patient003"}
    named = open_dataset(root, classes=ACDC)
    assert named.scheme.names == ("RV", "Myo", "LV") and not named.notes
    assert reader.classes_source == "the label values found in the files"


def test_ssl4mis_unlabelled_files_for_prediction(tmp_path):
    h5(tmp_path / "data" / "v.h5", np.random.default_rng(0).random((2, 8, 8)).astype(np.float32))
    reader = open_dataset(tmp_path)
    assert reader.layout == "ssl4mis" and len(reader) == 2 and reader.annotators == 0
    assert reader[1].masks.shape == (0, 8, 8) and reader[1].geometry.slice_index == 1


def test_ssl4mis_binary_labels_stay_binary(tmp_path):
    h5(tmp_path / "data" / "a_slice_1.h5", np.zeros((8, 8), np.float32), (label_map(8) > 1).astype(np.uint8) * 5)
    reader = open_dataset(tmp_path)
    assert reader.scheme.binary and set(reader[0].masks.unique().tolist()) == {0, 1}


def test_ssl4mis_volume_and_slices_of_one_case(tmp_path):
    root = ssl4mis(tmp_path)
    volume = np.stack([label_map(16, z) for z in range(2)])
    h5(root / "data" / "patient001_frame01.h5", np.zeros((2, 16, 16), np.float32), volume)  # also as slices
    h5(root / "data" / "patient003_frame01_slice_1.h5", np.zeros((16, 16), np.float32), label_map(16))
    ids = {e.case_id for e in open_dataset(root).entries}
    assert "patient001_frame01_slice_1" in ids and "patient001_frame01_z0000" not in ids  # train: slices
    assert "patient003_frame01_z0000" in ids and "patient003_frame01_slice_1" not in ids  # val: volume


def test_build_datasets_atom_maps_through_the_cache(tmp_path):
    root = ssl4mis(tmp_path / "d")
    cfg = DataConfig(root=str(root), classes=ACDC, image_size=8, augment=True, cache_dir=str(tmp_path / "cache"))
    train, val = build_datasets(cfg)
    assert len(train) == 4 and len(val) == 3  # the slices of train.list, the volume of val.list
    assert train.scheme.names == ("RV", "Myo", "LV") and train.scheme.channels == 4
    item = train[0]
    assert item["mask"].shape == (1, 8, 8) and set(item["mask"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert len(item["mask"].unique()) == 4  # quadrants survive the resize and any flip or turn
    again, _ = build_datasets(cfg)  # from the memory-mapped cache
    assert torch.equal(again.arrays.item(0)[1], train.arrays.item(0)[1])
    assert again.arrays.masks.shape[-1] == 8 and again.arrays.atoms == 3


def test_binary_cache_is_bit_packed_as_before(tmp_path):
    png(tmp_path / "d" / "images" / "a.png", grey(16))
    png(tmp_path / "d" / "masks" / "a.png", (label_map(16) > 0).astype(np.uint8) * 255)
    reader = open_dataset(tmp_path / "d")
    arrays = load_cached(reader, [0], 16, 1, tmp_path / "cache")
    assert arrays.masks.shape == (1, 1, 16, 2) and arrays.atoms == 1
    assert arrays.item(0)[1][0].numpy().tolist() == (label_map(16) > 0).astype(np.uint8).tolist()


def test_resize_atoms_matches_binary_rule_and_keeps_classes():
    masks = torch.from_numpy(label_map(16))[None]
    image = torch.zeros(1, 16, 16)
    _, small = resize_pair(image, masks, 8, atoms=3)
    assert small[0].tolist() == label_map(8).tolist()
    noisy = torch.randint(0, 4, (2, 16, 16), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    _, out = resize_pair(torch.zeros(1, 16, 16), noisy, 8, atoms=3)
    _, flipped = resize_pair(torch.zeros(1, 16, 16), noisy.flip(-1), 8, atoms=3)
    assert torch.equal(flipped, out.flip(-1))  # weights 1/8, 3/8: exact sums, so flips commute exactly


# -- verify and bad input -------------------------------------------------------------------------------------


def test_verify_names_every_file_with_undeclared_values(tmp_path):
    for name in ("a", "b", "c"):
        png(tmp_path / "images" / f"{name}.png", grey(16))
    png(tmp_path / "masks" / "a.png", label_map(16))
    png(tmp_path / "masks" / "b.png", label_map(16) * 2)  # 4 and 6 undeclared
    png(tmp_path / "masks" / "c.png", label_map(12))  # another size
    with pytest.raises(DatasetError) as err:
        verify_dataset(tmp_path, classes=ACDC)
    problems = err.value.problems
    assert len(problems) == 2
    assert "b.png: label value(s) {4, 6} not declared in data.classes" in problems[0]
    assert "c.png: mask size 12x12 differs from image size 16x16" in problems[1]


def test_verify_dataset_json_labels_not_matching_files(tmp_path):
    values = np.stack([label_map(16), label_map(16) * 2], -1)  # slice 1 holds 4 and 6
    root = nnunet(tmp_path, {"background": 0, "a": 1, "b": 2, "c": 3}, values)
    with pytest.raises(DatasetError) as err:
        verify_dataset(root)
    (problem,) = err.value.problems
    assert "labelsTr/c1.nii.gz: label value(s) {4, 6} not declared in" in problem and "dataset.json" in problem


def test_verify_summary_lists_classes(tmp_path):
    summary = verify_dataset(ssl4mis(tmp_path), classes=ACDC)
    assert "layout: ssl4mis" in summary and "label classes (exclusive, from data.classes): RV [1]" in summary


@pytest.mark.realdata
def test_acdc_real_data():
    root = shared("acdc")
    reader = open_dataset(root, classes=ACDC)
    assert reader.layout == "ssl4mis" and not reader.problems
    slices = [i for i, e in enumerate(reader.entries) if e.volume_id is None]
    volumes = {e.volume_id for e in reader.entries if e.volume_id is not None}
    assert len(slices) == len((root / "train_slices.list").read_text().split())
    assert volumes == set((root / "val.list").read_text().split())
    case = reader[slices[0]]
    with h5py.File(case.geometry.sources[0]) as f:
        label = f["label"][()]
    assert torch.equal(case.masks[0], torch.from_numpy(label))  # ACDC values 1/2/3 are atoms 1/2/3
    train, val = split_indices(reader, DataConfig(root=str(root), classes=ACDC))
    assert not {reader.entries[i].patient_id for i in train} & {reader.entries[i].patient_id for i in val}
    assert all(reader.entries[i].volume_id is not None for i in val)
