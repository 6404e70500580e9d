"""Training anchored diffusion: the trunk trains exactly as the UNet baseline, the head's loss, per-part gradient
clipping, bit-identical resume, sampled validation, and predicting through the CLI for one class and three."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_run_resume import Crash, _assert_same_weights, _crash_after
from tinydata import tiny_overrides

from diffuseg.checkpoint import read_checkpoint
from diffuseg.cli import main
from diffuseg.data.formats import open_dataset
from diffuseg.diffusion.anchored import AnchoredDenoiser
from diffuseg.methods import load_for_inference
from diffuseg.nets.unet import segmentation_loss
from diffuseg.presets import load_config
from diffuseg.training.anchored_loss import PROBABILITY_FLOOR, estimate_logits, weighted_segmentation_loss
from diffuseg.training.module import AnchoredModule, module_class
from diffuseg.training.run import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ssl4mis

UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
HEAD = ["anchored.head_channels=[8, 16]", "anchored.head_time_dim=16", "sample.samples=2", "sample.batch_size=2"]


def overrides(data: Path, out: Path, steps: int = 6, ckpt_every: int = 3) -> list[str]:
    """The training fixtures' tiny run with the trunk a tiny UNet and a tiny head."""
    return [*tiny_overrides(data, out, steps, ckpt_every), UNET, *HEAD]


def anchored(data: Path, out: Path, *extra: str, steps: int = 6):
    return load_config("anchored-lidc", [*overrides(data, out, steps), *extra])


def test_the_trunk_trains_exactly_as_the_unet_baseline(tiny_data, tmp_path):
    """Same seed and data: after 4 steps the anchored trunk's raw and EMA weights are the UNet baseline's, bit for
    bit (stop-gradient, the UNet's loss, one AdamW over both parts, and clipping per part: with one clip over both,
    as Lightning's, the trunk's update would shrink with the head's gradients)."""
    unet = train(load_config("unet-lidc", overrides(tiny_data, tmp_path / "unet", 4)))
    ours = train(anchored(tiny_data, tmp_path / "anchored", steps=4))
    base = read_checkpoint(unet / "checkpoints" / "last.ckpt")["state_dict"]
    state = read_checkpoint(ours / "checkpoints" / "last.ckpt")["state_dict"]
    for part in ("net", "ema"):
        trunk = {k.removeprefix(f"{part}.trunk."): v for k, v in state.items() if k.startswith(f"{part}.trunk.")}
        mine = {k.removeprefix(f"{part}."): v for k, v in base.items() if k.startswith(f"{part}.")}
        assert trunk.keys() == mine.keys()
        assert [k for k in trunk if not torch.equal(trunk[k], mine[k])] == []


def test_gradients_are_clipped_per_part():
    config = load_config("anchored-lidc", ["data.image_size=16", UNET, *HEAD])
    module = module_class(config.method)(config)
    assert isinstance(module, AnchoredModule)
    for p in module.net.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(None, 1.0)
    for part in (module.net.trunk, module.net.head):
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in part.parameters()]))
        assert float(norm) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("exclusive", [True, False])
