"""The optimiser: AdamW fused into one kernel on a CPU (or CUDA), unfused under a GradScaler, and gradient clipping
that works with either (Lightning's precision plugin refuses to clip for a fused optimiser)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tinydata import TINY_NET

from diffuseg.checkpoint import read_checkpoint
from diffuseg.presets import load_config
from diffuseg.training.module import make_optimizer, module_class
from diffuseg.training.run import train


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3))]


def test_fused_where_torch_has_the_kernel():
    assert make_optimizer(_params(), 1e-3, 0.01, "cpu").defaults["fused"] is True
    assert make_optimizer(_params(), 1e-3, 0.01, torch.device("cpu"), fused=False).defaults["fused"] is None
    assert make_optimizer(_params(), 1e-3, 0.01, "meta").defaults["fused"] is None


def test_fused_and_per_parameter_steps_agree():
    """Same gradients, 3 steps: the fused kernel and torch's per-parameter loop give the same weights."""
    torch.manual_seed(0)
    start = [torch.randn(5, 4), torch.randn(7)]
    grads = [[torch.randn_like(w) for w in start] for _ in range(3)]
    weights = []
    for fused in (True, False):
        params = [torch.nn.Parameter(w.clone()) for w in start]
        opt = make_optimizer(params, 1e-2, 0.01, "cpu", fused=fused)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        weights.append(params)
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scaler", [None, object()])
def test_unfused_only_under_a_gradient_scaler(scaler):
    """A scaler (16-mixed) unscales the gradients before they are clipped only for an unfused optimiser."""
    module = module_class("diffusion")(load_config("lidc-central", ["data.image_size=16", TINY_NET]))
    module.trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
    assert module.configure_optimizers()["optimizer"].defaults["fused"] is (True if scaler is None else None)


def test_a_family_clips_its_whole_network_to_the_norm():
    config = load_config("lidc-central", ["data.image_size=16", TINY_NET])
    module = module_class(config.method)(config)
    for p in module.net.parameters():
        p.grad = torch.full_like(p, 3.0)
    module.configure_gradient_clipping(None, 1.0)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.net.parameters()]))
    assert float(norm) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_with_clipping_runs_the_fused_optimiser(tiny_config, precision):
    """bf16-mixed with train.grad_clip > 0 used to stop in Lightning's plugin once the optimiser was fused."""
    run = train(tiny_config(f"train.precision={precision}", "train.grad_clip=1.0", steps=2, ckpt_every=2))
    state = read_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 2
    assert [g["fused"] for g in state["optimizer_states"][0]["param_groups"]] == [True]
