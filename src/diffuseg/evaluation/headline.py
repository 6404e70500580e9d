"""The report's headline: which model and settings made the predictions, and the main metrics first, each with
its reference points.

The headline level is the volume for 3D data (``results.json["volumes"]``: NIfTI or HDF5 volumes whose slices were
all scored; the field reports ACDC and BraTS by per-volume 3D Dice), with the per-slice numbers second; else the
case. Each metric card shows what the empty and the all-foreground mask score on the same cases
(``results.json["references"]``, ``evaluation.references``) and is flagged when the model does not beat the
better of them; with a baseline (``compare``), the paired difference and its bootstrap 95% CI.

``run_info(results)`` reads what ``predict`` wrote beside the masks: ``PRED/config.yaml`` (the resolved
config: network, sampler, steps, members, fusion, uncertainty) and ``PRED/prediction.json`` (checkpoint
path and training step, parameter count; ``inference.provenance``). Either may be missing (predictions from
another tool, or from an older diffuseg): the headline then says what is not recorded.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffuseg.config import Config
from diffuseg.enums import Uncertainty
from diffuseg.errors import UserError
from diffuseg.evaluation.references import REFERENCE_LABELS
from diffuseg.inference.outputs import CONFIG_NAME
from diffuseg.inference.provenance import read_provenance
from diffuseg.inference.uncertainty import LABEL_ENTROPY, map_kind
from diffuseg.methods import DIFFUSING
from diffuseg.presets import load_config, matching_presets

# The metrics a reader looks at first, in this order; GED (and GED at N samples) only where defined.
MAIN_METRICS = ("dice", "iou", "hd95", "ged")
_LABELS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "ged": "GED"}
_LOWER_BETTER = ("hd95", "ged", "ece")  # and their variants (hd95_majority, ged_biased_16, ece_marked, ...)
SUMMARY_KEYS = {"case": "summary", "volume": "volume_summary"}
"""The ``results.json`` summary of each level."""

# What the uncertainty map holds (``inference.uncertainty.map_kind``): (title, colour-bar label, top of its range).
UNCERTAINTY_KINDS: dict[str, tuple[str, str, float]] = {
    Uncertainty.DISAGREEMENT.value: (
        "share of members that disagree with the fused mask",
        "share of members that disagree with the fused mask",
        1.0,
    ),
    Uncertainty.VARIANCE.value: ("variance of the samples, f (1 - f)", "f (1 - f), f = share of samples", 0.25),
    Uncertainty.ENTROPY.value: ("entropy of the samples, in bits", "entropy of f, bits", 1.0),
    LABEL_ENTROPY: (
        "normalised entropy of the members' labels",
        "normalised entropy of the labels",
        1.0,
    ),
}


@dataclass(frozen=True)
class RunInfo:
    """What is known of the run that wrote a prediction folder."""

    config: Config | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None

    @property
    def uncertainty(self) -> str | None:
        return str(self.config.sample.uncertainty) if self.config is not None else None


def run_info(results: dict) -> RunInfo:
    """The prediction folder's ``config.yaml`` and ``prediction.json`` named by ``results["pred"]``."""
    folder = Path(results.get("pred", ""))
    path = folder / CONFIG_NAME
    try:
        config = load_config(path) if path.is_file() else None
    except UserError:  # written by another version or tool: the headline says it is not recorded
        config = None
    return RunInfo(config, read_provenance(folder), path if config is not None else None)


def lower_is_better(metric: str) -> bool:
    """HD95, GED, ECE and diversity (and their variants, per class too): lower is better."""
    base = metric.split("/", 1)[0]
    return base == "diversity" or base.startswith(_LOWER_BETTER)


def headline_level(results: dict) -> str:
    """``"volume"`` when some volume defines the 3D Dice, else ``"case"``."""
    return "volume" if defined(results.get("volume_summary") or {}, "dice") else "case"


