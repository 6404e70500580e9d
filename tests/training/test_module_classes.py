"""Training over C classes: one step of every family on a tiny 3-class batch; checkpoints rebuild their network."""

from __future__ import annotations

import warnings

import pytest
import torch
from classfamilies import ACDC, BRATS, FAMILIES, SIZE, UNET, make_config, tiny_batch

from diffuseg import methods
from diffuseg.config import config_from_dict, config_to_dict
from diffuseg.errors import UserError
from diffuseg.methods import make_draw
from diffuseg.training.module import module_class


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("classes", [ACDC, BRATS], ids=["exclusive", "regions"])
def test_one_training_step_of_every_family_gives_a_finite_loss_and_gradients(family, classes):
    torch.manual_seed(0)
    config = make_config(family, classes)
    module = module_class(config.method)(config)
    assert module.scheme.channels == (4 if classes is ACDC else 3)
    batch = tiny_batch()
    target = module.scheme.one_hot(batch["mask"][:, 0])
    assert target.shape == (2, module.scheme.channels, SIZE, SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LatentModule logs its terms; there is no trainer here
        loss = module.loss(batch["image"], target, torch.Generator().manual_seed(1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("family", ["medsegdiff", "diffusion-unet", "probunet-unet"])
def test_diffusion_recipes_run_over_classes(family):
    """Self-conditioning (x_t input of 2C channels), the auxiliary loss and recycling with C = 4: a finite loss,
    gradients, and a sampler that draws label maps from the 2C-channel network."""
    torch.manual_seed(0)
    config = make_config(family, ACDC, self_condition=True, aux_weight=0.5, recycle=True)
    module = module_class(config.method)(config)
    prediction = module.net(torch.zeros(2, 8, SIZE, SIZE), torch.full((2,), 0.5), torch.zeros(2, 1, SIZE, SIZE))
    assert prediction.shape == (2, 4, SIZE, SIZE)  # x_t and the estimate: 2C = 8 channels in, C out
    batch = tiny_batch()
    for seed in (0, 1, 2, 3):  # self-conditioning's coin falls both ways
        loss = module.loss(
            batch["image"], module.scheme.one_hot(batch["mask"][:, 0]), torch.Generator().manual_seed(seed)
        )
        assert torch.isfinite(loss)
        loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in module.net.parameters() if p.grad is not None)
    gens = [torch.Generator().manual_seed(k) for k in range(4)]
    out = make_draw(module.config, module.ema, module.process)(batch["image"], 2, gens).mask
    assert out.shape == (4, 1, SIZE, SIZE) and set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_the_training_target_is_the_one_hot_of_the_batch_label_maps():
    module = module_class("deterministic")(make_config("unet"))
    mask = tiny_batch()["mask"]
    target = module.scheme.one_hot(mask[:, 0])
    assert torch.equal(target.argmax(1, keepdim=True).float(), mask)  # channel a is atom a for exclusive classes
    binary = module_class("deterministic")(make_config("unet", ()))
    masks01 = (mask > 1).float()
    assert torch.equal(binary.scheme.one_hot(masks01[:, 0]), masks01)  # binary: the mask itself, as before


@pytest.mark.parametrize("family", ["medsegdiff", "unet", "probunet", "phiseg", "ssn"])
def test_a_checkpointed_config_rebuilds_the_same_network(family):
    """The resolved config in a checkpoint gives the network its weights fit: C = 4 for three classes, and
    C = 1 for a binary config written before classes existed (no ``data.classes`` key)."""
    for classes in (ACDC, ()):
        torch.manual_seed(0)
        config = make_config(family, classes)
        net = methods.build_network(config)
        stored = config_to_dict(config)
        if not classes:
            del stored["data"]["classes"]  # as every checkpoint from before
        rebuilt = methods.build_network(config_from_dict(stored))
        rebuilt.load_state_dict(net.state_dict())  # strict: same keys and shapes
        assert config_from_dict(stored).data.scheme.channels == (4 if classes else 1)


def test_channel_counts_in_model_options_are_refused():
    config = config_from_dict({"model": {"name": "diffusion-unet", "options": {**UNET, "out_channels": 4}}})
    with pytest.raises(UserError, match="out_channels cannot be set there"):
        methods.build_network(config)
