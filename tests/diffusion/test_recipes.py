"""The training recipes beyond the papers on hand-checkable cases: auxiliary loss, self-conditioning, recycling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as param
from diffuseg.diffusion import recipes
from diffuseg.diffusion.process import DiffusionProcess, masks_to_x0
from diffuseg.diffusion.samplers import ddim, ddpm
from diffuseg.enums import PredictionType, ScheduleKind


def _masks(seed: int = 0) -> torch.Tensor:
    return (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


class Recorder(nn.Module):
    """Returns a fixed x-prediction and records every x_t input it was called with."""

    def __init__(self, out: float = 0.25):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.out = out
        self.inputs: list[torch.Tensor] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x_t, t, image):
        self.inputs.append(x_t.detach().clone())
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.scale * torch.full_like(x_t[:, :1], self.out)


# --------------------------------------------------------------------------------------------- auxiliary loss
def test_aux_loss_is_zero_for_a_perfect_estimate_and_hand_checked_otherwise():
    x0 = masks_to_x0(_masks())
    assert recipes.aux_loss(x0, x0, torch.ones(3)) == 0.0
    # every pixel of a 1-pixel row at p = 0.5 against y = 1: Dice loss 1 - (2 * 0.5 + 1) / (0.5 + 1 + 1) = 0.2,
    # BCE -log 0.5
    x_hat, target = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    expected = 0.2 + torch.log(torch.tensor(2.0))
    assert torch.allclose(recipes.aux_loss(x_hat, target, torch.ones(1)), expected)
    assert torch.allclose(recipes.aux_loss(x_hat, target, torch.full((1,), 0.5)), 0.5 * expected)


def test_aux_weight_adds_the_weighted_aux_loss_to_the_diffusion_loss():
    net = Recorder()
    masks, image = _masks(), torch.zeros(3, 1, 8, 8)
    cfg = DiffusionConfig(prediction=PredictionType.X)
    base = DiffusionProcess(cfg).loss(net, masks, image, torch.Generator().manual_seed(3))
    with_aux = DiffusionProcess(dataclasses.replace(cfg, aux_weight=2.0)).loss(
        net, masks, image, torch.Generator().manual_seed(3)
    )
    process = DiffusionProcess(cfg)
    gen = torch.Generator().manual_seed(3)  # the same draws as the loss makes: times first
    from diffuseg.diffusion.weighting import sample_uniform_times

    t = process.schedule.quantize(sample_uniform_times(3, gen, cfg.time_sampler))
    weight = torch.sigmoid(process.schedule.logsnr(t))
    aux = recipes.aux_loss(torch.full((3, 1, 8, 8), 0.25), masks_to_x0(masks), weight)
    assert torch.allclose(with_aux, base + 2.0 * aux)


def _cuda_autocast_policy(monkeypatch) -> None:
    """CPU stand-in for CUDA autocast's op policy: ``binary_cross_entropy`` on probabilities refuses to run while
    autocast is on (CPU autocast lets it run, so the refusal is not seen on CPU otherwise)."""
    import torch.nn.functional as F

    real = F.binary_cross_entropy

    def refuse(*args, **kwargs):
        if torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled("cuda"):
            raise RuntimeError("torch.nn.functional.binary_cross_entropy is unsafe to autocast")
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "binary_cross_entropy", refuse)


@pytest.mark.parametrize("prediction", [PredictionType.EPS, PredictionType.X, PredictionType.V, PredictionType.LOGITS])
def test_every_loss_runs_under_autocast_with_the_cuda_op_policy(prediction, monkeypatch):
    _cuda_autocast_policy(monkeypatch)
    net, masks, image = Recorder(), _masks(), torch.zeros(3, 1, 8, 8)
    cfg = DiffusionConfig(prediction=prediction, aux_weight=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = DiffusionProcess(cfg).loss(net, masks, image, torch.Generator().manual_seed(3))
    loss.backward()
    assert torch.isfinite(loss) and net.scale.grad is not None
    plain = DiffusionProcess(cfg).loss(net, masks, image, torch.Generator().manual_seed(3))
    assert torch.allclose(loss.float(), plain, rtol=2e-2)  # the auxiliary term ran in float32


def test_aux_weight_must_not_be_negative():
    from diffuseg.errors import UserError
    from diffuseg.presets import load_config

    with pytest.raises(UserError, match="aux_weight"):
        load_config("medsegdiff-b-ddti", ["diffusion.aux_weight=-1"])


# --------------------------------------------------------------------------------------------- self-conditioning
def _self_cond_loss_calls(seed: int) -> Recorder:
    net = Recorder()
    process = DiffusionProcess(DiffusionConfig(prediction=PredictionType.X, self_condition=True))
    process.loss(net, _masks(), torch.zeros(3, 1, 8, 8), torch.Generator().manual_seed(seed))
    return net


def test_self_conditioning_first_pass_sees_zeros_without_gradient_then_its_own_estimate():
    kinds = set()
    for seed in range(12):  # one coin per batch: both branches occur over these seeds
        net = _self_cond_loss_calls(seed)
        assert all(x.shape[1] == 2 for x in net.inputs)
        if len(net.inputs) == 1:  # no first pass: a zero estimate, with gradient
            assert net.inputs[0][:, 1].eq(0).all() and net.grad_enabled == [True]
            kinds.add("zero")
        else:
            first, second = net.inputs
            assert first[:, 1].eq(0).all() and net.grad_enabled == [False, True]
            assert torch.equal(first[:, 0], second[:, 0])  # the same z_t
            assert second[:, 1].eq(0.25).all()  # the first pass's x-prediction (clipped; 0.25 is inside)
            kinds.add("estimate")
    assert kinds == {"zero", "estimate"}


def test_self_conditioning_estimate_is_detached():
    z = torch.randn(2, 1, 4, 4, requires_grad=True)
    w = torch.tensor(2.0, requires_grad=True)
    for seed in range(8):
        est = recipes.self_condition_estimate(lambda zin: w * zin[:, :1], z, torch.Generator().manual_seed(seed))
        if est is not None:
            assert not est.requires_grad
            return
    pytest.fail("no seed drew the first pass")


@pytest.mark.parametrize("sampler", [ddpm, ddim])
def test_samplers_feed_the_previous_estimate_to_a_self_conditioned_network(sampler):
    net = Recorder(out=0.5)
    process = DiffusionProcess(DiffusionConfig(prediction=PredictionType.X, self_condition=True))
    sampler.sample(net, torch.zeros(2, 1, 8, 8), process, 4, generator=torch.Generator().manual_seed(0), members=3)
    assert len(net.inputs) == 4 and all(x.shape == (6, 2, 8, 8) for x in net.inputs)
    assert net.inputs[0][:, 1].eq(0).all()
    assert all(x[:, 1].eq(0.5).all() for x in net.inputs[1:])


def test_without_self_conditioning_the_network_sees_one_channel():
    net = Recorder()
    process = DiffusionProcess(DiffusionConfig(prediction=PredictionType.X))
    ddpm.sample(net, torch.zeros(1, 1, 8, 8), process, 3, generator=torch.Generator().manual_seed(0))
    assert all(x.shape[1] == 1 for x in net.inputs)


# --------------------------------------------------------------------------------------------- recycling
@pytest.mark.parametrize("prediction", [p for p in PredictionType if p != PredictionType.LOGITS])
def test_recycling_noises_the_models_own_estimate_and_targets_the_ground_truth(prediction):
    """Net returning a constant x-estimate c: the first pass (at t = 1, no gradient) gives x_hat = c, the second
    input is alpha_t c + sigma_t eps; the loss is the x-space error against the true x0 at that t."""
    c = 0.25

    class ConstantX(Recorder):
        def forward(self, x_t, t, image):
            self.inputs.append(x_t.detach().clone())
            self.grad_enabled.append(torch.is_grad_enabled())
            self.times = [*getattr(self, "times", []), t.clone()]
            alpha, sigma = (v.view(-1, 1, 1, 1).float() for v in process.schedule.alpha_sigma(t.double()))
            x_hat = torch.full_like(x_t, c) * self.scale
            eps = (x_t - alpha * x_hat) / sigma
            return {"x": x_hat, "eps": eps, "v": alpha * eps - sigma * x_hat}[str(prediction)]

    cfg = DiffusionConfig(schedule=ScheduleKind.CONTINUOUS_COSINE, prediction=prediction, recycle=True)
    process = DiffusionProcess(cfg)
    net = ConstantX()
    masks = _masks()
    loss = process.loss(net, masks, torch.zeros(3, 1, 8, 8), torch.Generator().manual_seed(5))
    assert net.grad_enabled == [False, True]
    assert torch.equal(net.times[0], torch.ones(3))
    t = net.times[1].double()
    alpha, sigma = (v.view(-1, 1, 1, 1).float() for v in process.schedule.alpha_sigma(t))
    eps = (net.inputs[1] - alpha * c) / sigma  # the second input is alpha c + sigma eps for some eps
    assert eps.std() > 0.5  # fresh Gaussian noise, not a copy of the estimate
    # the loss: w(lambda) * data-space factor * mean (x0 - c)^2, i.e. the x-space error against the truth
    x0 = masks_to_x0(masks)
    from diffuseg.diffusion.weighting import log_data_space_factor, log_weight

    lam = process.schedule.logsnr(t)
    factor = (log_weight(cfg.weighting, lam, cfg.sigmoid_bias) + log_data_space_factor(prediction, lam)).exp()
    x_err = (x0 - c).pow(2).flatten(1).mean(1)
    tgt_err = (
        x_err * {"x": 1.0, "eps": (alpha / sigma).flatten() ** 2, "v": 1.0 / sigma.flatten() ** 2}[str(prediction)]
    )
    assert torch.allclose(loss, (factor.float() * tgt_err).mean(), rtol=1e-4)


def test_implied_noise_round_trip():
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    alpha, sigma = torch.tensor(0.6), torch.tensor(0.8)
    z = alpha * x0 + sigma * eps
    assert torch.allclose(recipes.implied_noise(z, x0, alpha, sigma), eps, atol=1e-6)
    assert torch.allclose(param.to_x0(PredictionType.EPS, eps, z, alpha, sigma), x0, atol=1e-5)


# --------------------------------------------------------------------------------------------- aligned training
def test_recycling_from_noise_starts_its_first_pass_at_pure_noise_without_gradient():
    """The first pass's input does not depend on the mask (pure noise at t = 1, as the sampler starts), runs
    without gradient, and is the generator's first normal draw after the times."""
    cfg = DiffusionConfig(schedule=ScheduleKind.CONTINUOUS_COSINE, prediction=PredictionType.X, recycle=True,
                          recycle_from="noise")  # fmt: skip
    process = DiffusionProcess(cfg)
    seen = []
    for masks in (_masks(0), 1.0 - _masks(0)):
        net = Recorder()
        process.loss(net, masks, torch.zeros(3, 1, 8, 8), torch.Generator().manual_seed(4))
        assert net.grad_enabled == [False, True]
        seen.append(net.inputs[0])
    assert torch.equal(seen[0], seen[1])  # the truth does not reach the first pass
    gen = torch.Generator().manual_seed(4)
    process.train_times(3, gen)
    torch.randn((3, 1, 8, 8), generator=gen)  # the noise of the second input is drawn first
    assert torch.equal(seen[0], torch.randn((3, 1, 8, 8), generator=gen))


