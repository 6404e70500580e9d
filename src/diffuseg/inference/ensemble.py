"""Ensembles of sampled masks: N members per case, drawn in batches, fused, with an uncertainty map.

Member ``k`` of case ``c`` starts from its own generator seeded with ``member_seed(seed, c, k)``, a stable
hash (BLAKE2b, not Python's salted ``hash``), and every row of a network call has its own generator (see
``diffusion.noise``). A member's sample therefore does not depend on the batch size, on which cases share
its batch, or on the order of the cases. Members are drawn ``sample.batch_size`` at a time: the members of
one case over several calls, or of several cases in one call.

Per case: member masks -> relative-area post-processing (``sample.relative_area``, supplement 7.1 of the
ambiguity paper) -> fusion (``sample.fusion``: STAPLE, mean or vote) and an uncertainty map of the member
frequency ``f`` (the fraction of members marking a pixel): ``variance`` ``f (1 - f)`` (the members' own
Bernoulli variance, in [0, 0.25]) or ``entropy`` ``-f log2 f - (1 - f) log2 (1 - f)`` (bits, in [0, 1]).

Several classes (a label scheme with L >= 2 atoms, ``labels``): the members are label maps of atoms;
relative-area post-processing runs per class (a class of a member smaller than ``tau`` times that class's
largest area in the ensemble is dropped: to background for exclusive classes, regions repainted in order);
fusion is ``inference.label_fusion`` (multi-label STAPLE, argmax of the mean one-hot or of the members' soft
maps, plurality vote); the uncertainty map is the normalised entropy of the members' label frequencies
(``label_fusion.normalised_entropy``, in [0, 1]) and ``class_uncertainty`` holds one map per class of the
``sample.uncertainty`` kind. One class of one label value is the binary path.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diffuseg.config import SampleConfig
from diffuseg.diffusion.samplers import SampleOutput
from diffuseg.enums import Uncertainty
from diffuseg.inference.fusion import fuse
from diffuseg.inference.label_fusion import class_uncertainty, normalised_entropy
from diffuseg.inference.postprocess import relative_area_keep
from diffuseg.labels import LabelScheme
from diffuseg.methods import Draw
from diffuseg.runtime import sampling_precision


@dataclass(frozen=True)
class EnsembleResult:
    """One case. ``samples``/``soft``: ``(N, 1, H, W)`` members after post-processing ({0, 1} / [0, 1]);
    ``fused``: ``(1, H, W)`` {0, 1}; ``probability``: ``(1, H, W)`` the fusion's consensus probability;
    ``uncertainty``: ``(1, H, W)`` variance or entropy of the member frequency. All float32 on the CPU.

    Several classes (L >= 2 atoms): ``samples`` ``(N, 1, H, W)`` and ``fused`` ``(1, H, W)`` are atom maps
    (float32 values 0..L), ``soft`` ``(N, C, H, W)`` the members' channel maps, ``probability`` ``(L + 1, H, W)``
    the fusion's per-atom probability, ``uncertainty`` ``(1, H, W)`` the normalised label entropy and
    ``class_uncertainty`` ``(K, H, W)`` one map per class (``None`` for binary)."""

    case_id: str
    samples: Tensor
    soft: Tensor
    fused: Tensor
    probability: Tensor
    uncertainty: Tensor
    class_uncertainty: Tensor | None = None


def member_seed(seed: int, case_id: str, k: int) -> int:
    """A 63-bit seed for member ``k`` of ``case_id``, stable across runs, machines and Python versions."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{case_id}\x1f{int(k)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def member_generators(seed: int, case_id: str, members: Iterable[int], device: torch.device) -> list:
    """One ``torch.Generator`` on ``device`` per member index in ``members``."""
    return [torch.Generator(device=device).manual_seed(member_seed(seed, case_id, k)) for k in members]


def uncertainty_map(masks: Tensor, kind: Uncertainty | str, scheme: LabelScheme | None = None) -> Tensor:
    """``masks`` ``(N, 1, H, W)`` {0, 1} -> ``(1, H, W)``: ``f (1 - f)`` or the binary entropy of ``f`` (bits).

    With a ``scheme`` of L >= 2 atoms, ``masks`` are atom maps and the map is the normalised entropy of the
    members' label frequencies (``label_fusion.normalised_entropy``, in [0, 1]) whatever ``kind``; the per-class
    maps of ``kind`` are ``label_fusion.class_uncertainty``."""
    if scheme is not None and scheme.atoms > 1:
        return normalised_entropy(masks[:, 0].long(), scheme.atoms)[None]
    f = (masks > 0.5).float().mean(0)
    if Uncertainty.parse(kind) is Uncertainty.VARIANCE:
        return f * (1.0 - f)
    g = 1.0 - f
    return -(torch.xlogy(f, f) + torch.xlogy(g, g)) / math.log(2.0)


@dataclass
class _Pending:
    """A case whose members are being drawn."""

    case_id: str
    image: Tensor  # (C, H, W)
    scheduled: int = 0
    masks: list[Tensor] = field(default_factory=list)
    soft: list[Tensor] = field(default_factory=list)

    def done(self, members: int) -> bool:
        return sum(m.shape[0] for m in self.masks) == members


