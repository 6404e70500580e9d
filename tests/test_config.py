import pytest
import yaml

from diffuseg.config import (
    Config,
    DataConfig,
    Role,
    config_from_dict,
    config_to_dict,
    role_fields,
    role_of,
    save_config,
)
from diffuseg.enums import PredictionType, SamplerKind
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec
from diffuseg.presets import load_config


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = config_from_dict({"diffusion": {"prediction": "v", "input_scale": 0.1}, "data": {"foreground": [1, 2]}})
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.diffusion.prediction is PredictionType.V
    assert again.data.foreground == (1, 2)


def test_split_fields_from_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {folds: 3}\n")
    cfg = load_config(tmp_path / "c.yaml", ["data.fold=2", r"data.patient_regex=(\d+)_"])
    assert (cfg.data.fold, cfg.data.folds, cfg.data.patient_regex) == (2, 3, r"(\d+)_")
    assert load_config(tmp_path / "c.yaml").data.fold is None  # no folds unless asked


def test_dotted_overrides_are_typed(tmp_path):
    (tmp_path / "c.yaml").write_text("train: {steps: 5}\n")
    cfg = load_config(tmp_path / "c.yaml", ["train.steps=12", "sample.sampler=dpm-solver", "model.options.width=8"])
    assert cfg.train.steps == 12
    assert cfg.sample.sampler is SamplerKind.DPM_SOLVER
    assert cfg.model.options == {"width": 8}


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"diffusion": {"prediction": "score"}}, "diffusion.prediction: 'score' is not one of: eps, x, v"),
        ({"train": {"stepz": 3}}, "unknown key(s) stepz"),
        ({"train": {"steps": "many"}}, "train.steps: expected an integer"),
        ({"train": {"steps": 0}}, "train.steps must be >= 1"),
        ({"sample": {"threshold": 1.5}}, "sample.threshold must be in (0, 1)"),
        ({"data": {"augment": "maybe"}}, "data.augment: expected true or false"),
        ({"sample": {"precision": "fp16"}}, "sample.precision must be 32, bf16 or auto"),
        ({"sample": {"micro_batch": -1}}, "sample.micro_batch must be >= 0"),
        ({"sample": {"channels_last": "sometimes"}}, "sample.channels_last: expected true or false"),
        ({"data": {"fold": -1}}, "data.fold must be >= 0"),
        ({"data": {"folds": 1}}, "data.folds must be >= 2"),
        ({"data": {"patient_regex": "(patient"}}, "data.patient_regex '(patient': not a regular expression"),
        ({"ssn": {"rank": 0}}, "ssn.rank must be >= 1"),
        ({"ssn": {"mc_samples": 5}}, "ssn.mc_samples must be even and >= 2 (antithetic pairs)"),
        ({"ssn": {"mc_samples": 0}}, "ssn.mc_samples must be even and >= 2"),
        ({"ssn": {"epsilon": 0}}, "ssn.epsilon must be > 0"),
        ({"ssn": {"rank": "ten"}}, "ssn.rank: expected an integer"),
        ({"anchored": {"head_patch": 0}}, "anchored.head_{blocks,time_dim,patch} must be >= 1"),
        ({"anchored": {"head_channels": [8]}}, "anchored.head_channels: >= 2 levels, each >= 1"),
    ],
)
def test_bad_values_name_the_key(tmp_path, values, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(UserError) as err:
        load_config(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_override_without_equals_is_rejected():
    with pytest.raises(UserError, match="expected key=value"):
        load_config(None, ["train.steps"])


def test_to_dict_is_plain():
    d = config_to_dict(Config())
    assert d["diffusion"]["prediction"] == "eps"
    yaml.safe_dump(d)  # serialisable without custom representers


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    from diffuseg.cli import main

    code = main(["train", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "config file not found" in err and "Traceback" not in err


# The hand-kept lists the field roles replaced: presets._NOT_THE_RECIPE (None: the whole section) and
# training.run.RESUMABLE (a trailing dot: every field of the section).
OLD_NOT_THE_RECIPE = {
    "data": ("root", "cache_dir", "num_workers", "max_cases", "train_patients", "val_patients"),
    "train": ("steps", "out_dir", "devices", "num_nodes", "accelerator", "log_every", "val_every", "val_cases",
              "ckpt_every"),
    "sample": None,
    "eval": None,
}  # fmt: skip
OLD_RESUMABLE = (
    "train.steps", "train.out_dir", "train.devices", "train.num_nodes", "train.accelerator", "train.log_every",
    "train.val_every", "train.val_cases", "train.ckpt_every", "data.root", "data.cache_dir", "data.num_workers",
    "sample.", "eval.",
)  # fmt: skip


def _leaves(values: dict, prefix: str = "") -> list[str]:
    """The dotted keys of a config dict's values."""
    out: list[str] = []
    for key, value in values.items():
        out += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


# Fields added since, each choosing which cases a run sees.
NEW_CASES = {"data.patient_regex", "data.splits_file", "data.fold", "data.folds"}


def test_field_roles_give_the_lists_they_replaced():
    not_recipe = {
        f"{s}.*" if keys is None else f"{s}.{k}" for s, keys in OLD_NOT_THE_RECIPE.items() for k in keys or [""]
    }
    assert set(role_fields(Role.RUN)) | set(role_fields(Role.CASES)) == not_recipe | NEW_CASES
    assert set(role_fields(Role.CASES)) >= NEW_CASES
    assert set(role_fields(Role.RUN)) == {f"{r}*" if r.endswith(".") else r for r in OLD_RESUMABLE}
    assert not set(role_fields(Role.RUN)) & set(role_fields(Role.CASES))
    resumable = {
        k
        for k in _leaves(config_to_dict(Config()))
        if any(k == r or (r.endswith(".") and k.startswith(r)) for r in OLD_RESUMABLE)
    }
    assert {k for k in _leaves(config_to_dict(Config())) if role_of(k) is Role.RUN} == resumable
    assert role_of("model.options.channels") is Role.RECIPE and role_of("method") is Role.RECIPE
    assert role_of("sample.seed") is Role.RUN and role_of("data.max_cases") is Role.CASES


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
