"""Drawing ensembles: ``K`` members per case (``sample.samples``), ``sample.batch_size`` member rows per network
call, finished into an ``EnsembleResult`` per case.

The one in-memory path from a case's image to its members, used by ``predict``, sampled validation and the
benchmarks alike: member ``k`` of case ``c`` is drawn from its own generator (``seeds.member_generators``, seeded
from ``(sample.seed, c, k)``), and every row of a call has its own generator (see ``diffusion.noise``), so a
member's sample does not depend on the batch size, on which cases share its batch, or on the order of the cases.
Members are drawn ``sample.batch_size`` at a time: the members of one case over several calls, or of several
cases in one call, split over ``draw_workers`` threads. ``draw_members`` yields each case's members as drawn;
``sample_ensembles`` finishes them (``finish.finish``: post-processing, fusion, uncertainty).

Members from several views (``member_view``): with N draws (one per checkpoint of an ensemble, e.g. a seed ensemble
of UNets: Lakshminarayanan et al., NeurIPS 2017, arXiv:1612.01474) member k comes from draw ``k mod N``; with
``sample.tta`` it sees its image under the symmetry ``(k // N) mod 8`` of the square, mapped back after
(``inference.tta``). Each member is then a function of (case, k) alone, as without views.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import Tensor

from diffuseg.config import SampleConfig
from diffuseg.diffusion.samplers import SampleOutput
from diffuseg.inference.finish import EnsembleResult, Members, finish
from diffuseg.inference.seeds import member_generators
from diffuseg.inference.tta import TRANSFORMS, dihedral, undo
from diffuseg.labels import LabelScheme
from diffuseg.methods import Draw
from diffuseg.nets.bf16 import WHOLE_BF16, Bf16Network
from diffuseg.runtime import samples_in_bf16, sampling_precision


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


Chunk = list[tuple[_Pending, int, int]]
"""(case, first member, count) items drawn in one ``draw`` call."""


def _split(group: Chunk, workers: int) -> list[Chunk]:
    """``group`` cut into at most ``workers`` runs of about equal rows, at member boundaries (a case's members may
    fall into two runs, each a contiguous range)."""
    per = -(-sum(n for _, _, n in group) // max(1, workers))
    runs: list[Chunk] = [[]]
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


def views(draws: int, tta: bool) -> int:
    """The distinct (draw, transform) pairs members cycle through: ``draws`` x 8 with test-time augmentation."""
    return draws * (TRANSFORMS if tta else 1)


def member_view(k: int, draws: int, tta: bool) -> tuple[int, int]:
    """(draw, transform) of member ``k``: draw ``k mod draws``, transform ``(k // draws) mod 8`` with ``tta``, else
    0 (the identity); members 0 .. ``views(draws, tta)`` - 1 are the distinct pairs."""
    return k % draws, (k // draws) % TRANSFORMS if tta else 0


def _draw_views(
    draws: Sequence[Draw], images: Tensor, members: list[int], generators: list, tta: bool, memory: torch.memory_format
) -> SampleOutput:
    """``images`` (R, in_channels, S, S), one row per member (index ``members[r]``): each row drawn by its draw
    under its transform (``member_view``), its mask and soft maps mapped back; rows in input order."""
    chosen = [member_view(k, len(draws), tta) for k in members]
    done: dict[int, tuple[Tensor, Tensor]] = {}
    for d, draw in enumerate(draws):
        rows = [r for r, (which, _) in enumerate(chosen) if which == d]
        if rows:
            x = torch.stack([dihedral(images[r], chosen[r][1]) for r in rows]).contiguous(memory_format=memory)
            out = draw(x, 1, [generators[r] for r in rows])
            for j, r in enumerate(rows):
                done[r] = undo(out.mask[j], chosen[r][1]), undo(out.soft[j], chosen[r][1])
    rows = range(len(members))
    return SampleOutput(mask=torch.stack([done[r][0] for r in rows]), soft=torch.stack([done[r][1] for r in rows]))


def _draw_run(
    draws: Sequence[Draw], run: Chunk, cfg: SampleConfig, device: torch.device, inner: int | None
) -> SampleOutput:
    """One call for ``run``. One draw without test-time augmentation: ``members=count`` when every case brings as
    many, else each row gets its own copy of the image (``members=1``); otherwise one row per member, each in its
    view (``_draw_views``). ``inner``: torch threads of this (worker) thread, if set."""
    if inner is not None:
        torch.set_num_threads(inner)  # OpenMP's thread count is a per-thread setting
    counts = [n for _, _, n in run]
    generators = [
        g for case, k0, n in run for g in member_generators(cfg.seed, case.case_id, range(k0, k0 + n), device)
    ]
    images = torch.stack([case.image for case, _, _ in run]).to(device)
    viewed = len(draws) > 1 or cfg.tta
    if viewed or len(set(counts)) > 1:
        images, members = images.repeat_interleave(torch.tensor(counts, device=device), dim=0), 1
    else:
        members = counts[0]
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    with torch.inference_mode(), sampling_precision(device, cfg.precision):
        if viewed:
            indices = [k for _, k0, n in run for k in range(k0, k0 + n)]
            return _draw_views(draws, images, indices, generators, cfg.tta, memory)
        return draws[0](images.contiguous(memory_format=memory), members, generators)


def draw_workers(cfg: SampleConfig, device: torch.device) -> int:
    """Threads that draw a call's members side by side: ``sample.workers``, or for 0 (auto) one per torch
    thread on a CPU (each then computes with one torch thread) and 1 on other devices."""
    if cfg.workers > 0:
        return cfg.workers
    return torch.get_num_threads() if device.type == "cpu" else 1


def _draw(draws: Sequence[Draw], chunk: Chunk, cfg: SampleConfig, device: torch.device) -> None:
    """Draw the members of ``chunk`` (case, first member, count): one call per run of equal image shapes, split
    over ``draw_workers`` threads of one torch thread each (OpenMP threads of one worker wait for each other at
    every operator; the measurements are in docs/inference.md)."""
    groups: list[Chunk] = []
    for item in chunk:
        if groups and groups[-1][0][0].image.shape == item[0].image.shape:
            groups[-1].append(item)
        else:
            groups.append([item])
    workers = draw_workers(cfg, device)
    for group in groups:
        runs = _split(group, workers) if workers > 1 else [group]
        if len(runs) == 1:
            outputs = [_draw_run(draws, group, cfg, device, None)]
        else:
            threads = torch.get_num_threads()
            try:
                with ThreadPoolExecutor(len(runs)) as pool:
                    outputs = list(pool.map(lambda run: _draw_run(draws, run, cfg, device, 1), runs))
            finally:
                torch.set_num_threads(threads)
        for run, out in zip(runs, outputs):
            start = 0
            for case, _, n in run:
                case.masks.append(out.mask[start : start + n].float())  # stays on the device until fused
                case.soft.append(out.soft[start : start + n].float())
                start += n


def draw_members(
    draw: Draw | Sequence[Draw],
    cases: Iterable[tuple[str, Tensor]],
    cfg: SampleConfig,
    *,
    device: torch.device | str = "cpu",
) -> Iterator[Members]:
    """Yield the ``cfg.samples`` members of each ``(case_id, image (C, H, W))``, in input order, on ``device``.

    ``cfg.batch_size`` member rows per ``draw`` call (``methods.make_draw``), reading ``cases`` lazily (only as
    many as the next call needs); ``cfg.workers``, ``cfg.precision``, ``cfg.channels_last`` and ``cfg.tta`` as
    ``predict`` runs them. Several draws (one per checkpoint of an ensemble): member k from draw ``k mod N``
    (``member_view``). The networks behind the draws must already be on ``device``.
    """
    draws = [draw] if callable(draw) else list(draw)
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
        _draw(draws, chunk, cfg, device)
        while queue and queue[0].done(cfg.samples):
            case = queue.popleft()
            yield Members(case.case_id, torch.cat(case.masks), torch.cat(case.soft))


def sample_ensembles(
    draw: Draw | Sequence[Draw],
    cases: Iterable[tuple[str, Tensor]],
    cfg: SampleConfig,
    *,
    device: torch.device | str = "cpu",
    scheme: LabelScheme | None = None,
) -> Iterator[EnsembleResult]:
    """Yield one ``EnsembleResult`` per ``(case_id, image (C, H, W))``, in input order: ``draw_members``, each
    case finished (``finish.finish``) as soon as its members are drawn.

    Args:
        draw: the member-drawing function (``methods.make_draw``), or one per checkpoint of an ensemble
            (``draw_members``); its network must already be on ``device`` (and in ``channels_last`` when
            ``cfg.channels_last``: ``prepare_network``).
        cases: ``(case_id, image (C, H, W))`` pairs, read lazily.
        cfg: the ``sample`` settings: members, batch size, workers, precision, test-time augmentation,
            post-processing, fusion, uncertainty.
        device: where the members are drawn and finished.
        scheme: the label scheme ``draw`` decodes into (``make_draw``'s, from ``config.data``); ``None`` is binary.
    """
    for members in draw_members(draw, cases, cfg, device=device):
        yield finish(members, cfg, scheme)


def use_micro_batch(net: torch.nn.Module, rows: int) -> None:
    """Set ``sample.micro_batch`` on a network that splits its per-member work (MedSegDiff); others have none."""
    if hasattr(net, "micro_batch"):
        net.micro_batch = rows


def prepare_network(net: torch.nn.Module, cfg: SampleConfig, device: torch.device | str) -> torch.nn.Module:
    """Move ``net`` to ``device`` in eval mode, in ``channels_last`` when ``cfg.channels_last``, with
    ``cfg.micro_batch`` (``use_micro_batch``). Sampled in bf16 on a CPU (``runtime.samples_in_bf16``), a network
    of ``nets.bf16.WHOLE_BF16`` is returned as a ``Bf16Network`` copy (weights cast once, no autocast)."""
    device = torch.device(device)
    net = net.to(device).eval()
    use_micro_batch(net, cfg.micro_batch)
    net = net.to(memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
    if device.type == "cpu" and isinstance(net, WHOLE_BF16) and samples_in_bf16(device, cfg.precision):
        return Bf16Network(net)
    return net