def test_estimate_logits_give_back_the_clipped_probabilities(exclusive):
    estimate = torch.tensor([-1.5, -1.0, -0.2, 0.4, 1.0, 1.3]).view(1, 1, 2, 3).repeat(1, 3, 1, 1)
    p = ((estimate + 1) / 2).clamp(PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    logits = estimate_logits(estimate, exclusive)
    if exclusive:
        torch.testing.assert_close(torch.softmax(logits, 1), p / p.sum(1, keepdim=True))
    else:
        torch.testing.assert_close(torch.sigmoid(logits), p)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("form", ["residual", "mean_shift"])
def test_the_loss_is_the_trunks_plus_the_heads_and_the_heads_never_reaches_the_trunk(form):
    config = load_config("anchored-acdc", ["data.image_size=16", UNET, *HEAD, f"anchored.form={form}"])
    torch.manual_seed(0)
    module = module_class(config.method)(config)
    image = torch.randn(2, 1, 16, 16)
    target = module.scheme.one_hot(torch.randint(0, 4, (2, 16, 16)).float())
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    loss = module.loss(image, target, torch.Generator().manual_seed(0))
    parts = logged["trunk"] + logged["diffusion"] + logged["head_segmentation"]
    assert float(loss.detach()) == pytest.approx(parts, rel=1e-5)
    loss.backward()
    trunk_grads = {n: p.grad.clone() for n, p in module.net.trunk.named_parameters()}
    module.zero_grad()
    segmentation_loss(module.net.trunk(image), target, True).backward()
    assert all(torch.equal(trunk_grads[n], p.grad) for n, p in module.net.trunk.named_parameters())


@pytest.mark.parametrize("kind", ["binary", "exclusive", "regions"])
def test_the_weighted_segmentation_loss_with_unit_weights_is_the_batch_loss(kind):
    torch.manual_seed(1)
    channels, exclusive = {"binary": (1, True), "exclusive": (4, True), "regions": (3, False)}[kind]
    logits = torch.randn(3, channels, 8, 8)
    target = (torch.rand(3, channels, 8, 8) > 0.5).float()
    if kind == "exclusive":
        target = torch.nn.functional.one_hot(torch.randint(0, 4, (3, 8, 8)), 4).permute(0, 3, 1, 2).float()
    batch = segmentation_loss(logits, target, exclusive)
    torch.testing.assert_close(weighted_segmentation_loss(logits, target, exclusive, torch.ones(3)), batch)
    first = segmentation_loss(logits[:1], target[:1], exclusive)
    torch.testing.assert_close(weighted_segmentation_loss(logits, target, exclusive, torch.tensor([3.0, 0, 0])), first)


def test_signal_weighting_weights_each_rows_head_loss_by_alpha_squared(monkeypatch):
    """seg_weighting=signal: the head's segmentation term is the rows' losses times alpha_t^2 of their drawn t."""
    config = load_config("anchored-lidc", ["data.image_size=16", UNET, *HEAD, "anchored.seg_weighting=signal"])
    torch.manual_seed(0)
    module = module_class(config.method)(config)
    image, target = torch.randn(4, 1, 16, 16), (torch.rand(4, 1, 16, 16) > 0.5).float()
    seen = {}
    real = AnchoredDenoiser.__call__

    def spy(self, w, t, image):
        seen["t"] = t.clone()
        out = real(self, w, t, image)
        seen["estimate"] = self.estimate.detach()
        return out

    monkeypatch.setattr(AnchoredDenoiser, "__call__", spy)
    logged = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))
    module.loss(image, target, torch.Generator().manual_seed(0))
    alpha, _ = module.process.schedule.alpha_sigma(seen["t"].double())
    rows = [segmentation_loss(estimate_logits(e[None], True), y[None], True) for e, y in zip(seen["estimate"], target)]
    want = float((alpha.float() ** 2 * torch.stack(rows)).mean())
    assert logged["head_segmentation"] == pytest.approx(want, rel=1e-5)
    assert want < float(torch.stack(rows).mean())  # alpha_t^2 < 1: weighted, not the plain loss


@pytest.mark.parametrize(("mu_input", "channels"), [(True, 1 + 1), (False, 1)])
def test_a_head_that_sees_less_trains_and_loads_for_prediction(tiny_data, tmp_path, mu_input, channels):
    extra = ("anchored.trunk_features=false", f"anchored.mu_input={str(mu_input).lower()}")
    run = train(anchored(tiny_data, tmp_path / "run", *extra, steps=2))
    config, net, _ = load_for_inference(run / "checkpoints" / "last.ckpt")
    assert not config.anchored.trunk_features and not net.trunk_features
    assert config.anchored.mu_input is mu_input and net.mu_input is mu_input
    image = torch.randn(1, 1, 16, 16)
    features, logits = net.prior(image)
    assert net.condition(image, features, torch.tanh(logits)).shape[1] == channels  # the image (and mu)


def test_a_patched_head_trains_and_loads_for_prediction(tiny_data, tmp_path):
    run = train(anchored(tiny_data, tmp_path / "run", "anchored.head_patch=2", steps=2))
    config, net, _ = load_for_inference(run / "checkpoints" / "last.ckpt")
    assert config.anchored.head_patch == 2 and net.patch == 2
    assert net.downsampling == max(net.trunk.downsampling, 2 * net.head.downsampling)  # powers of 2: their lcm
    image = torch.randn(1, 1, 16, 16)
    features, logits = net.prior(image)
    condition = net.condition(image, features, torch.tanh(logits))
    assert net.denoise(torch.randn(3, 1, 16, 16), torch.full((3,), 0.5), condition).shape == (3, 1, 16, 16)


