"""Samplers over C class channels: an exact denoiser for a known per-pixel class distribution.

The synthetic C-class data: every pixel of region r (the left or the right half of the image, which the image
tells) independently takes atom a with the known probability PI[r][a]. Its one-hot (``LabelScheme.one_hot``),
scaled to {-1, 1}, is x0. The noise is independent per pixel and channel, so the posterior factorises over
pixels and the Bayes-optimal denoiser is, per pixel,
    E[x0 | z_t] = sum_a p(a | z_t) v_a,  p(a | z_t) ∝ PI[r][a] exp(-||z_t - alpha_t v_a||^2 / (2 sigma_t^2)),
with v_a = 2 one_hot(a) - 1. With the exact denoiser, ancestral sampling (DDPM) and the probability-flow ODE
(DDIM with eta = 0, DPM-Solver++) both carry N(0, I) to the data distribution, so the decoded label maps must
show the class frequencies PI up to discretisation and counting error.
"""

from __future__ import annotations

import pytest
import torch

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion import parameterization as P
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.samplers import sample
from diffuseg.diffusion.samplers.base import start_noise, to_mask
from diffuseg.enums import PredictionType, SamplerKind, ScheduleKind
from diffuseg.labels import LabelScheme, label_scheme

H = W = 32
ACDC = label_scheme([{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}])
# BraTS regions: WT {1, 2, 4}, TC {1, 4}, ET {4}; atoms 1, 2, 3 are the label values 1, 2, 4.
BRATS = label_scheme(
    [{"name": "WT", "values": [1, 2, 4]}, {"name": "TC", "values": [1, 4]}, {"name": "ET", "values": [4]}]
)
# Atom probabilities of the left and the right half (atom 0 = background).
PI = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)