def test_recycling_from_the_truth_lets_the_first_pass_see_the_truth():
    cfg = DiffusionConfig(schedule=ScheduleKind.LINEAR, timesteps=10, prediction=PredictionType.X, recycle=True)
    inputs = []
    for masks in (_masks(0), 1.0 - _masks(0)):
        net = Recorder()
        DiffusionProcess(cfg).loss(net, masks, torch.zeros(3, 1, 8, 8), torch.Generator().manual_seed(4))
        inputs.append(net.inputs[0])
    assert not torch.equal(inputs[0], inputs[1])


@pytest.mark.parametrize("schedule", [ScheduleKind.LINEAR, ScheduleKind.CONTINUOUS_COSINE])
@pytest.mark.parametrize("recycle", [False, True])
def test_training_on_the_grid_draws_only_the_samplers_times(schedule, recycle):
    cfg = DiffusionConfig(schedule=schedule, timesteps=1000, train_grid=5, train_grid_spacing="quadratic",
                          recycle=recycle, recycle_from="noise", prediction=PredictionType.X)  # fmt: skip
    process = DiffusionProcess(cfg)
    grid = process.schedule.sampling_times(5, "quadratic")[:-1]
    expected = set(grid[1:] if recycle else grid)  # recycling from noise leaves out the top step
    drawn = process.train_times(4000, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == expected
    counts = torch.bincount(torch.tensor([sorted(expected).index(t) for t in drawn.tolist()]))
    assert counts.min() > 4000 / len(expected) * 0.85  # each about equally often


def test_recycling_from_noise_never_trains_the_top_discrete_step():
    cfg = DiffusionConfig(schedule=ScheduleKind.LINEAR, timesteps=4, recycle=True, recycle_from="noise")
    drawn = DiffusionProcess(cfg).train_times(4000, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0.25, 0.5, 0.75}  # steps 1..3 of 4, never t = 1
    plain = DiffusionProcess(dataclasses.replace(cfg, recycle=False)).train_times(4000, torch.Generator())
    assert set(plain.tolist()) == {0.25, 0.5, 0.75, 1.0}


@pytest.mark.parametrize("exclusive", [False, True])
def test_logits_train_with_the_unets_dice_and_cross_entropy(exclusive):
    from diffuseg.nets.unet import segmentation_loss

    channels = 3 if exclusive else 1
    target = torch.nn.functional.one_hot(torch.randint(channels, (2, 8, 8), generator=torch.Generator()), channels)
    target = target.movedim(-1, 1).float()

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Parameter(torch.randn(2, channels, 8, 8, generator=torch.Generator().manual_seed(1)))

        def forward(self, x_t, t, image):
            return self.out

    net = Logits()
    cfg = DiffusionConfig(prediction=PredictionType.LOGITS, weighting="uniform")
    loss = DiffusionProcess(cfg, exclusive=exclusive).loss(net, target, torch.zeros(2, 1, 8, 8), torch.Generator())
    torch.testing.assert_close(loss, segmentation_loss(net.out, target, exclusive))
    loss.backward()
    assert net.out.grad is not None and net.out.grad.abs().sum() > 0


def test_logits_need_the_uniform_weighting():
    from diffuseg.errors import UserError
    from diffuseg.presets import load_config

    with pytest.raises(UserError, match="weighting=uniform"):
        load_config("medsegdiff-b-ddti", ["diffusion.prediction=logits"])
    assert load_config("medsegdiff-b-ddti", ["diffusion.prediction=logits", "diffusion.weighting=uniform"])