def test_resume_after_crash_equals_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    extra = ("anchored.form=mean_shift", "diffusion.self_condition=true", "diffusion.recycle=true")
    full = train(anchored(tiny_data, tmp_path / "full", *extra))
    with monkeypatch.context() as m:
        _crash_after(3, m)
        with pytest.raises(Crash):
            train(anchored(tiny_data, tmp_path / "resumed", *extra))
    resumed = train(anchored(tiny_data, tmp_path / "resumed", *extra), resume=True)
    a, b = full / "checkpoints" / "last.ckpt", resumed / "checkpoints" / "last.ckpt"
    assert read_checkpoint(b)["global_step"] == 6
    _assert_same_weights(a, b)
    opt_a, opt_b = (read_checkpoint(p)["optimizer_states"][0]["state"] for p in (a, b))
    assert all(torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"]) for i in opt_a)


@pytest.mark.slow
def test_train_binary_with_sampled_validation_then_predict_through_the_cli(tiny_data, tmp_path):
    run = tmp_path / "run"
    extra = ["train.val_every=2", "train.val_cases=2", "train.steps=4", "train.ckpt_every=2"]
    args = ["train", "anchored-lidc", *overrides(tiny_data, run), *extra]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    metrics = next((run / "logs").glob("version_*/metrics.csv")).read_text()
    assert all(name in metrics for name in ("trunk", "diffusion", "head_segmentation", "val/dice"))
    out = tmp_path / "pred"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["predict", str(ckpt), str(tiny_data), str(out), "--samples", "3", "--save-samples"]) == 0
    reader = open_dataset(tiny_data)
    for case in (reader[i] for i in range(len(reader))):
        mask = np.asarray(Image.open(out / f"{case.case_id}.png"))
        assert mask.shape == case.geometry.size and set(np.unique(mask)) <= {0, 255}
        assert (out / f"{case.case_id}_uncertainty.png").is_file()
    assert len(list((out / "samples").rglob("*.png"))) == 3 * len(reader)
    assert main(["predict", str(ckpt), str(tiny_data), str(tmp_path / "mean"), "--fusion", "mean"]) == 0


@pytest.mark.slow
def test_train_three_classes_then_predict_through_the_cli(tmp_path):
    import h5py

    data = ssl4mis(tmp_path / "acdc")
    run = tmp_path / "run"
    args = [
        "train",
        "anchored-acdc",
        "data.image_size=16",
        UNET,
        *HEAD,
        "train.batch_size=2",
        "train.val_every=0",
        "train.ckpt_every=2",
        "sample.steps=2",
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "2",
    ]
    assert main(args) == 0
    out = tmp_path / "pred"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert main(["predict", str(ckpt), str(data), str(out), "--split", "val", "--samples", "3"]) == 0
    with h5py.File(out / "patient003_frame01.h5", "r") as f:
        label = np.asarray(f["label"][()])
    assert label.shape == (3, 16, 16) and set(np.unique(label)) <= {0, 1, 2, 3}


@pytest.mark.slow
def test_two_process_ddp_training_and_prediction(tiny_data, tmp_path):
    """``--devices 2`` (CPU processes, gloo) trains and predicts with no change; the two-process prediction
    writes the files of the one-process one (members are seeded by case and member)."""
    run = tmp_path / "ddp"
    cli = [sys.executable, "-m", "diffuseg.cli"]
    train_args = ["train", "anchored-lidc", *overrides(tiny_data, run, steps=2, ckpt_every=2), "train.batch_size=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*cli, *train_args, "train.accelerator=cpu", "--devices", "2"],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    ckpt = run / "checkpoints" / "last.ckpt"
    assert read_checkpoint(ckpt)["diffuseg"]["sampler_position"] == 2 * 2 * 2
    outs = {n: tmp_path / f"pred{n}" for n in (1, 2)}
    for n, out in outs.items():
        predict = ["predict", str(ckpt), str(tiny_data), str(out), "--samples", "3", "--devices", str(n)]
        subprocess.run([*cli, *predict], check=True, capture_output=True, env=env, timeout=300)
    masks = sorted(p.name for p in outs[1].glob("*.png"))
    assert masks and masks == sorted(p.name for p in outs[2].glob("*.png"))
    assert all((outs[1] / m).read_bytes() == (outs[2] / m).read_bytes() for m in masks)
