"""The ``diffuseg`` command: parse, call one library function, print. No logic of its own.

Every ``UserError`` ends as one ``error:`` line on stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffuseg.errors import UserError


def _cmd_train(a: argparse.Namespace) -> None:
    from diffuseg.config import load_config

    overrides = list(a.overrides)
    if a.data:
        overrides.append(f"data.root={a.data}")
    if a.out:
        overrides.append(f"train.out_dir={a.out}")
    if a.devices:
        overrides.append(f"train.devices={a.devices}")
    if a.num_nodes:
        overrides.append(f"train.num_nodes={a.num_nodes}")
    config = load_config(a.config, overrides)
    from diffuseg.runtime import use_threads
    from diffuseg.training.run import train  # heavy import after the config is known to be good

    use_threads(a.threads)

    run_dir = train(config, resume=a.resume)
    print(f"run folder: {run_dir}")


def _cmd_predict(a: argparse.Namespace) -> None:
    from diffuseg.inference.predict import predict
    from diffuseg.runtime import use_threads

    use_threads(a.threads)
    overrides = list(a.overrides)
    for key, value in (
        ("samples", a.samples),
        ("sampler", a.sampler),
        ("steps", a.steps),
        ("fusion", a.fusion),
        ("relative_area", a.relative_area),
        ("seed", a.seed),
        ("batch_size", a.batch_size),
    ):
        if value is not None:
            overrides.append(f"sample.{key}={value}")
    written = predict(a.checkpoint, a.input, a.output, overrides, save_samples=a.save_samples, layout=a.layout)
    print(f"wrote {written} case(s) to {a.output}")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from diffuseg.evaluation.evaluate import evaluate

    evaluate(a.pred, a.gt, out=a.out, layout=a.layout)


def _cmd_report(a: argparse.Namespace) -> None:
    from diffuseg.evaluation.report import write_report

    page = write_report(a.source, out=a.out)
    print(f"report: {page}")


def _cmd_verify(a: argparse.Namespace) -> None:
    from diffuseg.data.verify import verify_dataset

    summary = verify_dataset(a.dataset, layout=a.layout, foreground=a.foreground)
    print(summary)


def _cmd_info(a: argparse.Namespace) -> None:
    from diffuseg.nets.registry import describe

    print(describe(a.model, image_size=a.image_size, in_channels=a.in_channels))


def _cmd_demo(a: argparse.Namespace) -> None:
    from diffuseg.demo import run_demo

    page = run_demo(out_dir=a.out, data=a.data, steps=a.steps, threads=a.threads)
    print(f"report: {page}")


def _cmd_presets(a: argparse.Namespace) -> None:
    from diffuseg.config import preset_dirs

    names = sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})
    print("\n".join(names))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _labels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label values like 1,4, got {text!r}") from None


THREADS_HELP = "CPU threads (default: OMP_NUM_THREADS, else one per idle core; docs/inference.md)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffuseg", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a YAML preset")
    t.add_argument("config", help="YAML file or preset name (see `diffuseg presets`)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=1000")
    t.add_argument("--data", help="dataset folder (sets data.root)")
    t.add_argument("--out", help="run folder (sets train.out_dir)")
    t.add_argument("--devices", help="Lightning devices, e.g. 1, 4 or auto")
    t.add_argument("--num-nodes", type=int)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.add_argument("--threads", type=int, help=THREADS_HELP)
    t.set_defaults(func=_cmd_train)

    pr = sub.add_parser("predict", help="sample, fuse and write masks with uncertainty")
    pr.add_argument("checkpoint")
    pr.add_argument("input", help="dataset folder or image file(s)")
    pr.add_argument("output", help="output folder (must not be inside the input)")
    pr.add_argument("overrides", nargs="*", help="dotted sample.* overrides")
    pr.add_argument("--samples", type=int)
    pr.add_argument("--sampler", choices=["ddpm", "ddim", "dpm-solver"])
    pr.add_argument("--steps", type=int)
    pr.add_argument("--fusion", choices=["staple", "mean", "vote"])
    pr.add_argument("--relative-area", type=float, help="relative-area post-processing threshold (0 = off)")
    pr.add_argument("--seed", type=int)
    pr.add_argument("--batch-size", type=int, help="ensemble members per network call")
    pr.add_argument("--layout", default="auto", help="input layout when it cannot be detected")
    pr.add_argument("--save-samples", action="store_true")
    pr.add_argument("--threads", type=int, help=THREADS_HELP)
    pr.set_defaults(func=_cmd_predict)

    e = sub.add_parser("evaluate", help="score predictions against ground truth")
    e.add_argument("pred")
    e.add_argument("gt")
    e.add_argument("--out", default=None, help="results.json path (default: PRED/results.json)")
    e.add_argument("--layout", default="auto", help="ground-truth layout")
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="HTML report with figures from a run or results.json")
    r.add_argument("source")
    r.add_argument("--out", default=None)
    r.set_defaults(func=_cmd_report)

    v = sub.add_parser("verify", help="check a dataset and list every problem")
    v.add_argument("dataset")
    v.add_argument("--layout", default="auto")
    v.add_argument(
        "--foreground",
        type=_labels,
        default=(),
        help="label values counted as foreground, e.g. 1,4 (default: any non-zero value)",
    )
    v.set_defaults(func=_cmd_verify)

    i = sub.add_parser("info", help="parameter count and structure of a network")
    i.add_argument("model", help="registry name, e.g. medsegdiff-b")
    i.add_argument("--image-size", type=_positive_int, default=256)
    i.add_argument("--in-channels", type=_positive_int, default=1)
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser("demo", help="train, predict, evaluate and report on bundled LIDC data")
    d.add_argument("--out", default="demo-output")
    d.add_argument("--data", default=None, help="a full dataset folder instead of the bundled one")
    d.add_argument("--steps", type=int, default=None, help="training steps (default: the demo preset's)")
    d.add_argument("--threads", type=int, help=THREADS_HELP)
    d.set_defaults(func=_cmd_demo)

    ps = sub.add_parser("presets", help="list bundled YAML presets")
    ps.set_defaults(func=_cmd_presets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # dotted overrides may follow options (`train demo --data D train.steps=2`): argparse stops the
    # positional list at the first option, so the rest arrive here
    if extra and hasattr(args, "overrides") and not any(x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
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
