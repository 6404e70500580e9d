"""The method table: for each family of ``config.method``, how its network, its process and its member-drawing
function are built. Training, prediction, sampled validation and the benchmarks all build through here."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffuseg.checkpoint import check_finite, checkpoint_config, prefixed, read_checkpoint
from diffuseg.config import Config, SampleConfig
from diffuseg.diffusion.anchored import AnchoredDenoiser
from diffuseg.diffusion.process import DiffusionProcess, Network, masks_to_x0
from diffuseg.diffusion.samplers import SampleOutput
from diffuseg.diffusion.samplers import sample as run_sampler
from diffuseg.diffusion.samplers.base import to_mask
from diffuseg.enums import AnchorForm, Method
from diffuseg.errors import UserError
from diffuseg.labels import LabelScheme
from diffuseg.nets.anchored import AnchoredNet, anchored_net
from diffuseg.nets.latent import Generators
from diffuseg.nets.phiseg import PHiSeg
from diffuseg.nets.probunet import ProbUNet
from diffuseg.nets.registry import STRUCTURAL
from diffuseg.nets.registry import build_network as from_registry
from diffuseg.nets.ssn import StochasticSegNet

DIFFUSING = (Method.DIFFUSION, Method.ANCHORED)
"""The families that draw members with a diffusion sampler (``sample.steps`` network calls per member)."""


def build_network(config: Config) -> torch.nn.Module:
    """The network of ``config.model`` (registry name and options), for every method family, with
    ``data.in_channels`` image channels and C = ``config.data.scheme.channels`` mask / output channels."""

    options = dict(config.model.options)
    fixed = sorted(set(options) & set(STRUCTURAL))
    if fixed:
        raise UserError(
            f"model.options: {', '.join(fixed)} cannot be set there; the channel counts come from data.in_channels "
            "and data.classes"
        )
    channels = config.data.scheme.channels
    mask_channels = None  # the registry's default: C, for the networks that read x_t
    if config.method in DIFFUSING and config.diffusion.self_condition:
        mask_channels = 2 * channels  # x_t and the earlier estimate
    if config.method is Method.ANCHORED:  # model is the trunk; the head as the trunk pads and downsamples
        trunk = from_registry(config.model.name, config.data.in_channels, channels, **options)
        if not hasattr(trunk, "feature_channels"):
            raise UserError(
                f"model {config.model.name} cannot be the trunk of method anchored (a segmenter: unet, "
                "medsegdiff-s/b/l-segmenter)"
            )
        a, shape = config.anchored, {k: options[k] for k in ("downsample", "padding") if k in options}
        mask = mask_channels or channels
        head = (a.head_channels, a.head_blocks, a.head_time_dim, a.trunk_features, a.mu_input, a.head_patch)
        return anchored_net(trunk, config.data.in_channels, channels, mask, *head, **shape)
    if config.method is Method.SSN:  # model is the backbone; the SSN head predicts the covariance of its logits
        backbone = from_registry(config.model.name, config.data.in_channels, channels, **options)
        if not hasattr(backbone, "feature_channels"):
            raise UserError(
                f"model {config.model.name} cannot be the backbone of method ssn (a segmenter: unet, "
                "medsegdiff-s/b/l-segmenter)"
            )
        return StochasticSegNet(backbone, channels, config.ssn.rank, config.ssn.epsilon)
    return from_registry(config.model.name, config.data.in_channels, channels, mask_channels, **options)


def check_image_size(config: Config) -> None:
    """``UserError`` for a ``data.image_size`` the network of ``config`` cannot take: not a multiple of its
    downsampling factor, or so small that one image at a time fails in it (a 1 x 1 feature map normalised by a
    GroupNorm of one channel per group holds one value per group, which torch refuses); the message gives the
    smallest size that works. The network is built and called on the meta device: no weights, no random draws,
    no arithmetic."""
    with torch.device("meta"):
        net = build_network(config)
    factor = getattr(net, "downsampling", None)
    size = config.data.image_size
    if not factor:
        return
    if size % factor:
        raise UserError(
            f"data.image_size={size} does not fit model {config.model.name}: it downsamples {factor}x, so the "
            f"image size must be a multiple of {factor} (e.g. {max(factor, size // factor * factor)})"
        )
    if size // factor > 1 or _one_image_fits(config, net, size):  # a deepest map of 2 x 2 or more always fits
        return
    smallest = next((s for s in range(size + factor, 9 * factor, factor) if _one_image_fits(config, net, s)), None)
    fits = f"the smallest image size it supports is {smallest}" if smallest else "widen the network"
    raise UserError(
        f"data.image_size={size} is too small for model {config.model.name}: it downsamples {factor}x to a 1 x 1 "
        f"feature map, which its GroupNorm (one channel per group there) cannot normalise for one image at a time; "
        f"{fits}"
    )


def _one_image_fits(config: Config, net: torch.nn.Module, size: int) -> bool:
    """Whether one image of ``size`` passes through the meta network ``net`` of the families whose calls are
    known here (diffusion ``net(x_t, t, image)``, deterministic ``net(image)``; others count as fitting)."""
    image = torch.zeros(1, config.data.in_channels, size, size, device="meta")
    channels = config.data.scheme.channels * (2 if config.diffusion.self_condition else 1)
    try:
        with torch.no_grad():
            if config.method is Method.DIFFUSION:
                net(torch.zeros(1, channels, size, size, device="meta"), torch.zeros(1, device="meta"), image)
            elif config.method is Method.DETERMINISTIC:
                net(image)
    except ValueError as err:
        if "Expected more than 1 value per channel" in str(err):  # F.group_norm's check
            return False
        raise
    return True


def build_process(config: Config) -> Any:
    """What a predictor needs besides the network: a ``DiffusionProcess`` for diffusion methods, else ``None``."""
    if config.method not in DIFFUSING:
        return None
    from diffuseg.diffusion.process import DiffusionProcess

    return DiffusionProcess(config.diffusion, exclusive=config.data.scheme.exclusive)


def load_for_inference(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[Config, torch.nn.Module, Any]:
    """``(config, ema_net, process)`` from a checkpoint: the EMA network in eval mode, ready to predict.

    ``process`` is a ``DiffusionProcess`` for diffusion methods and ``None`` for methods that predict in
    one pass (the deterministic UNet; ``ema_net(image) -> logits``). Raises ``UserError`` for a missing,
    corrupt or foreign file. Needs no Lightning (``diffuseg predict`` does not import it).
    """
    return inference_model(read_checkpoint(path, map_location), path)


def inference_model(ckpt: Mapping[str, Any], path: str | os.PathLike) -> tuple[Config, torch.nn.Module, Any]:
    """``load_for_inference`` on a checkpoint dict already read by ``read_checkpoint`` (from ``path``)."""
    config = checkpoint_config(ckpt, path)
    net = build_network(config)
    check_finite(ckpt["state_dict"], path, "ema.")
    weights = prefixed(ckpt["state_dict"], "ema.")
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{path}: EMA weights do not fit the network {config.model.name} ({first})") from None
    net.eval().requires_grad_(False)
    return config, net, build_process(config)


Draw = Callable[[Tensor, int, list], SampleOutput]
"""``draw(images (B, in_channels, H, W), members, generators) -> SampleOutput`` with ``B * members`` rows,
image-major, row ``i`` drawn from ``generators[i]``: ``mask`` (B * members, 1, H, W) float32 label maps of atoms
(``LabelScheme.decode``; binary {0, 1}) and ``soft`` (B * members, C, H, W) in [0, 1], one map per channel."""


def class_probabilities(logits: Tensor, scheme: LabelScheme | None = None) -> Tensor:
    """Logits (N, C, H, W) of a one-pass network -> per-channel probabilities (N, C, H, W) float32: a softmax over
    C for exclusive classes with C >= 2 channels (channel 0 = background), else a sigmoid per channel (binary,
    overlapping regions; ``scheme=None`` is binary)."""
    logits = logits.float()
    if scheme is not None and scheme.exclusive and logits.shape[1] > 1:
        return torch.softmax(logits, dim=1)
    return torch.sigmoid(logits)


def diffusion_draw(
    net: Network, process: DiffusionProcess, cfg: SampleConfig, scheme: LabelScheme | None = None
) -> Draw:
    """The diffusion sampler ``cfg.sampler`` with ``cfg.steps``, ``spacing``, ``eta``, ``ddpm_variance``,
    ``threshold``, over the C channels of ``scheme`` (None: binary). A network trained only on the times of a
    sampler's grid (``diffusion.train_grid``) gets a warning when it is asked to sample off that grid."""
    grid = process.cfg.train_grid, process.cfg.train_grid_spacing
    if grid[0] and (cfg.steps, cfg.spacing) != grid:
        warnings.warn(
            f"the network was trained only at the {grid[0]} times of the {grid[1]} grid (diffusion.train_grid) and is "
            f"now sampled with {cfg.steps} {cfg.spacing} steps, times it never saw: use --steps {grid[0]} "
            f"sample.spacing={grid[1]}",
            stacklevel=2,
        )

    def draw(images: Tensor, members: int, generators: list) -> SampleOutput:
        return run_sampler(
            cfg.sampler,
            net,
            images,
            process,
            cfg.steps,
            generator=generators,
            members=members,
            spacing=cfg.spacing,
            eta=cfg.eta,
            ddpm_variance=cfg.ddpm_variance,
            threshold=cfg.threshold,
            scheme=scheme,
        )

    return draw


