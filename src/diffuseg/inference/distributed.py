"""One prediction spread over processes: ``diffuseg predict --devices N [--num-nodes M]``.

Each process is a rank of ``torch.distributed`` (backend ``nccl`` on GPUs, ``gloo`` on CPUs) and predicts part
``RANK`` of ``WORLD_SIZE`` (``inference.predict``'s sharding: output unit j goes to rank ``j % WORLD_SIZE``),
on ``cuda:LOCAL_RANK`` when there are GPUs, else on the CPU. Members are seeded by (case, member), so the
union of the parts is the single run's output. The processes are started with the elastic launch API of
``torch.distributed.run`` (what ``torchrun`` uses), or come from ``torchrun`` itself: a process that finds
``RANK`` and ``WORLD_SIZE`` in its environment is a rank already. On several nodes every node runs the same
command with ``MASTER_ADDR`` and ``MASTER_PORT`` set to one node's address and a free port.

The ranks agree after the set-up and at the end (an all-reduce of a failure flag), so a ``UserError`` in one
rank ends all of them with that message instead of leaving the others waiting.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import torch
import torch.distributed as dist

from diffuseg.errors import UserError
from diffuseg.inference.predict import open_part, prepare, run_part
from diffuseg.runtime import keep_freed_memory


def rank_env() -> tuple[int, int, int] | None:
    """``(RANK, WORLD_SIZE, LOCAL_RANK)`` from a torchrun-style environment, ``None`` outside one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))


def predict_distributed(devices: int, num_nodes: int = 1, **predict_args: Any) -> int:
    """Predict with ``devices`` processes per node on ``num_nodes`` nodes; returns the cases this node
    predicted. ``predict_args``: ``checkpoint``, ``input``, ``output``, ``overrides``, ``save_samples``,
    ``layout``, ``overwrite``, ``cases`` as for ``predict``. ``UserError`` as ``predict`` raises it."""
    if rank_env() is not None:  # started by torchrun: this process is one rank
        return _outcome({0: rank_main(predict_args)})
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if torch.cuda.is_available() and devices > torch.cuda.device_count():
        raise UserError(f"--devices {devices}: this node has {torch.cuda.device_count()} GPU(s); one process per GPU")
    args = {
        k: predict_args[k] for k in ("checkpoint", "input", "output", "overrides", "save_samples", "layout", "cases")
    }
    prepare(**args)  # every check that needs no lock, here: one clear error before any process starts
    if num_nodes == 1:
        endpoint, run_id = "localhost:0", str(uuid.uuid4())
    else:
        endpoint = f"{os.environ.get('MASTER_ADDR', 'localhost')}:{os.environ.get('MASTER_PORT', '29500')}"
        run_id = os.environ.get("DIFFUSEG_RUN_ID", "diffuseg-predict")
    config = LaunchConfig(
        min_nodes=num_nodes,
        max_nodes=num_nodes,
        nproc_per_node=devices,
        run_id=run_id,
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        max_restarts=0,
        start_method="spawn",
    )
    try:
        results = elastic_launch(config, rank_main)(predict_args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise UserError(
            f"predict: worker rank {rank} failed (exit code {failure.exitcode}; its output is above); "
            "rerun the same command to finish the cases not done"
        ) from None
    return _outcome(results)


def _outcome(results: dict[int, dict[str, Any]]) -> int:
    errors = [r["error"] for _, r in sorted(results.items()) if r["error"]]
    if errors:
        raise UserError(errors[0])
    if any(r["stopped"] for r in results.values()):
        raise UserError("predict: stopped because a rank on another node failed (its message is on that node)")
    return sum(r["written"] for r in results.values())


def rank_main(predict_args: dict[str, Any]) -> dict[str, Any]:
    """One rank: join the process group, predict part RANK of WORLD_SIZE; ``{"written", "error"}``."""
    rank, world, local = rank_env() or (0, 1, 0)
    keep_freed_memory()  # a spawned process: the parent's allocator settings do not carry over
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        return _predict_rank(predict_args, rank, world, device)
    finally:
        dist.destroy_process_group()


def _any_failed(error: str | None, device: torch.device) -> bool:
    flag = torch.tensor([1 if error else 0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item())


def _predict_rank(args: dict[str, Any], rank: int, world: int, device: torch.device) -> dict[str, Any]:
    error, written = None, 0
    overwrite = args.get("overwrite", False)
    rest = {k: v for k, v in args.items() if k != "overwrite"}
    with contextlib.ExitStack() as stack:
        try:
            run = prepare(**rest, device=device)
            manifest = open_part(run, rank, world, overwrite, stack)
        except UserError as err:
            error = str(err)
        if _any_failed(error, device):
            return {"written": 0, "error": error, "stopped": True}
        try:
            written = run_part(run, manifest, show_progress=rank == 0)
        except UserError as err:
            error = str(err)
        stopped = _any_failed(error, device)
    return {"written": written, "error": error, "stopped": stopped}
