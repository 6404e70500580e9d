"""What every benchmark script shares: the machine it ran on, timing, Markdown tables and plots.

Nothing here measures the package; it only describes the machine and writes results. Tables and figures are
written atomically (temporary file in the same folder, then rename), like everything else in diffuseg.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuseg.errors import UserError
from diffuseg.files import atomic_path, write_text_atomic
from diffuseg.runtime import cpu_flags, load_averages

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------- the machine
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages as text ("n/a" where the OS has none)."""
    loads = load_averages()
    return "/".join(f"{v:.1f}" for v in loads) if loads else "n/a"


def machine() -> dict[str, str]:
    """A description of this machine and software, for the header of every result file."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile") if f in flags]
    return {
        "date (UTC)": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": _cpu_model(),
        "logical cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "vector ISA": " ".join(isa) or "n/a",
        "torch": torch.__version__,
        "oneDNN (mkldnn)": str(torch.backends.mkldnn.is_available()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "load average at start (1/5/15 min)": load_average(),
        "command": command(),
    }


def command() -> str:
    """This process's command line as it is typed in the repository root (``.venv/bin/python benchmarks/...``)."""
    script = Path(sys.argv[0]).resolve()
    repo = Path(__file__).resolve().parents[1]
    shown = script.relative_to(repo) if script.is_relative_to(repo) else script.name
    return " ".join([".venv/bin/python", str(shown), *sys.argv[1:]])


def machine_markdown(info: Mapping[str, str]) -> str:
    return markdown_table(["machine", ""], [[k, v] for k, v in info.items()])


def print_machine(info: Mapping[str, str]) -> None:
    print("== machine ==")
    for k, v in info.items():
        print(f"  {k}: {v}")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------- timing
def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``: a ``UserError`` (missing data, a bad config value) is one ``error:`` line and
    exit status 2, no traceback."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3, max_seconds: float = 60.0) -> dict:
    """Run ``fn`` ``warmup`` times untimed, then up to ``repeats`` timed (fewer when ``max_seconds`` runs out).

    Returns ``{"best": s, "median": s, "n": runs}``. The best run is the one least disturbed by other
    processes on a shared machine; the median shows the spread.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return {"best": min(times), "median": statistics.median(times), "n": len(times)}


# --------------------------------------------------------------------------------------------- statistics
def paired(a: np.ndarray, b: np.ndarray, draws: int = 10000, scale: float = 100.0, digits: int = 2) -> str:
    """Mean of ``scale`` x (a - b) (Dice points at 100) and its 95 % bootstrap interval over cases."""
    d = scale * (a - b)
    rng = np.random.default_rng(0)
    means = rng.choice(d, (draws, len(d))).mean(1)
    lo, hi = np.percentile(means, 2.5), np.percentile(means, 97.5)
    return f"{d.mean():+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


# --------------------------------------------------------------------------------------------- tables
def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant figures (thousands kept whole), None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 10**digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, title: str, info: Mapping[str, str], sections: Sequence[tuple[str, str]]) -> Path:
    """Write ``# title``, the machine table and ``(heading, body)`` sections to ``path`` atomically."""
    parts = [f"# {title}\n", machine_markdown(info)]
    for heading, body in sections:
        parts.append(f"## {heading}\n\n{body.rstrip()}\n")
    write_text_atomic(path, "\n".join(parts))
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        _pyplot().close(fig)
    print(f"wrote {path}")
    return path


LEGEND_INSIDE = 5  # a line plot with more series, or a label longer than LEGEND_LABEL, draws its legend below the axes
LEGEND_LABEL = 40
COLOURS = 10  # matplotlib's default colour cycle


def line_plot(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    hline: tuple[float, str] | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """A line plot written to ``path`` (PNG, atomically); returns ``path``.

    Args:
        path: the PNG file.
        series: one line per ``label -> (xs, ys)``.
        xlabel, ylabel, title: the axes' labels and the title.
        logx: a log x axis, ticked at the measured x values.
        logy: a log y axis.
        hline: a horizontal reference line ``(y, label)``, or None.
        errors: error bars (+- the value at each point) of the series they name, or None.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (label, (xs, ys)) in enumerate(series.items()):
        cycle = i // COLOURS % 3  # past the colour cycle's ten, dashed with squares, then dotted with triangles
        style = {"marker": "os^"[cycle], "linestyle": ("-", "--", ":")[cycle], "label": label}
        if errors and label in errors:
            ax.errorbar(xs, ys, yerr=errors[label], capsize=3, **style)
        else:
            ax.plot(xs, ys, **style)
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", label=hline[1])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:  # ticks at the measured x values, written as plain numbers
        ax.set_xscale("log")
        ticks = sorted({x for xs, _ in series.values() for x in xs})
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(series) > LEGEND_INSIDE or max(map(len, series), default=0) > LEGEND_LABEL:  # there it hides no curve
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    else:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def bar_plot(
    path: Path,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    ylabel: str,
    title: str,
    logy: bool = False,
    hline: tuple[float, str] | None = None,
) -> Path:
    """A bar chart with the value written on each bar, written to ``path`` (PNG, atomically); returns ``path``.

    Args:
        path: the PNG file.
        labels: one label per bar, under it.
        values: the bars' heights.
        ylabel, title: the y axis' label and the title.
        logy: a log y axis.
        hline: a horizontal reference line ``(y, label)``, or None.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels)), 4))
    bars = ax.bar(range(len(labels)), values, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    for bar, v in zip(bars, values):
        ax.annotate(
            fmt(float(v)), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7
        )
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", label=hline[1])
        ax.legend(fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set(ylabel=ylabel, title=title)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path)
