"""Tiny configs of every method family over classes (ACDC-like exclusive classes, BraTS-like regions)."""

from __future__ import annotations

import torch

from diffuseg.config import Config, config_from_dict

SIZE = 16
ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]
BRATS = [{"name": "WT", "values": [1, 2, 4]}, {"name": "TC", "values": [1, 4]}, {"name": "ET", "values": [4]}]
UNET = {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1], "middle_blocks": 1}
FAMILIES = {
    "medsegdiff": ("diffusion", "medsegdiff-s", {"base_channels": 4}),
    "diffusion-unet": ("diffusion", "diffusion-unet", {**UNET, "time_dim": 16}),
    "probunet-unet": ("diffusion", "probunet-unet", {"filters": [8, 16], "convs_per_block": 1, "time_dim": 16}),
    "unet": ("deterministic", "unet", UNET),
    "probunet": ("probunet", "probunet", {"latent_dim": 2, "filters": [8, 16], "convs_per_block": 1}),
    "probunet-fc-mix": (
        "probunet",
        "probunet-fc-mix",
        {"latent_dim": 2, "components": 2, "filters": [8, 16], "convs_per_block": 1, "kl_samples": 8},
    ),
    "phiseg": ("phiseg", "phiseg", {"resolution_levels": 3, "latent_levels": 2, "n0": 8, "zdim": 2}),
    "ssn": ("ssn", "unet", UNET),
}


def make_config(family: str, classes: list | tuple = ACDC, **diffusion: object) -> Config:
    """The tiny config of ``family`` over ``classes`` (``()``: binary), with ``diffusion.*`` settings."""
    method, name, options = FAMILIES[family]
    return config_from_dict(
        {
            "method": method,
            "model": {"name": name, "options": options},
            "data": {"image_size": SIZE, "classes": list(classes)},
            "diffusion": diffusion,
            "sample": {"steps": 2, "samples": 2, "batch_size": 2},
        }
    )


def tiny_batch(atoms: int = 3) -> dict[str, torch.Tensor]:
    """Two images whose label maps (B, 1, H, W) hold atoms 0..``atoms`` in known quarters."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, SIZE, SIZE)
    half = SIZE // 2
    mask[:, :, :half, half:], mask[:, :, half:, :half], mask[:, :, half:, half:] = 1, 2, atoms
    return {"image": mask / atoms + 0.1 * torch.randn(mask.shape, generator=g), "mask": mask}
