"""The ``classes`` layout (BUSI-like class folders): categories kept, lesion masks joined."""

from __future__ import annotations

from datafixtures import busi, disc

from diffuseg.data.formats import open_dataset


def test_class_folders_are_detected_and_kept(tmp_path):
    reader = open_dataset(busi(tmp_path))
    assert reader.layout == "classes" and len(reader) == 5 and not reader.problems
    by_id = {e.case_id: e for e in reader.entries}
    assert set(by_id) == {"benign (1)", "benign (2)", "malignant_benign (2)", "malignant (1)", "normal (1)"}
    assert by_id["normal (1)"].category == "normal"
    case = reader[reader.entries.index(by_id["malignant (1)"])]
    assert case.geometry.category == "malignant"


def test_lesion_masks_of_one_image_are_joined(tmp_path):
    reader = open_dataset(busi(tmp_path))
    i = [e.case_id for e in reader.entries].index("benign (1)")
    case = reader[i]
    assert case.masks.shape == (1, 20, 20)  # one annotator: the union, not two raters
    assert int(case.masks.sum()) == 32 and case.masks[0, 3, 3] == 1 and case.masks[0, 13, 13] == 1


def test_one_class_folder_is_read_as_that_class_with_the_same_ids(tmp_path):
    """Pointed at benign/ (whose numbered masks look like multi's raters), the lesions are still joined."""
    root = busi(tmp_path)
    whole = {e.case_id: e for e in open_dataset(root).entries}
    one = open_dataset(root / "benign")
    assert one.layout == "classes" and not one.problems
    assert {e.case_id for e in one.entries} == {"benign (1)", "benign (2)"}
    for e in one.entries:
        assert e.category == "benign" and e.masks == whole[e.case_id].masks  # one mask: the union of lesions
    malignant = open_dataset(root / "malignant")
    assert {e.case_id for e in malignant.entries} == {"malignant (1)", "malignant_benign (2)"}


def test_ids_that_differ_only_by_case_are_a_problem_naming_both(tmp_path):
    from datafixtures import png

    root = busi(tmp_path)
    png(root / "benign" / "BENIGN (1).png", disc(20, 2))
    png(root / "benign" / "BENIGN (1)_mask.png", disc(20, 2))
    problems = open_dataset(root).problems
    assert len(problems) == 1 and "benign (1).png" in problems[0].lower() and "same case id" in problems[0]
