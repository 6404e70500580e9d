"""``predict(checkpoint, input, output, overrides)``: ensembles for every case of a dataset, fused, written.

Steps: load the checkpoint (config + EMA network, ``methods.inference_model``); apply the
``sample.*`` overrides; open INPUT (a dataset folder in any layout ``data.formats`` reads, or image files);
check that no two cases would write files of one name; for each case, resize the image to the model size,
draw ``sample.samples`` members ``sample.batch_size`` at a time with per-member seeds, apply relative-area
post-processing, fuse (``staple`` | ``mean`` | ``vote``) and compute the uncertainty map
(``inference.ensemble``); write the fused mask, the uncertainty and, with ``save_samples``, every member in
the input's own format and geometry (``inference.writers``). With several classes (the checkpoint's
``data.classes``) the input is opened with those classes, the fused mask and samples are label maps written in
the dataset's own label values (ACDC 0/1/2/3, BraTS 0/1/2/4; HDF5 in, HDF5 ``label`` out; slices of a volume
reassembled), the uncertainty is the normalised entropy of the members' labels, and ``prediction.json`` and
the manifest (its config) record the classes.

A labelled input is read for its images alone: no case's label files are decoded, so label values the
checkpoint's classes do not know are no obstacle (a dataset that declares its classes, nnU-Net's
``dataset.json``, must still declare the checkpoint's when it is opened). Nothing is written before the run is
known to be valid (every input's header included, ``formats.files.check_header``, and the first case's channels
against the model's); a run that fails before any case is done leaves nothing new in OUTPUT (the files it made
are removed, the folder too when it made it).
Then, under the folder's lock, the run is compared with the one OUTPUT already holds (``inference.manifest``):
the same run resumes (finished cases are skipped unless their input files changed since,
``manifest.same_input``: those are predicted again), another is refused unless ``overwrite`` (which first
deletes the files the old run's manifests record). ``OUTPUT/config.yaml`` (the resolved config) and the
manifest are written, and each case is marked done once its files are in place. ``OUTPUT/prediction.json``
names the checkpoint and network (``inference.provenance``).

Several checkpoints (``inference.models``): member k of every case comes from checkpoint ``k mod N``; the run
key holds every checkpoint's SHA-256 in order, so another list is another run. ``sample.tta``: member k sees its
image under a flip or turn, mapped back (``inference.tta``).

Sharding (nnU-Net's convention): with ``num_parts`` N, output unit j (a 2D case, or a whole volume whose
slices are cases) belongs to part ``j % N``; each part has its own manifest and lock, so N processes can write
into one OUTPUT. Runs on ``device`` (default: the first CUDA device when there is one, else the CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from diffuseg.config import Config, config_from_dict, config_to_dict, merge, parse_overrides, save_config
from diffuseg.data.case import Case
from diffuseg.data.formats import Entry, Reader, open_input
from diffuseg.data.formats.dicom import is_series_folder
from diffuseg.data.formats.files import check_header, is_image_file, name_of
from diffuseg.data.progress import progress
from diffuseg.data.spacing import check_fits
from diffuseg.data.splits import select_cases
from diffuseg.data.transforms import Fit, model_channels_problem, model_input
from diffuseg.data.verify import is_colour
from diffuseg.enums import Resize
from diffuseg.errors import DatasetError, UserError
from diffuseg.files import remove_output, remove_stale_temps
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.inference.manifest import Manifest, RunKey, input_record, manifest_name, read_manifests, same_input
from diffuseg.inference.models import Model, load_models, member_count
from diffuseg.inference.outputs import CONFIG_NAME, SAMPLES, UNCERTAINTY
from diffuseg.inference.provenance import write_provenance
from diffuseg.inference.writers import PredictionWriter, check_output, check_output_names
from diffuseg.methods import check_image_size, make_draw, steps_per_member
from diffuseg.runlock import folder_lock, holder_of
from diffuseg.runtime import resolve_sample_precision

SETUP_LOCK = ".diffuseg-predict-setup.lock"  # held for a part's set-up only
SETUP_WAIT = 120.0  # seconds a part waits for another part's set-up (a few file operations) to end


def part_lock_name(part_id: int, num_parts: int) -> str:
    return ".diffuseg-predict.lock" if num_parts == 1 else f".diffuseg-predict.part-{part_id}-of-{num_parts}.lock"


def apply_overrides(config: Config, overrides: Sequence[str], checkpoints: int = 1) -> Config:
    """``config`` with dotted ``sample.*`` overrides applied, then the members of ``checkpoints`` checkpoints
    (``models.member_count``); ``UserError`` for any other key or a bad value."""
    values = parse_overrides(overrides, example="sample.steps=10")
    others = sorted(k for k in values if k != "sample")
    if others:
        raise UserError(f"predict takes only sample.* overrides (got {', '.join(others)})")
    try:
        config = config_from_dict(merge(config_to_dict(config), values))
    except UserError as err:
        raise UserError(f"overrides: {err}") from None
    given = values.get("sample")
    return member_count(config, checkpoints, set(given) if isinstance(given, dict) else set())


def _model_inputs(
    reader: Reader, indices: Sequence[int], config: Config, pending: deque[Case], inputs: dict[str, list[dict]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Decode the cases ``indices`` one by one, keep them in ``pending`` for the writer, yield (case id,
    model-size image) prepared as in training (``transforms.model_input``: as ``data.resize`` and ``data.spacing`` say,
    then match the channels; images read through ``data.ct_window`` or the run's CT statistics when it set them).
    Each case's input records (``manifest.input_record``) go to ``inputs`` before its files are decoded."""
    known: dict[str, dict] = {}
    for index in indices:
        entry = reader.entries[index]
        inputs[entry.case_id] = [input_record(p, known) for p in entry.images]
        case = reader[index]
        pending.append(case)
        yield case.case_id, _model_image(case, config)


