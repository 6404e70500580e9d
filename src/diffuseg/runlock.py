"""An exclusive lock on a folder, so that two runs never write into it at once.

``with folder_lock(folder, "predict"):`` creates ``folder/.diffuseg.lock`` with ``O_CREAT | O_EXCL`` (atomic on
local file systems and NFSv3+) holding the owner's pid, host name and purpose, and removes it when the block
ends. A second run gets a ``UserError`` naming the holder. A lock left by a process that died (``kill -9``,
power loss) on this host is recognised by its pid being gone and is taken over; a lock held on another
host cannot be checked from here, so the message says how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from diffuseg.errors import UserError

LOCK_NAME = ".diffuseg.lock"


def _holder(path: Path) -> dict | None:
    """The lock file's content, or ``None`` when it is gone; ``{}`` when it is unreadable or half-written."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (also when another user owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale(holder: dict) -> bool:
    """Whether a lock's owner is a process of this host that no longer runs."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not process_alive(pid)


def holder_of(path: Path) -> dict | None:
    """The owner of a live lock at ``path`` (``{"pid", "host", "what"}``), ``None`` when free or stale."""
    holder = _holder(path)
    return None if holder is None or is_stale(holder) else holder


def _break_stale(path: Path, stale: dict) -> None:
    """Remove the stale lock ``stale`` at ``path``, unless another process replaced it meanwhile."""
    aside = path.with_name(f"{path.name}.stale.{os.getpid()}")
    try:
        os.rename(path, aside)  # atomic: of several racing processes one moves the lock
    except FileNotFoundError:
        return
    if _holder(aside) != stale:  # we moved a fresh lock taken by someone else: put it back
        with contextlib.suppress(FileExistsError, FileNotFoundError):
            os.link(aside, path)
    aside.unlink(missing_ok=True)


def _acquire(path: Path, what: str, wait: float) -> str:
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what})
    deadline = time.monotonic() + wait
    attempt = 0
    while True:
        attempt += 1
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:
                continue
            if holder and is_stale(holder):
                _break_stale(path, holder)
            elif time.monotonic() < deadline:
                time.sleep(0.05)
            else:
                raise UserError(_held_message(path, what, holder)) from None
            if attempt > 100 and time.monotonic() >= deadline:
                raise UserError(f"{path}: could not take the lock (it kept changing hands)") from None
            continue
        except OSError as err:
            raise UserError(f"{path.parent}: cannot lock the folder ({err.strerror or err})") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(record)
        return record


def _held_message(path: Path, what: str, holder: dict) -> str:
    if not holder:
        who = "a process whose lock file is unreadable"
    else:
        who = f"{holder.get('what', 'a run')} (pid {holder.get('pid')} on {holder.get('host')})"
    return (
        f"{path.parent}: another {what} is writing here: {who} holds {path.name}; wait for it to finish, "
        f"or delete {path} if that process is gone"
    )


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, name: str = LOCK_NAME, wait: float = 0.0) -> Iterator[Path]:
    """Hold the lock ``folder/name`` (the folder is created) for the block; ``UserError`` when another live
    process holds it for more than ``wait`` seconds.

    ``what`` says who holds it (``"predict"``, ``"train"``) in the message another run gets.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{folder}: cannot create the folder ({err.strerror or err})") from None
    path = folder / name
    record = _acquire(path, what, wait)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == record:  # still ours
                path.unlink()