def anchored_denoiser(
    net: AnchoredNet,
    images: Tensor,
    process: DiffusionProcess,
    form: AnchorForm,
    scheme: LabelScheme,
    progress: Callable[[int], None] | None = None,
    keep_estimate: bool = False,
) -> tuple[AnchoredDenoiser, Tensor]:
    """One trunk pass on ``images`` (B, in_channels, H, W): ``(denoiser, logits (B, C, H, W))``, the denoiser
    (``diffusion.anchored``) calling the head on the cached features and mu = 2 ``class_probabilities`` - 1.

    Args:
        net: the anchored network.
        images: the image batch; the denoiser serves any number of members per image.
        process: the diffusion process (``build_process``).
        form: ``anchored.form``.
        scheme: the classes, for the trunk's probabilities.
        progress: called with the rows of every head call.
        keep_estimate: keep the last call's y_0 estimate (``AnchoredDenoiser``).
    """
    features, logits = net.prior(images)
    mu = masks_to_x0(class_probabilities(logits.detach(), scheme))
    condition = net.condition(images, features, mu)

    def head(view: Tensor, t: Tensor) -> Tensor:
        out = net.denoise(view, t, condition)
        if progress is not None:
            progress(view.shape[0])
        return out

    return AnchoredDenoiser(head, mu, process, form, keep_estimate), logits