def _model_image(case: Case, config: Config) -> torch.Tensor:
    """``transforms.model_input`` of ``case``; ``UserError`` naming its files when the model cannot read its
    channels."""
    d = config.data
    try:
        colour = is_colour(case.geometry)
        return model_input(case.image, d.image_size, d.in_channels, case.case_id, colour, Fit.of(d), case.geometry)
    except ValueError:
        stored = int(case.image.shape[0])
        name = case.geometry.volume_id or case.case_id
        raise UserError(model_channels_problem(case.geometry.sources, name, stored, d.in_channels)) from None


def _as_paths(input: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    if isinstance(input, (str, os.PathLike)):
        return [input]
    return list(input)


@dataclass
class Run:
    """A validated prediction, nothing written yet. ``models``: the checkpoints (one, or an ensemble) with the
    run's ``config``. ``units``: reader indices per output unit, in order."""

    models: list[Model]
    inputs: list[str | os.PathLike]
    out: Path
    config: Config
    reader: Reader
    device: torch.device
    save_samples: bool
    key: RunKey
    units: list[list[int]] = field(default_factory=list)


def prepare(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    input: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    overrides: Sequence[str] = (),
    save_samples: bool = False,
    layout: str = "auto",
    device: torch.device | str | None = None,
    cases: Collection[str] | None = None,
) -> Run:
    """Check everything that can be checked before writing: the output folder, the inputs, the checkpoint,
    the overrides, the dataset and its output names. ``UserError`` (``DatasetError``) on any problem.

    Args:
        checkpoint: the checkpoint file to predict with (or its run folder), or several: an ensemble.
        input: a dataset folder or image file(s).
        output: the prediction folder.
        overrides: dotted ``sample.*`` overrides, e.g. ``sample.steps=10``.
        save_samples: also write every member.
        layout: the input's layout (``data.formats``), ``auto`` to detect it.
        device: where to sample (default: the first CUDA device when there is one, else the CPU).
        cases: only these case ids (``--split``, ``data.splits.split_cases``); ``None``: all.
    """
    inputs = _as_paths(input)
    out = Path(output)
    check_output(out, inputs)  # before any slow work
    for item in inputs:
        if not Path(item).exists() and not Path(item).is_symlink():  # a dangling link: named as one below
            raise UserError(f"{item}: input not found")
    models = load_models(_as_paths(checkpoint))
    for model in models:
        try:
            check_image_size(model.config)  # a size too small for one image at a time: before any output is written
        except UserError as err:
            raise UserError(f"{model.path}: {err}") from None
    config = apply_overrides(models[0].config, overrides, len(models))
    d = config.data
    reader = select_cases(open_input(inputs, layout, d.foreground, d.classes), cases, str(inputs[0]))
    reader.entries = [dataclasses.replace(e, masks=()) for e in reader.entries]  # images alone: no label decoded
    reader.set_intensity(d.intensity)  # the training run's window or CT statistics, from the checkpoint's config
    if reader.problems:
        raise DatasetError(str(inputs[0]), reader.problems)
    if len(reader) == 0:
        raise UserError(f"{inputs[0]}: no images to predict")
    _check_headers(reader, str(inputs[0]))
    if d.resize == Resize.SPACING:  # every input's spacing and size, from headers: none is cropped
        check_fits(reader, range(len(reader)), d.image_size, d.spacing)
    _model_image(reader[0], config)  # the channels: a model that cannot read them fails here, not after writing
    check_output_names(reader.entries)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = resolve_sample_precision(config.sample.precision, device)  # config.yaml records what ran
    config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, precision=precision))
    ids = [e.case_id for e in reader.entries]
    if len(set(ids)) != len(ids):
        raise UserError(f"{inputs[0]}: the layout reader gave two cases one id ({_repeated(ids)})")
    digests = "+".join(m.sha256 for m in models)
    volumes = {e.case_id: e.volume_id for e in reader.entries if e.volume_id is not None}
    key = RunKey(digests, config_to_dict(config), save_samples, tuple(ids), volumes)
    index = {cid: i for i, cid in enumerate(ids)}
    units = [[index[cid] for cid in unit] for unit in key.units()]
    return Run(models, inputs, out, config, reader, device, save_samples, key, units)


