"""LabelScheme on hand-checkable label maps: binary identity, exclusive ACDC-like classes, BraTS regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme

ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]
BRATS = [
    {"name": "WT", "values": [1, 2, 4]},
    {"name": "TC", "values": [1, 4]},
    {"name": "ET", "values": [4]},
]


def test_binary_is_the_identity_on_binary_masks():
    scheme = label_scheme()
    assert scheme.binary and scheme.exclusive and scheme.names == ("foreground",)
    assert scheme.channels == 1 and scheme.atoms == 1 and scheme.values == ()
    label = np.array([[0, 3], [7, 0]])
    atoms = scheme.encode(label)
    assert atoms.dtype == np.uint8 and atoms.tolist() == [[0, 1], [1, 0]]  # any non-zero value is foreground
    assert scheme.undeclared(label) == set()
    mask = torch.tensor([[[0, 1], [1, 0]]], dtype=torch.uint8)  # (A=1, H, W)
    one_hot = scheme.one_hot(mask)
    assert one_hot.shape == (1, 1, 2, 2) and torch.equal(one_hot[:, 0], mask.float())
    soft = torch.tensor([[[[0.2, 0.5], [0.51, 0.9]]]])  # (N, 1, H, W)
    assert scheme.decode(soft, 0.5).tolist() == [[[0, 0], [1, 1]]]  # soft > threshold, as the samplers do
    assert scheme.to_values(atoms).tolist() == [[0, 1], [1, 0]]


def test_binary_foreground_values():
    scheme = label_scheme((), foreground=[2, 3])
    assert scheme.values == (2, 3) and scheme.atoms == 1
    assert scheme.encode(np.array([0, 1, 2, 3, 4])).tolist() == [0, 0, 1, 1, 0]


def test_exclusive_acdc_like_classes():
    scheme = label_scheme(ACDC)
    assert not scheme.binary and scheme.exclusive and scheme.names == ("RV", "Myo", "LV")
    assert scheme.values == (1, 2, 3) and scheme.channels == 4 and scheme.painted == (1, 2, 3)
    atoms = torch.tensor([[0, 1], [2, 3]])
    one_hot = scheme.one_hot(atoms)
    assert one_hot.shape == (4, 2, 2)
    assert torch.equal(one_hot.argmax(0), atoms)  # channel c is atom c here
    assert torch.equal(one_hot.sum(0), torch.ones(2, 2))  # exactly one channel on per pixel
    masks = scheme.class_masks(atoms)
    assert masks.shape == (3, 2, 2) and masks[2].tolist() == [[False, False], [False, True]]
    soft = torch.zeros(1, 4, 1, 3)
    soft[0, 0, 0, 0], soft[0, 3, 0, 1], soft[0, 2, 0, 2] = 0.4, 0.3, 0.26  # rest of channel mass elsewhere
    soft[0, 1, 0, 0], soft[0, 1, 0, 1], soft[0, 1, 0, 2] = 0.3, 0.2, 0.25
    assert scheme.decode(soft).tolist() == [[[0, 3, 2]]]  # argmax, threshold unused


def test_exclusive_values_other_than_atoms():
    scheme = label_scheme([{"name": "a", "values": [10]}, {"name": "b", "values": [20, 30], "label": 30}])
    label = np.array([[0, 10, 20, 30]])  # (H=1, W=4)
    atoms = scheme.encode(label)
    assert atoms.tolist() == [[0, 1, 2, 3]]
    assert scheme.class_masks(torch.from_numpy(atoms)).tolist() == [
        [[False, True, False, False]],
        [[False, False, True, True]],
    ]
    assert scheme.to_values(atoms).tolist() == [[0, 10, 20, 30]]
    decoded = scheme.decode(scheme.one_hot(torch.from_numpy(atoms)))
    assert scheme.to_values(decoded).tolist() == [[0, 10, 30, 30]]  # class b is written as its label


def test_brats_regions_paint_back_label_values():
    scheme = label_scheme(BRATS)
    assert not scheme.exclusive and scheme.channels == 3 and scheme.values == (1, 2, 4)
    assert scheme.painted == (2, 1, 4)  # WT -> 2, TC -> 1, ET -> 4 (nnU-Net regions_class_order)
    label = np.array([[0, 1], [2, 4]])
    atoms = torch.from_numpy(scheme.encode(label))
    one_hot = scheme.one_hot(atoms)
    assert one_hot[0].tolist() == [[0, 1], [1, 1]]  # WT = {1, 2, 4}
    assert one_hot[1].tolist() == [[0, 1], [0, 1]]  # TC = {1, 4}
    assert one_hot[2].tolist() == [[0, 0], [0, 1]]  # ET = {4}
    decoded = scheme.decode(one_hot.unsqueeze(0), 0.5)
    assert scheme.to_values(decoded)[0].tolist() == [[0, 1], [2, 4]]


@pytest.mark.parametrize("classes", [(), ACDC, BRATS], ids=["binary", "acdc", "brats"])
def test_round_trip_encode_one_hot_decode_to_values(classes):
    scheme = label_scheme(classes)
    rng = np.random.default_rng(0)
    pool = np.array((0, *scheme.values) if scheme.values else (0, 1))
    label = rng.choice(pool, size=(2, 5, 7))
    atoms = torch.from_numpy(scheme.encode(label))
    back = scheme.to_values(scheme.decode(scheme.one_hot(atoms), 0.5))
    assert back.shape == label.shape and torch.equal(back, torch.from_numpy(label).long())


def test_undeclared_values_and_encode_error():
    scheme = label_scheme(ACDC)
    assert scheme.undeclared(np.array([0, 1, 5, 3, 7])) == {5, 7}
    assert scheme.undeclared([0, 2.5]) == {2.5}
    with pytest.raises(ValueError, match=r"undeclared label value\(s\) \[5\]"):
        scheme.encode(np.array([0, 5]))


def test_encode_keeps_torch():
    scheme = label_scheme(ACDC)
    out = scheme.encode(torch.tensor([[3, 0]]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.tolist() == [[3, 0]]


def test_decode_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="expected 4 channels"):
        label_scheme(ACDC).decode(torch.zeros(1, 3, 2, 2))


def test_dict_round_trip_and_specs():
    for classes in (ACDC, BRATS, [{"name": "b", "values": [2, 3], "label": 3}]):
        scheme = label_scheme(classes)
        assert LabelScheme.from_dict(scheme.to_dict()) == scheme
    assert label_scheme([ClassSpec("x", (4,))]).painted == (4,)
    assert label_scheme([], foreground=[1]).to_dict() == {"classes": [], "foreground": [1]}


def test_single_declared_class_is_one_channel():
    scheme = label_scheme([{"name": "tumour", "values": [2]}])
    assert scheme.channels == 1 and not scheme.binary
    assert scheme.undeclared(np.array([0, 1, 2])) == {1}
    decoded = scheme.decode(torch.tensor([[[[0.9, 0.1]]]]))
    assert scheme.to_values(decoded).tolist() == [[[2, 0]]]


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ([{"name": "a", "values": [0]}], r"data.classes\[0\].values\[0\]: .*0 is the background"),
        ([{"name": "a", "values": [1.5]}], r"values\[0\]: expected a label value"),
        ([{"name": "a", "values": []}], r"data.classes\[0\].values: expected a non-empty list"),
        ([{"name": "a"}], r"data.classes\[0\]: a class needs a name and values"),
        ([{"name": "a", "values": [1], "colour": 3}], r"unknown key\(s\) colour"),
        ([{"name": "a", "values": [1]}, {"name": "A", "values": [2]}], r"\[1\].name: 'A' is also the name of"),
        ([{"name": "background", "values": [1]}], r"'background' is implicit"),
        ([{"name": "a", "values": [1, 2]}], r"class 'a' would be written as one of its values \[1, 2\]; give label"),
        ([{"name": "a", "values": [1], "label": 2}], r"\[0\].label: 2 is not one of the class's values \[1\]"),
        (
            [{"name": "a", "values": [1, 2, 3]}, {"name": "b", "values": [3]}],
            r"\[0\]: region 'a' would be written as one of values \[1, 2\]",
        ),
        (
            [{"name": "a", "values": [1, 2], "label": 2}, {"name": "b", "values": [2], "label": 2}],
            r"\[1\]: 'b' would be written as 2, as 'a' is",
        ),
        ([{"name": "a", "values": [1, 1]}], r"repeats a value"),
        (
            [
                {"name": "ET", "values": [4], "label": 4},
                {"name": "TC", "values": [1, 4], "label": 1},
                {"name": "WT", "values": [1, 2, 4], "label": 2},
            ],
            r"\[0\]: region 'ET' can never be written: each of its values \[4\] is in a later region, painted over "
            r"it; declare the regions from large to small: WT, TC, ET",
        ),
        (
            [{"name": "RV", "values": [1]}, {"name": "right ventricle", "values": [1]}],
            r"\[1\]: 'right ventricle' has the values \[1\] of 'RV' \(data.classes\[0\]\): two names for one class",
        ),
        ("RV", r"expected a list of classes"),
    ],
)
def test_bad_classes_name_the_bad_value(classes, message):
    with pytest.raises(UserError, match=message):
        label_scheme(classes)


def test_foreground_with_classes_is_an_error():
    with pytest.raises(UserError, match=r"data.foreground .* and data.classes are exclusive"):
        label_scheme(ACDC, foreground=[1])


def test_the_ignore_label_is_no_class():
    classes = [ClassSpec("RV", (1,)), ClassSpec("Myo", (2,)), ClassSpec("LV", (3,))]
    scheme = label_scheme(classes, ignore=4)
    atoms = scheme.encode(torch.tensor([[0, 1, 2, 3, 4]]))
    assert atoms.tolist() == [[0, 1, 2, 3, 4]] and scheme.stored_atoms == 4 and scheme.ignore_atom == 4
    assert scheme.atoms == 3 and scheme.channels == 4 and scheme.undeclared([4]) == set()
    assert scheme.one_hot(atoms)[:, 0, 4].tolist() == [1.0, 0.0, 0.0, 0.0]  # read as background
    assert not scheme.class_masks(atoms)[:, 0, 4].any()
    assert scheme.valid(atoms).tolist() == [[True, True, True, True, False]]
    assert scheme.valid(atoms[:, :4]) is None and label_scheme(classes).valid(atoms) is None
    assert LabelScheme.from_dict(scheme.to_dict()) == scheme
    binary = label_scheme(ignore=2)
    assert binary.encode(np.array([0, 1, 2, 5])).tolist() == [0, 1, 2, 1] and binary.stored_atoms == 2
    assert binary.class_masks(torch.tensor([[0, 1, 2]]))[0, 0].tolist() == [False, True, False]
    with pytest.raises(UserError, match="must be above every label value"):
        label_scheme(classes, ignore=3)
