"""Ensembles: per-member seeding makes results independent of batch size, order and workers; speed settings."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffuseg.config import DiffusionConfig, SampleConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.methods import diffusion_draw
from diffuseg.nets.medsegdiff import medsegdiff


class TinyNet(nn.Module):
    """forward(x_t (B*K,1,H,W), t (B*K,), image (B,C,H,W)): one conv over [x_t, image, t]."""

    def __init__(self, in_channels: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1 + in_channels + 1, 1, 3, padding=1)
        self.calls = 0

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        k = x_t.shape[0] // image.shape[0]
        image = image.repeat_interleave(k, dim=0)
        t_map = t.view(-1, 1, 1, 1).expand(-1, 1, *x_t.shape[2:])
        return self.conv(torch.cat([x_t, image, t_map], dim=1))


def _cases(n: int = 3, sizes: tuple[int, ...] = (16,)) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(f"case{i}", torch.randn(2, sizes[i % len(sizes)], 16, generator=g)) for i in range(n)]


def _run(cases, **sample) -> dict[str, object]:
    cfg = SampleConfig(**{"sampler": "ddim", "steps": 3, "eta": 1.0, "samples": 4, "fusion": "staple", **sample})
    net = prepare_network(TinyNet(), cfg, "cpu")
    process = DiffusionProcess(DiffusionConfig(timesteps=100))
    return {r.case_id: r for r in sample_ensembles(diffusion_draw(net, process, cfg), cases, cfg)}


def _assert_same(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].soft, b[key].soft, rtol=0, atol=1e-5)
        assert torch.equal(a[key].samples, b[key].samples)
        assert torch.equal(a[key].fused, b[key].fused)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_batch_size_does_not_change_results(sampler: str) -> None:
    cases = _cases()
    ref = _run(cases, batch_size=4, sampler=sampler)  # N: one case per call
    for batch_size in (1, 3, 8, 5):  # one member per call, split cases, two whole cases, uneven mixes
        _assert_same(ref, _run(cases, batch_size=batch_size, sampler=sampler))


def test_order_and_neighbours_do_not_change_results() -> None:
    cases = _cases(4, sizes=(16, 16, 24, 16))  # differing image sizes share chunks too
    ref = _run(cases, batch_size=6)
    _assert_same(ref, _run(list(reversed(cases)), batch_size=6))
    _assert_same({"case2": ref["case2"]}, _run([cases[2]], batch_size=1))


def test_deterministic_for_a_seed_and_seed_matters() -> None:
    cases = _cases(2)
    a, b = _run(cases, batch_size=4, seed=7), _run(cases, batch_size=4, seed=7)
    _assert_same(a, b)
    c = _run(cases, batch_size=4, seed=8)
    assert not torch.equal(a["case0"].soft, c["case0"].soft)
    # members of one case differ from each other
    assert not torch.equal(a["case0"].soft[0], a["case0"].soft[1])


@pytest.mark.usefixtures("one_thread")  # one draw worker: the calls counted are one per chunk
def test_shapes_and_network_calls() -> None:
    cases = _cases(3)
    cfg = SampleConfig(sampler="ddim", steps=2, samples=4, batch_size=8, fusion="vote")
    net = TinyNet()
    process = DiffusionProcess(DiffusionConfig(timesteps=100))
    results = list(sample_ensembles(diffusion_draw(net, process, cfg), cases, cfg))
    assert [r.case_id for r in results] == ["case0", "case1", "case2"]
    assert net.calls == 2 * 2  # 12 members in 8-member calls: 2 calls per step, 2 steps
    r = results[0]
    assert r.samples.shape == r.soft.shape == (4, 1, 16, 16)
    assert r.fused.shape == r.probability.shape == r.uncertainty.shape == (1, 16, 16)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("spacing", ["linear", "quadratic"])
def test_spacing_setting_reaches_the_sampler(spacing: str) -> None:
    cfg = SampleConfig(sampler="ddpm", steps=4, spacing=spacing, samples=2, batch_size=2)
    process = DiffusionProcess(DiffusionConfig(timesteps=100))
    times: list[float] = []
    net = TinyNet()
    net.register_forward_pre_hook(lambda _, args: times.append(float(args[1][0])))
    list(sample_ensembles(diffusion_draw(net, process, cfg), _cases(1), cfg))
    assert times == pytest.approx(process.schedule.sampling_times(4, spacing)[:-1])


def test_bf16_channels_last_runs_and_mostly_agrees() -> None:
    cases = _cases(1)
    a = _run(cases, batch_size=4)["case0"]
    b = _run(cases, batch_size=4, precision="bf16", channels_last=True)["case0"]
    assert b.samples.dtype == torch.float32
    assert (a.soft - b.soft).abs().mean() < 0.05


def test_memory_format_is_its_own_setting() -> None:
    channels_last = torch.channels_last
    plain = prepare_network(TinyNet(), SampleConfig(precision="bf16"), "cpu")
    assert plain.conv.weight.is_contiguous() and not plain.conv.weight.is_contiguous(memory_format=channels_last)
    cl = prepare_network(TinyNet(), SampleConfig(channels_last=True), "cpu")
    assert cl.conv.weight.is_contiguous(memory_format=channels_last)
    back = prepare_network(cl, SampleConfig(), "cpu")  # one network reused with other settings
    assert back.conv.weight.is_contiguous() and not back.conv.weight.is_contiguous(memory_format=channels_last)


def test_micro_batches_give_the_same_ensembles() -> None:
    torch.manual_seed(0)
    net = medsegdiff("s", 2, base_channels=8)
    process = DiffusionProcess(DiffusionConfig(timesteps=100))
    cases = [(f"case{i}", torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(i))) for i in range(2)]
    results = {}
    for micro in (0, 1, 3):
        cfg = SampleConfig(sampler="ddim", steps=2, samples=4, batch_size=8, micro_batch=micro)
        draw = diffusion_draw(prepare_network(net, cfg, "cpu"), process, cfg)
        assert net.micro_batch == micro
        results[micro] = {r.case_id: r for r in sample_ensembles(draw, cases, cfg)}
    for micro in (1, 3):  # equal up to float rounding, which the convolutions' batch size changes
        for case, ref in results[0].items():
            got = results[micro][case]
            torch.testing.assert_close(got.soft, ref.soft, rtol=0, atol=5e-4)
            decided = (ref.soft - 0.5).abs() > 1e-3
            assert torch.equal(got.samples[decided], ref.samples[decided])


def test_relative_area_applies_to_members() -> None:
    cases = _cases(2)
    plain = _run(cases, batch_size=4, samples=6)
    pruned = _run(cases, batch_size=4, samples=6, relative_area=1.0)
    for key in plain:
        areas = plain[key].samples.flatten(1).sum(1)
        kept = pruned[key].samples.flatten(1).sum(1)
        assert torch.equal(kept, torch.where(areas == areas.max(), areas, torch.zeros_like(areas)))


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_do_not_change_results(workers: int) -> None:
    cases = _cases()
    ref = _run(cases, batch_size=8, workers=1)
    _assert_same(ref, _run(cases, batch_size=8, workers=workers))  # cases split inside and across workers
    _assert_same(ref, _run(cases, batch_size=3, workers=workers))


def test_workers_split_rows_at_member_boundaries() -> None:
    from diffuseg.inference.ensemble import _Pending, _split

    a, b = _Pending("a", torch.zeros(1)), _Pending("b", torch.zeros(1))
    runs = _split([(a, 0, 5), (b, 0, 3)], 2)
    assert [[(c.case_id, k0, n) for c, k0, n in run] for run in runs] == [[("a", 0, 4)], [("a", 4, 1), ("b", 0, 3)]]
    assert len(_split([(a, 0, 1)], 4)) == 1  # never more runs than rows


def test_auto_workers_follow_torch_threads() -> None:
    from diffuseg.inference.ensemble import draw_workers

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert draw_workers(SampleConfig(), torch.device("cpu")) == 2
        assert draw_workers(SampleConfig(workers=3), torch.device("cpu")) == 3
        assert draw_workers(SampleConfig(), torch.device("meta")) == 1
    finally:
        torch.set_num_threads(before)


def test_workers_give_the_same_medsegdiff_ensembles() -> None:
    torch.manual_seed(0)
    net = medsegdiff("s", 2, base_channels=8)
    process = DiffusionProcess(DiffusionConfig(timesteps=100))
    cases = [("case0", torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(0)))]
    results = []
    for workers in (1, 2):  # one image: each worker draws a contiguous range of its members, one at a time
        cfg = SampleConfig(sampler="ddpm", steps=2, samples=5, batch_size=5, micro_batch=1, workers=workers)
        draw = diffusion_draw(prepare_network(net, cfg, "cpu"), process, cfg)
        results.append(next(iter(sample_ensembles(draw, cases, cfg))))
    ref, got = results  # equal up to float rounding, which the batch size of the time embedding's matmuls changes
    torch.testing.assert_close(got.soft, ref.soft, rtol=0, atol=5e-4)
    decided = (ref.soft - 0.5).abs() > 1e-3
    assert torch.equal(got.samples[decided], ref.samples[decided])