def _check_headers(reader: Reader, where: str) -> None:
    """``DatasetError`` listing every input image whose header shows it cannot be decoded (``check_header``: 0
    wide, truncated, a decompression bomb, ...), so that a bad file stops the run before anything is written."""
    problems = []
    paths = list(dict.fromkeys(p for e in reader.entries for p in e.images))
    for path in progress(paths, "check headers", "file"):
        try:
            check_header(path)
        except UserError as err:
            problems.append(str(err))
    if problems:
        raise DatasetError(where, problems)


def _repeated(ids: Sequence[str]) -> str:
    seen: set[str] = set()
    return next(i for i in ids if i in seen or seen.add(i))


def _refuse_or_remove(run: Run, others: list[Manifest], overwrite: bool) -> None:
    """Refuse a folder that holds another run; with ``overwrite`` delete that run's recorded files."""
    if not others:
        return
    if not overwrite:
        diffs = run.key.differences(others[0].key)
        raise UserError(
            f"{run.out}: holds another prediction run ({others[0].path.name}), which differs in "
            f"{'; '.join(diffs)}; use --overwrite to replace it, or choose another folder"
        )
    for m in others:
        live = holder_of(run.out / part_lock_name(m.part_id, m.num_parts))
        if live and live.get("pid") != os.getpid():  # our own part lock is held by us
            raise UserError(
                f"{run.out}: the run to overwrite is still being written (pid {live.get('pid')} on "
                f"{live.get('host')}); stop it first"
            )
    for m in others:
        for f in m.files():
            remove_output(f)
        m.path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (run.out / SAMPLES).rmdir()  # only when empty


def _refuse_unrecorded(run: Run, overwrite: bool) -> None:
    """``UserError`` when OUTPUT, holding no manifest of this run, has a file at one of its output names (a
    prediction written without a manifest, or a file of the user's), unless ``overwrite``."""
    if overwrite or not run.out.is_dir():
        return
    names = {(e.volume_id or e.case_id).casefold() for e in run.reader.entries}
    names |= {n + UNCERTAINTY for n in names}
    for p in sorted(run.out.iterdir()):
        if ((p.is_file() and is_image_file(p)) or is_series_folder(p)) and name_of(p).casefold() in names:
            raise UserError(
                f"{p}: exists, and no manifest in {run.out} says which run wrote it; remove it, "
                "choose another folder, or use --overwrite to write over it"
            )