def headline_metric(results: dict) -> str:
    """The metric the report leads with: the 3D Dice per volume, else ``primary_metric`` per case."""
    return "dice" if headline_level(results) == "volume" else primary_metric(results["summary"])


def defined(summary: dict, name: str) -> bool:
    s = summary.get(name)
    return isinstance(s, dict) and s.get("mean") is not None and (s.get("n") or 0) > 0


def primary_metric(summary: dict) -> str:
    """GED where any case defines it (several annotators and samples), else Dice."""
    return "ged" if defined(summary, "ged") else "dice"


def main_metrics(summary: dict) -> list[str]:
    """The defined main metrics, then unbiased GED at fixed sample counts (``ged_16``), in order."""
    names = [n for n in MAIN_METRICS if defined(summary, n)]
    names += sorted((n for n in summary if n.startswith("ged_") and n[4:].isdigit() and defined(summary, n)), key=len)
    return names


def headline(results: dict, run: RunInfo, comparison: list[dict] | None = None) -> str:
    """HTML: the model and settings lines, then one card per main metric at the headline level (mean, std,
    median, n; the reference masks' means; the paired difference to the baseline where ``comparison``, the rows
    of ``compare.compare_runs``, has that metric), and for 3D data the per-slice cards below."""
    level = headline_level(results)
    against = {r["metric"]: r for r in comparison or []}
    lines = [_model_line(run), _preset_line(run), _sampling_line(run)]
    body = "".join(f"<p class='run'>{line}</p>" for line in lines)
    body += _cards(results, level, against)
    if level == "volume":
        body += _cards(results, "case", {}, small=True)
    summary = results["summary"]
    if not defined(summary, "ged") and "ged" in summary:
        body += f"<p class='muted'>{html.escape(_ged_note(results))}</p>"
    return f"<section class='headline'>{body}</section>"


def _cards(results: dict, level: str, against: dict[str, dict], small: bool = False) -> str:
    """One level's title line and cards."""
    key = SUMMARY_KEYS[level]
    summary = results.get(key) or {}
    names = main_metrics(summary)
    if not names:
        return ""
    first = headline_metric(results) if not small else None
    if first in names:  # the metric the report leads with (and chooses the cases by) comes first
        names = [first, *(n for n in names if n != first)]
    count = summary[names[0]]["n"] + summary[names[0]]["n_undefined"]
    title = f"Per volume (3D), {count} volume(s)" if level == "volume" else f"Per case, {count} case(s)"
    if small:
        title = f"Per slice (2D), {count} slice(s): second to the 3D numbers above"
    refs = {name: (results.get("references", {}).get(name, {}).get(key) or {}) for name in REFERENCE_LABELS}
    cards = "".join(_card(results, name, summary[name], refs, against.get(name), name == first) for name in names)
    return f"<p class='level'>{html.escape(title)}</p><div class='cards{' small' if small else ''}'>{cards}</div>"


def _card(results: dict, name: str, s: dict, refs: dict[str, dict], paired: dict | None, lead: bool) -> str:
    """One metric's card; ``lead``: the headline metric, marked as such."""
    label = _LABELS.get(name, name.replace("ged_", "GED@")) + (" (headline)" if lead else "")
    unit = f" ({results.get('spacing_unit', 'pixel')})" if name == "hd95" else ""
    lower = lower_is_better(name)
    text = (
        f"<div class='label'>{html.escape(label + unit)}</div><div class='value'>{s['mean']:.3f}</div>"
        f"<div class='sub'>&plusmn; {s['std']:.3f}, median {s['median']:.3f}, n = {s['n']}; "
        f"{'lower' if lower else 'higher'} is better</div>"
    )
    known = {r: refs[r][name]["mean"] for r in refs if defined(refs[r], name)}
    if known:
        text += (
            "<div class='ref'>"
            + " &middot; ".join(f"{REFERENCE_LABELS[r]} {v:.3f}" for r, v in known.items())
            + "</div>"
        )
        best = min(known.values()) if lower else max(known.values())
        if (s["mean"] >= best) if lower else (s["mean"] <= best):
            which = next(REFERENCE_LABELS[r] for r, v in known.items() if v == best)
            text += f"<div class='warn'>no better than the {which}</div>"
    if paired is not None and paired["n"]:
        text += (
            f"<div class='ref'>baseline {paired['baseline_mean']:.3f}: <b>{paired['difference']:+.3f}</b> "
            f"(95% CI {paired['low']:+.3f} to {paired['high']:+.3f}, {paired['n']} paired)</div>"
        )
    return f"<div class='card{' lead' if lead else ''}'>{text}</div>"