def anchored_draw(
    net: AnchoredNet,
    process: DiffusionProcess,
    cfg: SampleConfig,
    scheme: LabelScheme,
    form: AnchorForm,
    progress: Callable[[int], None] | None = None,
) -> Draw:
    """Anchored diffusion's members: per call one trunk pass on the image batch (``anchored_denoiser``), then the
    sampler of ``cfg`` with members x steps head passes on the cached features.

    Args:
        net: the trunk and the head (``nets.anchored.AnchoredNet``).
        process: the diffusion process the head was trained with.
        cfg: sampler, steps, spacing, eta and threshold.
        scheme: the label scheme the members are decoded into.
        form: ``residual`` or ``mean_shift`` (``enums.AnchorForm``).
        progress: called with the rows of every head call, as in ``make_draw``.
    """

    def draw(images: Tensor, members: int, generators: list) -> SampleOutput:
        denoiser, _ = anchored_denoiser(net, images, process, form, scheme, progress)
        return diffusion_draw(denoiser, process, cfg, scheme)(images, members, generators)

    return draw


@torch.no_grad()
def latent_sample(
    net: torch.nn.Module,
    image: Tensor,
    members: int,
    *,
    generator: Generators,
    threshold: float = 0.5,
    scheme: LabelScheme | None = None,
) -> SampleOutput:
    """``members`` masks per image from a Prob. UNet's or PHiSeg's prior or an SSN's logit distribution: image
    (B, in_channels, H, W) -> ``SampleOutput`` with ``soft`` = ``class_probabilities(logits, scheme)``
    (B * members, C, H, W) and ``mask`` its label map (B * members, 1, H, W) (binary: sigmoid, thresholded to
    {0, 1}), rows image-major.

    ``generator`` is one ``torch.Generator`` or one per output row (row b * members + k from generator
    b * members + k), so a member's mask does not depend on the batch it is drawn in. The image-only parts
    (Prob. UNet's UNet and prior net, PHiSeg's prior encoder, the SSN's whole network) run once per image.

    Args:
        net: a ``ProbUNet``, ``PHiSeg`` or ``StochasticSegNet``.
        image: (B, in_channels, H, W).
        members: K, the masks drawn per image.
        generator: one generator, or one per output row (B * K).
        threshold: where a sigmoid channel counts as on.
        scheme: the label scheme (``None``: binary).
    """
    if not isinstance(net, ProbUNet | PHiSeg | StochasticSegNet):
        raise TypeError(f"{type(net).__name__} draws no logits (not a ProbUNet, PHiSeg or StochasticSegNet)")
    soft = class_probabilities(net.sample_logits(image, members, generator), scheme)
    return SampleOutput(mask=to_mask(soft, threshold, scheme), soft=soft)


