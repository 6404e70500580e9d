"""The ``diffuseg`` command line. Each subcommand parses its arguments, calls one library function and
prints; it has no logic of its own. Every ``UserError`` ends as one ``error:`` line on stderr and exit
code 2, without a traceback; so does a full disk or quota (``files.disk_full``) wherever it is met.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

from tqdm import tqdm  # LOADING: a status line on a terminal (as the progress bars) while seconds of imports run

from diffuseg.errors import UserError
from diffuseg.files import disk_full, no_space

# train's options and the fields they set, all run control (config.Role.RUN): a run keeps its preset's recipe
TRAIN_OPTIONS = {
    "data": "data.root",
    "out": "train.out_dir",
    "devices": "train.devices",
    "num_nodes": "train.num_nodes",
    "steps": "train.steps",
}
# train's options that choose its cases (config.Role.CASES): fixed for the life of a run
CASE_OPTIONS = {"fold": "data.fold"}
# predict's options and the sample.* fields they set
PREDICT_OPTIONS = {
    "samples": "sample.samples",
    "sampler": "sample.sampler",
    "steps": "sample.steps",
    "fusion": "sample.fusion",
    "relative_area": "sample.relative_area",
    "seed": "sample.seed",
    "batch_size": "sample.batch_size",
}


def _cmd_train(a: argparse.Namespace) -> None:
    from diffuseg.presets import load_config, seed_configs

    options = [f"{key}={getattr(a, dest)}" for dest, key in TRAIN_OPTIONS.items() if getattr(a, dest)]
    options += [f"{key}={getattr(a, dest)}" for dest, key in CASE_OPTIONS.items() if getattr(a, dest) is not None]
    overrides = [*a.overrides, *options]
    configs = seed_configs(a.config, overrides, a.seeds) if a.seeds else [load_config(a.config, overrides)]
    with tqdm(desc="loading PyTorch Lightning", bar_format="{desc} ...", leave=False, disable=None):  # as LOADING
        from diffuseg.training.run import train  # heavy import after the configs are known to be good
    from diffuseg.checkpoint import checkpoint_file
    from diffuseg.runtime import use_threads

    use_threads(a.threads)
    for config in configs:  # --seeds --resume: a seed whose run has no checkpoint yet starts
        folder = config.train.out_dir
        run_dir = train(config, resume=a.resume and (a.seeds is None or checkpoint_file(folder).is_file()))
        print(f"run folder: {run_dir}")


def _split_cases(
    a: argparse.Namespace, checkpoints: Sequence[str], inputs: list[str], labels: bool = False
) -> tuple[list[str], set[str] | None]:
    """The inputs and case ids of ``--split`` or ``--cases FILE`` (``data.choice.choose_cases``)."""
    from diffuseg.checkpoint import checkpoint_file
    from diffuseg.data.choice import choose_cases

    files = [checkpoint_file(c) for c in checkpoints]
    inputs, cases, line = choose_cases(a.split, a.run, getattr(a, "cases", None), files, inputs, labels)
    if line:
        print(line)
    return inputs, cases


def _cmd_predict(a: argparse.Namespace) -> None:
    from diffuseg.checkpoint import leading_checkpoints
    from diffuseg.inference.predict import predict
    from diffuseg.runtime import use_threads

    use_threads(a.threads)
    checkpoints, items = leading_checkpoints([a.checkpoint, *a.input, a.output, *a.overrides])
    a.input, a.output, overrides = split_predict_positionals(items)
    overrides += [f"{key}={getattr(a, dest)}" for dest, key in PREDICT_OPTIONS.items() if getattr(a, dest) is not None]
    a.checkpoint = checkpoints[0] if len(checkpoints) == 1 else checkpoints
    a.input, cases = _split_cases(a, checkpoints, a.input)
    args = dict(save_samples=a.save_samples, layout=a.layout, overwrite=a.overwrite, cases=cases)
    from diffuseg.inference.distributed import predict_distributed, rank_env

    _check_parts(a.num_parts, a.part_id)
    if a.devices > 1 or a.num_nodes > 1 or rank_env() is not None:
        if a.num_parts is not None:
            raise UserError("--num-parts/--part-id and --devices/--num-nodes (torchrun) both split the cases; use one")
        written = predict_distributed(
            a.devices, a.num_nodes, checkpoint=a.checkpoint, input=a.input, output=a.output, overrides=overrides, **args
        )
    else:
        parts = {"num_parts": a.num_parts or 1, "part_id": a.part_id or 0}
        written = predict(a.checkpoint, a.input, a.output, overrides, **parts, **args)
    print(f"wrote {written} case(s) to {a.output}")


def _check_parts(num_parts: int | None, part_id: int | None) -> None:
    """``--num-parts`` and ``--part-id`` come together: one alone would predict part 0 in every job of an array."""
    if num_parts is not None and part_id is None:
        raise UserError(
            f"--num-parts {num_parts} without --part-id: name the part this job predicts, --part-id 0 .. "
            f"{num_parts - 1} (e.g. the job array's index)"
        )
    if part_id is not None and num_parts is None:
        raise UserError(f"--part-id {part_id} without --num-parts: say how many parts the cases are split into")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from diffuseg.evaluation.evaluate import evaluate
    from diffuseg.inference.provenance import read_provenance, recorded_checkpoints

    checkpoints = recorded_checkpoints(read_provenance(a.pred))  # their runs hold split.json unless --run says
    (gt,), cases = _split_cases(a, checkpoints, [a.gt], labels=True)
    evaluate(a.pred, gt, out=a.out, layout=a.layout, cases=cases, classes=a.classes)


def _cmd_report(a: argparse.Namespace) -> None:
    from diffuseg.evaluation.report import write_report

    page = write_report(a.source, out=a.out, baseline=a.baseline)
    print(f"report: {page}")


def _cmd_verify(a: argparse.Namespace) -> None:
    from diffuseg.data.verify import verify_dataset

    summary = verify_dataset(
        a.dataset, layout=a.layout, foreground=a.foreground, in_channels=a.in_channels, classes=a.classes, fold=a.fold
    )
    print(summary)


def _cmd_info(a: argparse.Namespace) -> None:
    from diffuseg.nets.registry import describe

    print(describe(a.model, image_size=a.image_size, in_channels=a.in_channels))


def _cmd_demo(a: argparse.Namespace) -> None:
    from diffuseg.demo import run_demo

    page = run_demo(out_dir=a.out, data=a.data, steps=a.steps, threads=a.threads)
    print(f"report: {page}")


def _cmd_presets(a: argparse.Namespace) -> None:
    from diffuseg.presets import format_presets

    print(format_presets())


_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")  # key=value or section.key=value; a path has no leading key=


def split_predict_positionals(items: Sequence[str]) -> tuple[list[str], str, list[str]]:
    """``predict``'s positionals after the checkpoint -> (inputs, output, overrides): every ``key=value`` is
    an override, the last other item is the output folder, the ones before it are the inputs."""
    overrides = [x for x in items if _OVERRIDE.match(x)]
    paths = [x for x in items if not _OVERRIDE.match(x)]
    if len(paths) < 2:
        raise UserError(
            "predict needs CHECKPOINT INPUT [INPUT ...] OUTPUT: at least one input (a dataset folder or image "
            f"files) and then the output folder; got {' '.join(paths) or 'none'} "
            "(dotted sample.* overrides such as sample.steps=10 may follow)"
        )
    return paths[:-1], paths[-1], overrides


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffuseg")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from diffuseg import __version__

        return __version__


def _int_from(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``; otherwise "expected ``expected``, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _int_from(1, "a positive integer")
_fold = _int_from(0, "a fold number 0, 1, ...")


def _labels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label values like 1,4, got {text!r}") from None


def _classes(text: str) -> tuple[dict, ...]:
    """``RV=1,Myo=2,LV=3`` (or regions, ``WT=1+2+4,TC=1+4,ET=4``) -> class specs ``{name, values}`` as in
    ``data.classes``; ``labels.label_scheme`` checks them further."""
    specs = []
    for item in (x.strip() for x in text.split(",")):
        name, _, values = item.partition("=")
        try:
            numbers = [int(v) for v in values.split("+")]
        except ValueError:
            numbers = []
        if not name.strip() or not numbers:
            raise argparse.ArgumentTypeError(
                f"expected classes like RV=1,Myo=2,LV=3 (NAME=VALUE, several values joined by +), got {item!r}"
            )
        specs.append({"name": name.strip(), "values": numbers})
    return tuple(specs)


# Dataset layouts, ``diffuseg.data.formats.Layout`` (its readers' registry plus auto); kept here so that
# ``--help`` does not import torch; tests/test_command_line.py checks that the two agree.
LAYOUTS = ("auto", "lidc", "brats", "nnunet", "multi", "classes", "ssl4mis", "paired", "nifti", "images", "labels")
_LAYOUT_HELP = "one of: " + ", ".join(LAYOUTS) + "; see docs/data.md"
FOLD_HELP = (
    "validate on fold K (0-based) of the dataset's splits_final.json, else of a k-fold split by patient "
    "(data.folds, default 5; docs/data.md)"
)
THREADS_HELP = "CPU threads (default: OMP_NUM_THREADS, else one per idle core; docs/inference.md)"


def _add_split_options(parser: argparse.ArgumentParser, split_help: str) -> None:
    parser.add_argument("--split", choices=["train", "val", "test"], help=split_help)
    parser.add_argument(
        "--run", metavar="RUN", help="run folder holding split.json (default for predict: the checkpoint's RUN)"
    )


_DESCRIPTION = """\
Segment medical images with diffusion models (MedSegDiff and the ambiguity paper's diffusion) and get,
beside each mask, the spread of plausible masks: check a dataset, train a model, predict masks with an
uncertainty map, score them against one or several annotators, and read the result as an HTML report."""

_EPILOG = """\
workflow (each step's --help has the details):
  1. verify    diffuseg verify DATASET_FOLDER
  2. train     diffuseg train medsegdiff-b-ddti --data DATASET_FOLDER --out runs/ddti-b
  3. predict   diffuseg predict runs/ddti-b/checkpoints/last.ckpt IMAGES_FOLDER preds/ --samples 25
  4. evaluate  diffuseg evaluate preds/ DATASET_FOLDER
  5. report    diffuseg report preds/

  diffuseg presets        the bundled presets, one per experiment of the papers
  diffuseg info NETWORK   parameter count and structure of a network
  diffuseg demo           all five steps on bundled LIDC data, in minutes on a CPU
docs: README.md and docs/*.md in the repository"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffuseg",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of these; `diffuseg COMMAND --help` for its options"
    )

    t = sub.add_parser(
        "train",
        help="train a model from a YAML preset",
        description="Train a model from a preset or YAML file; the run folder gets the checkpoints, "
        "config.yaml and logs. Example: diffuseg train medsegdiff-b-ddti --data DATASET_FOLDER --out runs/b",
    )
    t.add_argument("config", help="YAML file or preset name (see `diffuseg presets`)")
    t.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides, e.g. train.steps=1000 sample.steps=10",
    )
    t.add_argument("--data", metavar="FOLDER", help="dataset folder (sets data.root; default: the preset's)")
    t.add_argument("--out", metavar="FOLDER", help="run folder (sets train.out_dir; default: the preset's runs/NAME)")
    t.add_argument("--devices", help="Lightning devices, e.g. 1, 4 or auto (sets train.devices; default: auto)")
    t.add_argument("--num-nodes", type=int, metavar="N", help="machines for multi-node training (default: 1)")
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    t.add_argument("--steps", type=_positive_int, help="training steps (sets train.steps)")
    t.add_argument("--fold", type=_fold, metavar="K", help=FOLD_HELP + " (sets data.fold)")
    t.add_argument(
        "--seeds",
        type=_positive_int,
        metavar="N",
        help="train N runs one after another, OUT/seed-1 .. OUT/seed-N with train.seed 1 .. N (a seed ensemble: "
        "predict with all their checkpoints; docs/inference.md)",
    )
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser(
        "predict",
        help="sample, fuse and write masks with uncertainty",
        description="Draw an ensemble of masks per image, fuse them and write the fused mask and an uncertainty "
        "map per image (same format and geometry as the input), plus OUTPUT/config.yaml. The settings not given "
        "here are the checkpoint's sample.* section. Example: diffuseg predict runs/b/checkpoints/last.ckpt "
        "a.png b.png preds/ --samples 5 sample.steps=10",
    )
    pr.add_argument(
        "checkpoint",
        help="a checkpoint written by `diffuseg train`, e.g. RUN/checkpoints/last.ckpt, or its RUN folder; several "
        "(RUN/seed-*/checkpoints/last.ckpt) predict with an ensemble, member k from checkpoint k mod N",
    )
    pr.add_argument("input", nargs="+", help="a dataset folder, or one or more image files")
    pr.add_argument("output", help="output folder, after the inputs (must not be inside an input folder)")
    pr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted sample.* overrides, e.g. sample.steps=10")
    pr.add_argument("--samples", type=int, metavar="N", help="ensemble members per image (sets sample.samples)")
    pr.add_argument("--sampler", choices=["ddpm", "ddim", "dpm-solver"], help="sampler (sets sample.sampler)")
    pr.add_argument("--steps", type=int, metavar="N", help="sampling steps per member (sets sample.steps)")
    pr.add_argument("--fusion", choices=["staple", "mean", "vote"], help="how members are fused (sets sample.fusion)")
    pr.add_argument(
        "--relative-area", type=float, metavar="R", help="relative-area post-processing threshold (0 = off)"
    )
    pr.add_argument("--seed", type=int, help="seed of the members' noise (sets sample.seed; default: the checkpoint's)")
    pr.add_argument("--batch-size", type=int, metavar="N", help="ensemble members per network call")
    pr.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUTS,
        metavar="LAYOUT",
        help=f"input folder layout when it cannot be detected ({_LAYOUT_HELP}; default: auto)",
    )
    pr.add_argument("--save-samples", action="store_true", help="also write every member under OUTPUT/samples/")
    pr.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    pr.add_argument("--overwrite", action="store_true", help="replace another run's predictions in OUTPUT")
    pr.add_argument(
        "--num-parts", type=_positive_int, metavar="N", help="split the cases into N parts (job arrays; with --part-id)"
    )
    pr.add_argument(
        "--part-id", type=int, metavar="I", help="the part to predict, 0 .. N-1 (case i: part i %% N; with --num-parts)"
    )
    pr.add_argument(
        "--devices", type=_positive_int, default=1, metavar="N", help="processes per node (GPUs, or CPU processes)"
    )
    pr.add_argument(
        "--num-nodes", type=_positive_int, default=1, metavar="M", help="nodes (MASTER_ADDR, MASTER_PORT set)"
    )
    _add_split_options(
        pr,
        "predict only the cases of that side of the run's split (RUN/split.json); test: the dataset's own test "
        "cases (its test.list, or nnU-Net's imagesTs/ of INPUT)",
    )
    pr.add_argument("--cases", metavar="FILE", help="predict only the cases this file names (one case id a line)")
    pr.set_defaults(func=_cmd_predict)

    e = sub.add_parser(
        "evaluate",
        help="score predictions against ground truth",
        description="Score a prediction folder against the ground truth: Dice, IoU, HD95, GED and more per case "
        "and as a summary; writes results.json, results.csv and nnU-Net's summary.json. "
        "Example: diffuseg evaluate preds/ DATASET_FOLDER",
    )
    e.add_argument("pred", help="prediction folder written by `diffuseg predict`")
    e.add_argument(
        "gt", help="ground-truth dataset folder (one or several annotators), or a folder of label files (labelsTs)"
    )
    e.add_argument(
        "--out", default=None, help="results.json path; results.csv and summary.json beside it (default: PRED/)"
    )
    e.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUTS,
        metavar="LAYOUT",
        help=f"ground-truth layout ({_LAYOUT_HELP}; default: auto)",
    )
    e.add_argument(
        "--classes",
        default=None,
        help="classes of the label maps, NAME=V[+V...] comma-separated, e.g. RV=1,Myo=2,LV=3 or WT=1+2+4,TC=1+4,ET=4 "
        "(default: data.classes of PRED/config.yaml, else the dataset's own; none: binary)",
    )
    _add_split_options(
        e,
        "score only the cases of that side of the run's split (RUN/split.json; RUN: --run, else the run of the "
        "checkpoint PRED/prediction.json names); test: the dataset's own test cases (its test.list, or nnU-Net's "
        "labelsTs/ of GT)",
    )
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser(
        "report",
        help="HTML report with figures from a run or results.json",
        description="Write an HTML page with the headline metrics, distributions, calibration and case figures. "
        "Example: diffuseg report preds/",
    )
    r.add_argument("source", help="results.json, or a folder holding one (e.g. the prediction folder)")
    r.add_argument("--out", default=None, help="report folder or .html path (default: report/ beside results.json)")
    r.add_argument(
        "--baseline",
        metavar="RUN_OR_PREDICTIONS",
        default=None,
        help="another method's results.json, prediction folder or run folder on the same cases: paired "
        "differences per case with bootstrap 95%% CIs (refused when the cases differ)",
    )
    r.set_defaults(func=_cmd_report)

    v = sub.add_parser(
        "verify",
        help="check a dataset and list every problem",
        description="Read every image and mask of a dataset and list every problem at once. "
        "Example: diffuseg verify DATASET_FOLDER --layout paired",
    )
    v.add_argument("dataset", help="dataset folder")
    v.add_argument(
        "--layout", default="auto", choices=LAYOUTS, metavar="LAYOUT", help=f"{_LAYOUT_HELP} (default: auto)"
    )
    v.add_argument(
        "--foreground",
        type=_labels,
        default=(),
        help="label values counted as foreground, e.g. 1,4 (default: any non-zero value)",
    )
    v.add_argument(
        "--classes",
        type=_classes,
        default=(),
        metavar="NAME=V,...",
        help="check as training with these data.classes, e.g. RV=1,Myo=2,LV=3 (regions: WT=1+2+4,TC=1+4,ET=4); "
        "every file with a label value not declared is named (default: binary, or the classes the dataset "
        "declares)",
    )
    v.add_argument(
        "--in-channels", type=_positive_int, help="check as training with data.in_channels=N (default: first image's)"
    )
    v.add_argument("--fold", type=_fold, metavar="K", help=FOLD_HELP + " (the split reported)")
    v.set_defaults(func=_cmd_verify)

    i = sub.add_parser(
        "info", help="parameter count and structure of a network", description="Example: diffuseg info medsegdiff-b"
    )
    i.add_argument("model", help="registry name, e.g. medsegdiff-b, unet, probunet-aa (see docs/networks.md)")
    i.add_argument("--image-size", type=_positive_int, default=256, help="input size in pixels (default: 256)")
    i.add_argument("--in-channels", type=_positive_int, default=1, help="image channels (default: 1)")
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser(
        "demo",
        help="train, predict, evaluate and report on bundled LIDC data",
        description="Train a small model on the bundled 22-patient LIDC subset, predict, evaluate and report.",
    )
    d.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    d.add_argument("--data", default=None, help="a full dataset folder instead of the bundled one")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo preset's)")
    d.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)
    d.set_defaults(func=_cmd_demo)

    ps = sub.add_parser(
        "presets", help="list the bundled YAML presets", description="The bundled presets, with a line on each."
    )
    ps.set_defaults(func=_cmd_presets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may follow options (`train demo --data D train.steps=2`): argparse leaves them in extra
    if extra and hasattr(args, "overrides") and all(_OVERRIDE.match(x) for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with tqdm(desc="loading PyTorch", bar_format="{desc} ...", leave=False, disable=None):  # LOADING
            import torch  # noqa: F401  every subcommand needs it; its seconds of import would print nothing
        args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if not no_space(err):
            raise
        print(f"error: {disk_full(err.filename or 'the output')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `diffuseg info ... | head`
        sys.stderr.close()
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
