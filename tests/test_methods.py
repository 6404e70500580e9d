"""``make_draw`` over C classes: every family returns label maps of atoms and per-channel soft maps; binary
draws are today's (``scheme=None``) bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from diffuseg import methods
from diffuseg.diffusion.samplers import sample
from diffuseg.labels import label_scheme
from diffuseg.methods import class_probabilities, latent_sample, make_draw

sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))
from classfamilies import ACDC, BRATS, FAMILIES, SIZE, make_config


def _draw(family: str, classes, members: int = 3):
    torch.manual_seed(0)
    config = make_config(family, classes)
    net = methods.build_network(config).eval()
    draw = make_draw(config, net, methods.build_process(config))
    image = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    gens = [torch.Generator().manual_seed(k) for k in range(2 * members)]
    with torch.inference_mode():
        return config, net, image, draw(image, members, gens)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("classes", [ACDC, BRATS], ids=["exclusive", "regions"])
def test_every_family_draws_label_maps_and_class_soft_maps(family, classes):
    config, _, _, out = _draw(family, classes)
    scheme = label_scheme(classes)
    assert out.soft.shape == (6, scheme.channels, SIZE, SIZE) and out.mask.shape == (6, 1, SIZE, SIZE)
    assert out.mask.dtype == torch.float32
    assert set(out.mask.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    decoded = scheme.decode(out.soft, config.sample.threshold).unsqueeze(1).float()
    # a sampler decodes exclusive classes before it clips x_hat to [-1, 1]: where clipping made channels tie at
    # 1, the mask is not the decoded soft map's lower label
    untied = (out.soft == out.soft.amax(1, keepdim=True)).sum(1, keepdim=True) == 1
    shown = untied if scheme.exclusive else torch.ones_like(untied)
    assert torch.equal(out.mask[shown], decoded[shown])
    assert float(out.soft.min()) >= 0.0 and float(out.soft.max()) <= 1.0
    if scheme.exclusive and config.method != "diffusion":  # one-pass families: a distribution over C
        torch.testing.assert_close(out.soft.sum(1), torch.ones(6, SIZE, SIZE))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_binary_draws_are_todays(family):
    """The binary config draws what the code before classes drew: the sampler without a scheme, sigmoid
    thresholded at ``sample.threshold`` for the one-pass families."""
    config, net, image, out = _draw(family, ())
    gens = [torch.Generator().manual_seed(k) for k in range(6)]
    s = config.sample
    with torch.inference_mode():
        if config.method == "diffusion":
            process = methods.build_process(config)
            old = sample(s.sampler, net, image, process, s.steps, generator=gens, members=3, threshold=s.threshold)
            old_soft, old_mask = old.soft, old.mask
        elif config.method == "deterministic":
            old_soft = torch.sigmoid(net(image).float()).repeat_interleave(3, dim=0)
            old_mask = (old_soft > s.threshold).float()
        else:
            old = latent_sample(net, image, 3, generator=gens, threshold=s.threshold)
            old_soft = torch.sigmoid(net.sample_logits(image, 3, [torch.Generator().manual_seed(k) for k in range(6)]))
            assert torch.equal(old.soft, old_soft)
            old_mask = (old_soft > s.threshold).float()
    assert out.soft.shape == out.mask.shape == (6, 1, SIZE, SIZE)
    assert torch.equal(out.soft, old_soft) and torch.equal(out.mask, old_mask)


def test_class_probabilities_softmax_for_classes_sigmoid_otherwise():
    logits = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(class_probabilities(logits, label_scheme(ACDC)), logits.softmax(1))
    torch.testing.assert_close(class_probabilities(logits[:, :3], label_scheme(BRATS)), logits[:, :3].sigmoid())
    torch.testing.assert_close(class_probabilities(logits[:, :1]), logits[:, :1].sigmoid())


def test_sampling_off_the_training_grid_warns() -> None:
    import warnings

    from diffuseg.config import DiffusionConfig, SampleConfig
    from diffuseg.diffusion.process import DiffusionProcess

    process = DiffusionProcess(DiffusionConfig(train_grid=5, train_grid_spacing="quadratic"))
    with pytest.warns(UserWarning, match="trained only at the 5 times"):
        methods.diffusion_draw(lambda z, t, image: z, process, SampleConfig(steps=10, spacing="quadratic"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        methods.diffusion_draw(lambda z, t, image: z, process, SampleConfig(steps=5, spacing="quadratic"))
        methods.diffusion_draw(lambda z, t, image: z, DiffusionProcess(DiffusionConfig()), SampleConfig(steps=7))


def test_ssn_needs_a_segmenter_backbone() -> None:
    from diffuseg.config import config_from_dict
    from diffuseg.errors import UserError

    config = config_from_dict({"method": "ssn", "model": {"name": "diffusion-unet"}})
    with pytest.raises(UserError, match="cannot be the backbone of method ssn"):
        methods.build_network(config)
    net = methods.build_network(make_config("ssn", ACDC))
    assert net.rank == 10 and net.out_channels == 4  # ssn.rank's default, the paper's


B_TINY = "model.options={base_channels: 4, dynamic_conditioning: true, ff_parser: true}"


def test_an_image_size_too_small_for_one_image_at_a_time_is_refused_naming_the_smallest():
    from diffuseg.errors import UserError
    from diffuseg.presets import load_config

    small = load_config("medsegdiff-b-ddti", ["data.image_size=32", B_TINY])
    state = torch.random.get_rng_state()
    with pytest.raises(UserError, match=r"image_size=32 is too small .* the smallest image size it supports is 64"):
        methods.check_image_size(small)
    assert torch.equal(state, torch.random.get_rng_state())
    methods.check_image_size(load_config("medsegdiff-b-ddti", ["data.image_size=64", B_TINY]))
    methods.check_image_size(load_config("medsegdiff-b-ddti", ["data.image_size=32"]))  # its default widths fit
    net = methods.build_network(small).eval()  # what the check stands for: one image fails, two pass
    x_t, image = torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)
    with torch.no_grad():
        net(x_t, torch.zeros(2), image)
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            net(x_t[:1], torch.zeros(1), image[:1])
