"""One writer per run folder, and the repair of a metrics file torn by a kill.

A run (``cnnzoo train``, ``--resume``, each of ``cnnzoo compare``'s runs, and the comparison's
own folder) claims its folder for as long as it runs: an exclusive ``fcntl.flock`` on
``FOLDER/.cnnzoo.lock``, which records the holder (pid, host, start time, command). The kernel
releases a flock when its holder dies, however it dies (SIGKILL included), so a lock is stale
exactly when the flock is free: no pid guessing, no timeout. A second claim while the holder
lives is refused in one line that names it. Anything that looks at the folder's contents ("does
it already hold a run?") does so after the claim, so two runs started together cannot both
pass that check.

On release the file is unlinked before it is unlocked; a process that opened the old file in
between and then gets its lock sees that the path no longer names that file, and tries again,
so two processes can never both believe they hold the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cnnzoo.errors import (
    CheckpointError,
    CnnzooError,
    FolderInUseError,
    InvalidArgumentError,
)
from cnnzoo.fileio import atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the holder is recorded, nothing is locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".cnnzoo.lock"
METRICS = "metrics.jsonl"


class FolderLock:
    """A held claim on a folder (from :func:`claim`); :meth:`release` gives it up."""

    def __init__(self, folder: Path, fd: int, created: bool) -> None:
        self.folder, self.path, self._fd, self._created = folder, folder / LOCK_NAME, fd, created

    def release(self) -> None:
        """Unlink the lock file (if it is still ours), then unlock; remove the folder when this
        claim created it and nothing else was put there (a run refused before its first file
        leaves no empty folder behind)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                self.path.unlink()
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = -1
        if self._created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only succeeds when empty


def _holder_text(fd: int) -> dict:
    """The holder record in an open lock file, or ``{}`` when it is empty or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 65536).decode())
        if isinstance(record, dict):
            return record
    return {}


def describe_holder(record: dict) -> str:
    """``pid 123@host since 2026-12-01 18:00:00 UTC`` (what is known of it)."""
    if not record:
        return "a process that has not yet written its name"
    pid, host, since = (record.get(key, "?") for key in ("pid", "host", "since"))
    return f"pid {pid}@{host} since {since}"


def claim(
    folder: str | Path, log: Callable[[str], None], command: list[str] | None = None
) -> FolderLock:
    """Claim ``folder`` (created if missing) for this process.

    Raises:
        FolderInUseError: a live process holds it (named: pid@host, since when).
        InvalidArgumentError: the folder cannot be created or the lock file not written.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidArgumentError(
            f"cannot create the folder {folder} ({err.strerror}): choose another --out."
        ) from None
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise InvalidArgumentError(
                f"cannot write in {folder} ({err.strerror}): choose another --out."
            ) from None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(_holder_text(fd))
            os.close(fd)
            raise FolderInUseError(
                f"{folder} is in use by another cnnzoo run ({holder}): wait for it to end, or "
                "choose another --out."
            ) from None
        try:
            ours = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            ours = False
        if ours:
            break
        os.close(fd)  # the holder released (unlinked) it between our open and our lock
    previous = _holder_text(fd)
    # A record under a free flock: written by a claim never released, whose process is gone.
    if previous and fcntl is not None:
        log(
            f"took over {path.name} of {describe_holder(previous)}: that process is gone "
            "(killed or crashed) and left the lock behind"
        )
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": list(sys.argv if command is None else command),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    os.fsync(fd)
    return FolderLock(folder, fd, created)


@contextlib.contextmanager
def claimed(
    folder: str | Path,
    log: Callable[[str], None],
    *,
    enabled: bool = True,
    agree: Callable[[bool], bool] | None = None,
) -> Iterator[None]:
    """:func:`claim` for the block, released when it ends, also when it raises.

    ``enabled`` false claims nothing (the other ranks of a distributed run: rank 0 holds the
    folder). ``agree(failed)`` (``distributed.any_true``) tells every rank whether the claim
    failed, so that all stop together: a rank that went on alone would wait for rank 0 in
    its first collective for ever.
    """
    lock, error = None, None
    if enabled:
        try:
            lock = claim(folder, log)
        except CnnzooError as err:
            error = err
    if agree is not None and agree(error is not None) and error is None:
        raise FolderInUseError(f"rank 0 could not claim {folder}: its message says why.")
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def repair_metrics(folder: Path, log: Callable[[str], None]) -> None:
    """Drop a last line of ``metrics.jsonl`` that a kill tore (said once in the log). A bad
    line anywhere else is not a kill's doing: it is an error naming the file and the line."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last complete line
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(line)
        except ValueError:
            if number < len(lines):
                raise CheckpointError(
                    f"{path} line {number} is not a JSON object ({line[:40]!r}): the file was "
                    "changed by hand or the disk is damaged; delete it (the checkpoint holds "
                    "the history, and the next epoch writes it again) and run --resume again."
                ) from None
            kept = "".join(f"{line}\n" for line in lines[:-1])
            atomic_write_text(path, kept)
            log(
                f"{path.name}: dropped its last line ({len(line.encode()):,} bytes), torn by "
                "a kill while it was written"
            )
            return
    if not text.endswith("\n") and lines:  # a whole last line without its newline
        atomic_write_text(path, text + "\n")