Part = list[tuple[_Pending, int, int]]
"""(case, first member, count) items drawn in one ``draw`` call."""


def _split(group: Part, parts: int) -> list[Part]:
    """``group`` cut into at most ``parts`` runs of about equal rows, at member boundaries (a case's members may
    fall into two runs, each a contiguous range)."""
    per = -(-sum(n for _, _, n in group) // max(1, parts))
    runs: list[Part] = [[]]
    room = per
    for case, k0, n in group:
        while n > 0:
            if room == 0:
                runs.append([])
                room = per
            take = min(n, room)
            runs[-1].append((case, k0, take))
            k0, n, room = k0 + take, n - take, room - take
    return runs


def _draw_part(draw: Draw, part: Part, cfg: SampleConfig, device: torch.device, inner: int | None) -> SampleOutput:
    """One ``draw`` call for ``part``: ``members=count`` when every case brings as many, else each row gets its
    own copy of the image (``members=1``). ``inner``: torch threads of this (worker) thread, if set."""
    if inner is not None:
        torch.set_num_threads(inner)  # OpenMP's thread count is a per-thread setting
    counts = [n for _, _, n in part]
    generators = [
        g for case, k0, n in part for g in member_generators(cfg.seed, case.case_id, range(k0, k0 + n), device)
    ]
    images = torch.stack([case.image for case, _, _ in part]).to(device)
    if len(set(counts)) == 1:
        members = counts[0]
    else:
        images, members = images.repeat_interleave(torch.tensor(counts, device=device), dim=0), 1
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    with torch.inference_mode(), sampling_precision(device, cfg.precision):
        return draw(images.contiguous(memory_format=memory), members, generators)


def draw_workers(cfg: SampleConfig, device: torch.device) -> int:
    """Threads that draw a call's members side by side: ``sample.workers``, or for 0 (auto) one per torch
    thread on a CPU (each then computes with one torch thread) and 1 on other devices."""
    if cfg.workers > 0:
        return cfg.workers
    return torch.get_num_threads() if device.type == "cpu" else 1


def _draw(draw: Draw, chunk: Part, cfg: SampleConfig, device: torch.device) -> None:
    """Draw the members of ``chunk`` (case, first member, count): one call per run of equal image shapes, split
    over ``draw_workers`` threads of one torch thread each (on a 2-core CPU two such workers beat one worker of
    two OpenMP threads, which wait for each other at every operator; docs/inference.md)."""
    groups: list[Part] = []
    for item in chunk:
        if groups and groups[-1][0][0].image.shape == item[0].image.shape:
            groups[-1].append(item)
        else:
            groups.append([item])
    workers = draw_workers(cfg, device)
    for group in groups:
        parts = _split(group, workers) if workers > 1 else [group]
        if len(parts) == 1:
            outputs = [_draw_part(draw, group, cfg, device, None)]
        else:
            threads = torch.get_num_threads()
            try:
                with ThreadPoolExecutor(len(parts)) as pool:
                    outputs = list(pool.map(lambda part: _draw_part(draw, part, cfg, device, 1), parts))
            finally:
                torch.set_num_threads(threads)
        for part, out in zip(parts, outputs):
            start = 0
            for case, _, n in part:
                case.masks.append(out.mask[start : start + n].float())  # stays on the device until fused
                case.soft.append(out.soft[start : start + n].float())
                start += n


def relative_area_members(
    atoms: Tensor, soft: Tensor, scheme: LabelScheme, tau: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Relative-area post-processing per class (supplement 7.1 of the ambiguity paper, eq. 9-10, for each class on
    its own): ``atoms`` ``(N, H, W)`` int label maps and ``soft`` ``(N, C, H, W)`` of the N members ->
    (atoms, soft, class masks ``(N, K, H, W)`` bool) after dropping, in each member, every class whose area is
    below ``tau`` times the largest area of that class among the members. Exclusive classes: its pixels become
    background and its soft mass moves to the background channel (C = K + 1), so each member's soft map stays a
    distribution. Regions: the region's channel is zeroed and the label map repainted from the kept region
    masks in declaration order (as ``LabelScheme.decode`` paints)."""
    masks = scheme.class_masks(atoms)  # (N, K, H, W)
    keep = relative_area_keep(masks.movedim(1, 0), tau, set_dim=1).T  # (N, K)
    masks = masks & keep[:, :, None, None]
    drop = (~keep).to(soft.dtype)[:, :, None, None]
    if scheme.exclusive:
        atoms = torch.where(masks.any(1), atoms, torch.zeros_like(atoms))
        if soft.shape[1] == len(scheme.names) + 1:
            moved = (soft[:, 1:] * drop).sum(1)
            soft = torch.cat([soft[:, :1] + moved[:, None], soft[:, 1:] * (1 - drop)], dim=1)
        return atoms, soft, masks
    repainted = torch.zeros_like(atoms)
    for k, value in enumerate(scheme.painted):
        atom = torch.full_like(atoms, scheme.values.index(value) + 1)
        repainted = torch.where(masks[:, k], atom, repainted)
    return repainted, soft * (1 - drop), scheme.class_masks(repainted)


def _finish_labels(case: _Pending, cfg: SampleConfig, scheme: LabelScheme) -> EnsembleResult:
    """``_finish`` for L >= 2 atoms: per-class relative area, label fusion, label entropy and per-class maps.

    The members' soft maps enter the ``mean`` fusion when each channel is one atom (exclusive classes of one
    label value each, C = L + 1); otherwise (regions, a class of several values) it averages the one-hot label
    maps."""
    atoms = torch.cat(case.masks)[:, 0].long()  # (N, H, W)
    soft = torch.cat(case.soft)
    labels = scheme.atoms
    if cfg.relative_area > 0:
        atoms, soft, masks = relative_area_members(atoms, soft, scheme, cfg.relative_area)
    else:
        masks = scheme.class_masks(atoms)
    per_atom = scheme.exclusive and soft.shape[1] == labels + 1
    fused, probability = fuse(cfg.fusion, atoms[None], soft=soft[None] if per_atom else None, labels=labels)
    return EnsembleResult(
        case_id=case.case_id,
        samples=atoms[:, None].float().cpu(),
        soft=soft.cpu(),
        fused=fused.float().cpu(),
        probability=probability[0].cpu(),
        uncertainty=normalised_entropy(atoms, labels)[None].cpu(),
        class_uncertainty=class_uncertainty(masks, cfg.uncertainty).cpu(),
    )


def _finish(case: _Pending, cfg: SampleConfig, scheme: LabelScheme | None = None) -> EnsembleResult:
    """Post-process, fuse and measure the uncertainty on the sampling device; results on the CPU. A ``scheme``
    of L >= 2 atoms takes ``_finish_labels``; binary (and one class of one value) the path below."""
    if scheme is not None and scheme.atoms > 1:
        return _finish_labels(case, cfg, scheme)
    masks = torch.cat(case.masks)
    soft = torch.cat(case.soft)
    if cfg.relative_area > 0:  # an emptied member keeps no soft mass either
        keep = relative_area_keep(masks, cfg.relative_area).float().view(-1, 1, 1, 1)
        masks, soft = masks * keep, soft * keep
    fused, probability = fuse(cfg.fusion, masks[None, :, 0], soft=soft[None, :, 0], threshold=cfg.threshold)
    return EnsembleResult(
        case_id=case.case_id,
        samples=masks.cpu(),
        soft=soft.cpu(),
        fused=fused.cpu(),
        probability=probability.cpu(),
        uncertainty=uncertainty_map(masks, cfg.uncertainty).cpu(),
    )


def sample_ensembles(
    draw: Draw,
    cases: Iterable[tuple[str, Tensor]],
    cfg: SampleConfig,
    *,
    device: torch.device | str = "cpu",
    scheme: LabelScheme | None = None,
) -> Iterator[EnsembleResult]:
    """Yield one ``EnsembleResult`` per ``(case_id, image (C, H, W))``, in input order.

    ``cfg.samples`` members per case, ``cfg.batch_size`` members per ``draw`` call (see ``diffusion_draw``),
    reading ``cases`` lazily (only as many as the next call needs). The network behind ``draw`` must
    already be on ``device`` (and in ``channels_last`` when ``cfg.channels_last``: ``prepare_network``).
    ``scheme``: the label scheme ``draw`` decodes into (``make_draw``'s, from ``config.data``); ``None`` is binary.
    """
    device = torch.device(device)
    source = iter(cases)
    queue: deque[_Pending] = deque()
    exhausted = False
    while True:
        chunk: list[tuple[_Pending, int, int]] = []
        room = cfg.batch_size
        for case in queue:
            take = min(room, cfg.samples - case.scheduled)
            if take > 0:
                chunk.append((case, case.scheduled, take))
                case.scheduled += take
                room -= take
        while room > 0 and not exhausted:
            item = next(source, None)
            if item is None:
                exhausted = True
                break
            case = _Pending(str(item[0]), item[1])
            queue.append(case)
            take = min(room, cfg.samples)
            chunk.append((case, 0, take))
            case.scheduled = take
            room -= take
        if not chunk:
            return
        _draw(draw, chunk, cfg, device)
        while queue and queue[0].done(cfg.samples):
            yield _finish(queue.popleft(), cfg, scheme)


def use_micro_batch(net: torch.nn.Module, rows: int) -> None:
    """Set ``sample.micro_batch`` on a network that splits its per-member work (MedSegDiff); others have none."""
    if hasattr(net, "micro_batch"):
        net.micro_batch = rows


def prepare_network(net: torch.nn.Module, cfg: SampleConfig, device: torch.device | str) -> torch.nn.Module:
    """Move ``net`` to ``device`` in eval mode, in ``channels_last`` when ``cfg.channels_last``, with
    ``cfg.micro_batch`` (``use_micro_batch``)."""
    net = net.to(device).eval()
    use_micro_batch(net, cfg.micro_batch)
    return net.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
