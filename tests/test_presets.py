"""``diffuseg.presets``: descriptions from the YAML headers and which preset a run's config is."""

from __future__ import annotations

from diffuseg.presets import describe, load_config, matching_presets, preset_files, recipe, short


def test_description_is_the_first_clause_of_the_header(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("# MedSegDiff-B on DDTI (paired PNG/GIF; split by patient); more after.\n# next line\nmodel: {}\n")
    assert describe(path) == "MedSegDiff-B on DDTI (paired PNG/GIF; split by patient)"
    path.write_text("# Table 4 of the paper: the model of\n# lidc-central.yaml on another UNet.\n")
    assert describe(path) == "Table 4 of the paper"  # the line runs on: cut at its last colon
    path.write_text("model: {}\n")
    assert describe(path) == ""
    assert short("The ambiguity paper's Table 3 (a b c) ablation", ("The ambiguity paper's ",)) == "Table 3 ablation"


def test_every_bundled_preset_has_a_description():
    assert all(describe(path) for path in preset_files().values())


def test_a_run_config_is_recognised_as_its_preset():
    run = load_config("lidc-central", ["train.steps=1000", "data.root=/elsewhere", "sample.steps=3", "train.out_dir=r"])
    assert matching_presets(run) == ["lidc-central"]
    assert matching_presets(load_config("lidc-central", ["train.lr=0.5"])) == []
    assert matching_presets(load_config("medsegdiff-b-ddti")) == ["ablation-ffparser-ddti", "medsegdiff-b-ddti"]


def test_the_recipe_leaves_out_run_control_and_the_cases():
    values = recipe(load_config("lidc-central"))
    assert "sample" not in values and "eval" not in values
    cases_and_run = {"root", "cache_dir", "num_workers", "max_cases", "train_patients", "val_patients"}
    assert not cases_and_run & set(values["data"]) and {"layout", "image_size"} <= set(values["data"])
    assert "steps" not in values["train"] and "out_dir" not in values["train"] and "lr" in values["train"]


def test_shorter_run_scales_the_preset_schedule(capsys):
    """--steps below the preset's warm-up + decay keeps the schedule's shape instead of a learning rate near 0."""
    from diffuseg.training.module import lr_factor

    base = load_config("unet-ddti")
    short = load_config("unet-ddti", ["train.steps=600"])
    t, b = short.train, base.train
    assert t.warmup_steps == round(b.warmup_steps * 600 / b.steps)
    assert t.decay_steps == round(b.decay_steps * 600 / b.steps)
    assert "note:" in capsys.readouterr().err
    assert lr_factor(t.warmup_steps, t.warmup_steps, t.decay_steps, t.steps) == 1.0  # full rate after warm-up
    assert load_config("unet-ddti", ["train.steps=600", "train.decay_steps=0"]).train.decay_steps == 0  # chosen
    assert load_config("unet-ddti", [f"train.steps={b.steps // 2}"]).train.decay_steps == b.decay_steps  # fits