def region_image(batch: int) -> torch.Tensor:
    """(batch, 1, H, W): 0 on the left half, 1 on the right half."""
    image = torch.zeros(batch, 1, H, W)
    image[..., W // 2 :] = 1.0
    return image


class ExactDenoiser(torch.nn.Module):
    """The posterior mean of x0 under the known per-pixel atom distribution, as the process's prediction type."""

    def __init__(self, process: DiffusionProcess, scheme: LabelScheme, pi: torch.Tensor):
        super().__init__()
        self.process, self.pi = process, pi
        atoms = torch.arange(scheme.atoms + 1)[:, None, None]  # (L + 1, 1, 1)
        self.vertices = (2.0 * scheme.one_hot(atoms)[..., 0, 0] - 1.0).double()  # (L + 1, C)

    def forward(self, z: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        members = z.shape[0] // image.shape[0]
        region = image.repeat_interleave(members, 0)[:, 0].long()  # (N, H, W)
        alpha, sigma = (float(v) for v in self.process.schedule.alpha_sigma(float(t[0])))
        zz = z.double().movedim(1, -1)[..., None, :]  # (N, H, W, 1, C)
        dist2 = (zz - alpha * self.vertices).pow(2).sum(-1)  # (N, H, W, L + 1)
        logits = self.pi[region].log() - dist2 / (2 * sigma**2)
        x0 = (logits.softmax(-1)[..., None] * self.vertices).sum(-2).movedim(-1, 1)  # (N, C, H, W)
        if self.process.prediction == PredictionType.LOGITS:  # logits whose sigmoid / softmax is E[one-hot | z_t]
            p = ((x0 + 1.0) / 2.0).clamp(1e-12, 1.0 - 1e-12)
            return (p.log() if self.process.exclusive else torch.logit(p)).float()
        eps = (z.double() - alpha * x0) / sigma
        return P.target(self.process.prediction, x0, eps, alpha, sigma).float()


def frequencies(atoms: torch.Tensor, count: int) -> torch.Tensor:
    """Atom frequencies of the left and the right half: (2, count)."""
    halves = atoms[..., : W // 2], atoms[..., W // 2 :]
    return torch.stack([torch.bincount(h.long().flatten(), minlength=count).double() / h.numel() for h in halves])


@pytest.mark.parametrize("schedule", list(ScheduleKind))
@pytest.mark.parametrize("prediction", list(PredictionType))
@pytest.mark.parametrize("kind", list(SamplerKind))
def test_exact_denoiser_recovers_the_class_frequencies(kind, prediction, schedule):
    process = DiffusionProcess(DiffusionConfig(schedule=schedule, prediction=prediction), exclusive=True)
    image = region_image(2)
    gens = [torch.Generator().manual_seed(k) for k in range(8)]
    out = sample(kind, ExactDenoiser(process, ACDC, PI), image, process, 25, generator=gens, members=4, scheme=ACDC)
    assert out.soft.shape == (8, 4, H, W) and out.mask.shape == (8, 1, H, W)
    assert out.mask.dtype == torch.float32 and set(out.mask.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    torch.testing.assert_close(out.mask, ACDC.decode(out.soft).unsqueeze(1).float())
    # 4096 pixels per half: the counting error's standard deviation is at most 0.008
    torch.testing.assert_close(frequencies(out.mask, 4), PI, rtol=0, atol=0.035)


@pytest.mark.parametrize("prediction", ["v", "logits"])
@pytest.mark.parametrize("kind", list(SamplerKind))
def test_exact_denoiser_recovers_region_frequencies(kind, prediction):
    """Overlapping regions (3 channels, decoded by per-channel threshold and painting) give the atoms' frequencies."""
    process = DiffusionProcess(DiffusionConfig(schedule=ScheduleKind.CONTINUOUS_COSINE, prediction=prediction))
    gens = [torch.Generator().manual_seed(10 + k) for k in range(8)]
    net = ExactDenoiser(process, BRATS, PI)
    out = sample(kind, net, region_image(2), process, 25, generator=gens, members=4, scheme=BRATS)
    assert out.soft.shape == (8, 3, H, W)
    torch.testing.assert_close(frequencies(out.mask, 4), PI, rtol=0, atol=0.035)


def test_a_point_mass_lands_exactly_on_its_label_map():
    """With one certain class per pixel the sampler lands on that label map (the binary oracle test, C = 4)."""
    truth = torch.arange(H * W).reshape(1, H, W) % 4  # atoms 0..3 in stripes
    pi = torch.nn.functional.one_hot(truth.flatten(), 4).double().clamp_min(1e-12)  # (H*W, 4)
    image = torch.arange(H * W, dtype=torch.float32).reshape(1, 1, H, W)  # the image tells the pixel
    process = DiffusionProcess(DiffusionConfig(schedule=ScheduleKind.LINEAR, prediction="eps"))
    net = ExactDenoiser(process, ACDC, pi)
    out = sample("ddim", net, image, process, 10, generator=torch.Generator().manual_seed(0), members=2, scheme=ACDC)
    torch.testing.assert_close(out.mask, truth.float().expand(2, H, W).unsqueeze(1))
    torch.testing.assert_close(out.soft, ACDC.one_hot(truth).expand(2, 4, H, W), rtol=0, atol=1e-4)


def test_binary_scheme_and_no_scheme_are_the_same_sampler():
    """Binary: ``LabelScheme()`` (no classes) draws what ``scheme=None`` (the binary call) draws, bit for bit."""
    process = DiffusionProcess(DiffusionConfig(schedule=ScheduleKind.LINEAR, prediction="eps"))

    class Net(torch.nn.Module):
        def forward(self, z, t, image):
            return 0.3 * z + image.repeat_interleave(z.shape[0] // image.shape[0], 0)

    image = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    for kind in SamplerKind:
        a = sample(kind, Net(), image, process, 4, generator=torch.Generator().manual_seed(1), members=3)
        b = sample(
            kind, Net(), image, process, 4, generator=torch.Generator().manual_seed(1), members=3, scheme=LabelScheme()
        )
        assert torch.equal(a.mask, b.mask) and torch.equal(a.soft, b.soft)
        assert a.mask.shape == a.soft.shape == (6, 1, 16, 16)


def test_start_noise_has_one_channel_per_class_and_keeps_the_binary_draw():
    image = torch.zeros(2, 3, 8, 8)
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(4)]  # noqa: E731
    binary = start_noise(image, 2, gens())
    assert binary.shape == (4, 1, 8, 8)
    assert torch.equal(binary, torch.stack([torch.randn(1, 8, 8, generator=g) for g in gens()]))
    assert start_noise(image, 2, gens(), channels=4).shape == (4, 4, 8, 8)


def test_to_mask_decodes_by_the_scheme():
    soft = torch.tensor([[0.2, 0.7], [0.5, 0.1], [0.3, 0.2], [0.0, 0.0]]).view(1, 4, 1, 2)
    torch.testing.assert_close(to_mask(soft, 0.5, ACDC), torch.tensor([[[[1.0, 0.0]]]]))
    regions = torch.tensor([[0.9, 0.9], [0.2, 0.8], [0.1, 0.6]]).view(1, 3, 1, 2)  # WT only; WT+TC+ET
    torch.testing.assert_close(to_mask(regions, 0.5, BRATS), torch.tensor([[[[2.0, 3.0]]]]))  # atoms of 2 and 4
    binary = torch.tensor([0.4, 0.5, 0.6]).view(1, 1, 1, 3)
    assert torch.equal(to_mask(binary, 0.5), torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3))


@pytest.mark.parametrize("kind", list(SamplerKind))
def test_exclusive_classes_are_decoded_before_the_estimate_is_clipped(kind):
    """An x-prediction past +1 on two channels (RV 2, Myo 3) clips to a tie at 1; decoded from the clipped
    estimate the lower label would win. The label is Myo's, and ``soft`` is still clipped to [0, 1]."""
    process = DiffusionProcess(DiffusionConfig(schedule=ScheduleKind.LINEAR, prediction="x"))

    class Net(torch.nn.Module):
        def forward(self, z, t, image):
            return torch.tensor([-1.0, 2.0, 3.0, -1.0]).view(1, 4, 1, 1).expand_as(z).clone()

    gen = torch.Generator().manual_seed(0)
    out = sample(kind, Net(), torch.zeros(1, 1, 4, 4), process, 3, generator=gen, scheme=ACDC)
    assert torch.equal(out.mask, torch.full((1, 1, 4, 4), 2.0))  # atom 2 = Myo
    assert out.soft.max() == 1.0 and out.soft.min() == 0.0