def steps_per_member(config: Config) -> int:
    """Network steps of one member as ``make_draw``'s ``progress`` counts them: ``sample.steps`` for diffusion,
    1 for the one-pass families."""
    return config.sample.steps if config.method in DIFFUSING else 1


def make_draw(
    config: Config,
    net: torch.nn.Module,
    process: DiffusionProcess | None,
    progress: Callable[[int], None] | None = None,
) -> Draw:
    """The member-drawing function of ``config.method``'s family, as ``predict`` and sampled validation use it:
    a diffusion sampler (``diffusion_draw``; anchored: ``anchored_draw``), the prior of a latent-variable baseline
    or the SSN's logit distribution (``latent_sample``), or one pass of the deterministic UNet
    (``class_probabilities(net(image))`` repeated ``members`` times), each over the classes of ``config.data``
    (``Draw``: label maps and per-channel soft maps).

    ``progress(rows)`` is called with the member-steps done: after every network call of a diffusion sampler
    (its row count, a Python int: no host synchronisation), after every draw of the one-pass families."""
    s = config.sample
    scheme = config.data.scheme
    if config.method is Method.ANCHORED:
        return anchored_draw(net, process, s, scheme, config.anchored.form, progress)
    if config.method is Method.DIFFUSION:
        if progress is None:
            return diffusion_draw(net, process, s, scheme)

        def counted(z: Tensor, t: Tensor, image: Tensor) -> Tensor:
            out = net(z, t, image)
            progress(z.shape[0])
            return out

        return diffusion_draw(counted, process, s, scheme)
    if config.method in (Method.PROBUNET, Method.PHISEG, Method.SSN):
        one_pass = lambda images, members, gens: latent_sample(  # noqa: E731
            net, images, members, generator=gens, threshold=s.threshold, scheme=scheme
        )
    else:

        def one_pass(images: Tensor, members: int, gens: list) -> SampleOutput:
            soft = class_probabilities(net(images), scheme).repeat_interleave(members, dim=0)
            return SampleOutput(mask=to_mask(soft, s.threshold, scheme), soft=soft)

    if progress is None:
        return one_pass

    def counted_pass(images: Tensor, members: int, gens: list) -> SampleOutput:
        out = one_pass(images, members, gens)
        progress(images.shape[0] * members)
        return out

    return counted_pass