def open_part(run: Run, part_id: int, num_parts: int, overwrite: bool, stack: contextlib.ExitStack) -> Manifest:
    """Take part ``part_id``'s lock (held until ``stack`` closes), check or clear OUTPUT, write
    ``config.yaml`` and the part's manifest; returns the manifest (cases done elsewhere marked done).

    Args:
        run: the validated prediction (``prepare``).
        part_id: this part, ``0 <= part_id < num_parts``.
        num_parts: the parts the output units are spread over (unit j goes to part ``j % num_parts``).
        overwrite: replace another run that OUTPUT holds instead of refusing.
        stack: holds the part's lock until it closes.
    """
    with folder_lock(run.out, "predict set-up", SETUP_LOCK, wait=SETUP_WAIT):
        stack.enter_context(
            folder_lock(run.out, f"predict part {part_id} of {num_parts}", part_lock_name(part_id, num_parts))
        )
        for folder in (run.out, run.out / SAMPLES):  # temporaries of killed runs (their writers are gone)
            remove_stale_temps(folder)
        manifests = read_manifests(run.out)
        others = [m for m in manifests if run.key.differences(m.key)]
        _refuse_or_remove(run, others, overwrite)
        same = [m for m in manifests if m not in others]
        if not same:  # the first part of this run here: nothing of it is written yet
            _refuse_unrecorded(run, overwrite)
        done: dict[str, dict] = {}  # case id -> its record in a manifest of this run that says it is done
        for m in same:
            for cid in m.done_ids():
                done[cid] = m.cases[cid]
        path = run.out / manifest_name(part_id, num_parts)
        manifest = Manifest(path, run.key, part_id, num_parts, " + ".join(m.path for m in run.models))
        entries = run.reader.entries
        changed: list[str] = []
        known: dict[str, dict] = {}  # input records taken now, by path
        for j, unit in enumerate(run.units):
            if j % num_parts != part_id:
                continue
            inputs = {
                entries[i].case_id: _unchanged(done.get(entries[i].case_id), entries[i], known, changed) for i in unit
            }
            kept = all(v is not None for v in inputs.values())
            if not kept and any(cid in done for cid in inputs):  # its old files are stale: remove them
                for m in same:
                    for f in m.files(inputs):
                        remove_output(f)
            for i in unit:
                cid = entries[i].case_id
                manifest.cases[cid] = {
                    "source": str(entries[i].images[0]),
                    "inputs": inputs[cid] if kept else [],
                    "done": kept,
                    "files": done[cid]["files"] if kept else [],
                }
        _note_changed(changed)
        save_config(run.config, run.out / CONFIG_NAME)
        write_provenance(run.out, run.models, run.config)
        manifest.save()
    return manifest


def _unchanged(record: dict | None, entry: Entry, known: dict[str, dict], changed: list[str]) -> list[dict] | None:
    """The input records of ``entry`` now when the case is recorded done (``record``) from the same content, else
    ``None`` (not done, or done from other content: its files then go to ``changed``)."""
    if record is None:
        return None
    before = record.get("inputs")
    if not isinstance(before, list) or len(before) != len(entry.images):  # recorded without its inputs
        changed.append(str(entry.images[0]))
        return None
    now = [same_input(r, p, known) for r, p in zip(before, entry.images)]
    changed += [str(p) for r, p in zip(now, entry.images) if r is None]
    return None if any(r is None for r in now) else now


def _note_changed(files: list[str], shown: int = 5) -> None:
    files = list(dict.fromkeys(files))
    if files:
        more = f" and {len(files) - shown} more" if len(files) > shown else ""
        print(
            f"note: {', '.join(files[:shown])}{more}: changed since predicted (or recorded without a content "
            "digest); predicting again",
            file=sys.stderr,
        )