def _model_line(run: RunInfo) -> str:
    prov, config = run.provenance, run.config
    network = prov.get("network") or (config.model.name if config is not None else None)
    if network is None:
        return "Model: not recorded (the prediction folder has no config.yaml from <code>diffuseg predict</code>)"
    params = prov.get("parameters")
    text = f"Model: <b>{html.escape(str(network))}</b>"
    if config is not None:
        text += f" ({html.escape(str(config.method))}"
        text += f", {params / 1e6:.2f} M parameters)" if isinstance(params, int) else ")"
    checkpoint, members = prov.get("checkpoint"), prov.get("checkpoints")
    if isinstance(members, list) and members and all(isinstance(m, dict) for m in members):
        each = ", ".join(
            f"<code>{html.escape(str(m.get('checkpoint')))}</code> at step {m.get('step')}" for m in members
        )
        n = len(members)
        return f"{text}; an ensemble of {n} checkpoints (member k from checkpoint k mod {n}): {each}"
    if checkpoint:
        step = prov.get("step")
        text += f"; checkpoint <code>{html.escape(str(checkpoint))}</code>"
        text += f" at step {step:,}" if isinstance(step, int) else ""
    else:
        text += "; checkpoint not recorded (no prediction.json)"
    run_folder = prov.get("run_folder") or (config.train.out_dir if config is not None else "")
    if run_folder:
        text += f"; run folder <code>{html.escape(str(run_folder))}</code> (its config.yaml is the training config)"
    return text


def _preset_line(run: RunInfo) -> str:
    if run.config is None:
        return "Preset: not recorded"
    presets = matching_presets(run.config)
    if not presets:
        return "Preset: none of the bundled presets has these training settings (a custom config or overrides)"
    names = " = ".join(f"<b>{html.escape(p)}</b>" for p in presets)
    return f"Preset: {names} (the training settings are the preset's; run length, data and output folders aside)"


def _sampling_line(run: RunInfo) -> str:
    if run.config is None:
        return "Sampling: not recorded"
    s = run.config.sample
    if run.config.method not in DIFFUSING:
        sampler = f"{run.config.method} (no diffusion sampler)"
    if s.tta:
        sampler += "; test-time augmentation (member k: the image under flip/turn k mod 8)"
    else:
        sampler = f"{str(s.sampler).upper().replace('_', '-')}, {s.steps} steps ({s.spacing} spacing)"
    area = f"relative-area post-processing {s.relative_area:g}" if s.relative_area else "no post-processing"
    kind = map_kind(s.uncertainty, binary=len(run.config.data.classes) < 2)
    title = UNCERTAINTY_KINDS[kind][0]
    return html.escape(
        f"Sampling: {sampler}; {s.samples} member(s) fused by {s.fusion}; {area}; "
        f"uncertainty: {title}; seed {s.seed}; precision {s.precision}"
    )


def _ged_note(results: dict) -> str:
    annotators = results.get("annotators")
    samples = results["summary"].get("samples", {}).get("mean")
    if isinstance(annotators, int) and annotators < 2:
        why = f"it needs two or more annotators and this ground truth has {annotators}"
    elif isinstance(samples, (int, float)) and samples < 2:
        why = "it needs two or more samples per case"
    else:
        why = "no case defines it"
    return f"GED is undefined here ({why}); cases are chosen by Dice."