def run_part(run: Run, manifest: Manifest, show_progress: bool = True) -> int:
    """Predict the cases of ``manifest`` not yet done; returns how many were written (a volume, whose slices are
    predicted one by one, counts once)."""
    entries = run.reader.entries
    part_units = [u for u in run.units if entries[u[0]].case_id in manifest.cases]  # a volume is one case
    todo_units = [u for u in part_units if not all(manifest.cases[entries[i].case_id]["done"] for i in u)]
    indices = [i for u in todo_units for i in u]
    if len(todo_units) < len(part_units):
        print(
            f"resuming: {len(part_units) - len(todo_units)} of {len(part_units)} case(s) already done",
            file=sys.stderr,
        )
    unit_of = {entries[i].case_id: tuple(entries[k].case_id for k in u) for u in todo_units for i in u}
    volume_units = {entries[u[0]].volume_id: unit_of[entries[u[0]].case_id] for u in todo_units}
    config = run.config
    total = len(indices) * config.sample.samples * steps_per_member(config)
    bar = tqdm(total=total, unit="step", desc="predict", dynamic_ncols=True, disable=not show_progress)
    draws = [  # each checkpoint's own recipe, the run's sample.*; member-steps: the bar moves within a case
        make_draw(
            dataclasses.replace(m.config, sample=config.sample),
            prepare_network(m.net, config.sample, run.device),
            m.process,
            progress=bar.update,
        )
        for m in run.models
    ]
    pending: deque[Case] = deque()
    records: dict[str, list[dict]] = {}  # case id -> its input records, taken before it is decoded
    written = items = 0  # output cases (a 2D image, or a volume of slices) and 2D images predicted
    scheme = config.data.scheme
    try:
        writer = PredictionWriter(run.out, run.inputs, run.save_samples, scheme, Fit.of(config.data))
        with writer:
            inputs = _model_inputs(run.reader, indices, config, pending, records)
            results = sample_ensembles(draws, inputs, config.sample, device=run.device, scheme=scheme)
            for result in results:
                case = pending.popleft()
                if case.case_id != result.case_id:  # sample_ensembles yields in input order
                    raise RuntimeError(f"ensemble of {result.case_id} arrived for case {case.case_id}")
                files = writer.write(case, result.fused, result.uncertainty, result.samples, result.class_uncertainty)
                items += 1
                bar.set_postfix_str(f"{items}/{len(indices)} images", refresh=False)
                if files:  # a 2D case, or the last slice of a volume: its files are in place
                    manifest.mark_done(unit_of[case.case_id], files, records)
                    manifest.save(force=False)
                    written += 1
            for volume_id, files in writer.flush_all():  # volumes with slices missing from the input
                manifest.mark_done(volume_units[volume_id], files, records)
                written += 1
    finally:
        bar.close()
        manifest.save()
    return written


def predict(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    input: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    overrides: Sequence[str] = (),
    save_samples: bool = False,
    layout: str = "auto",
    *,
    overwrite: bool = False,
    num_parts: int = 1,
    part_id: int = 0,
    device: torch.device | str | None = None,
    show_progress: bool = True,
    cases: Collection[str] | None = None,
) -> int:
    """Predict every case of ``input`` (of part ``part_id`` of ``num_parts``) into ``output``; returns the
    number of cases written now, a volume counting once (those done by an earlier run of the same command are
    skipped).

    Raises ``UserError`` for a missing, corrupt or foreign checkpoint, bad overrides, unreadable inputs
    (``DatasetError`` lists every structural problem), clashing output names, a bad output folder, or an output
    folder that holds another run (unless ``overwrite``).

    Args:
        checkpoint: the checkpoint file (or its run folder); it holds the config and the EMA weights. Several:
            an ensemble, member k from checkpoint ``k mod N`` (``inference.models``).
        input: a dataset folder (any layout ``data.formats`` reads) or image file(s).
        output: the prediction folder; not inside an input folder (input files are never overwritten).
        overrides: dotted ``sample.*`` overrides, e.g. ``sample.steps=10``; any other key is refused.
        save_samples: also write every member (``OUTPUT/samples``).
        layout: the input's layout, ``auto`` to detect it.
        overwrite: replace another run that ``output`` holds (its recorded files are deleted first).
        num_parts: the parts the output units are spread over (nnU-Net's sharding).
        part_id: the part this call predicts, ``0 <= part_id < num_parts``.
        device: where to sample (default: the first CUDA device when there is one, else the CPU).
        show_progress: show a progress bar of member-steps.
        cases: only these case ids (``--split``); ``None``: every case.
    """
    check_part(part_id, num_parts)
    run = prepare(checkpoint, input, output, overrides, save_samples, layout, device, cases)
    existed = run.out.is_dir()
    before = set(run.out.iterdir()) if existed else set()
    manifest = None
    try:
        with contextlib.ExitStack() as stack:
            manifest = open_part(run, part_id, num_parts, overwrite, stack)
            return run_part(run, manifest, show_progress)
    except BaseException:
        if num_parts == 1 and (manifest is None or not manifest.done_ids()):  # parts may be writing beside us
            _remove_new(run.out, before, existed)
        raise


def _remove_new(out: Path, before: set[Path], existed: bool) -> None:
    """Remove what a failed run made in ``out``: every entry not in ``before``, and ``out`` itself when it did not
    exist (and is empty now)."""
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p not in before:
            remove_output(p)
    if not existed:
        with contextlib.suppress(OSError):
            out.rmdir()


def check_part(part_id: int, num_parts: int) -> None:
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise UserError(f"--part-id {part_id} --num-parts {num_parts}: need 0 <= part-id < num-parts")
