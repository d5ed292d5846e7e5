"""Atomic file writes: a kill at any moment leaves the old file or the new one, never half.

Data goes to a temporary file in the same folder, is flushed and fsynced, then renamed over the
target (``os.replace`` is atomic on POSIX), and the folder is fsynced so the rename survives a
power cut too. Temporaries are named ``.NAME.PID.tmp`` so that a later run can find and remove
what a killed one left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from cnnzoo.errors import DiskFullError

TMP_SUFFIX = ".tmp"


def atomic_write_bytes(
    path: Path, data: bytes, before_second_half: Callable[[], None] | None = None
) -> None:
    """Write ``data`` to ``path`` atomically.

    ``before_second_half`` runs after half of the data is on disk (fault injection uses it to
    show that a kill mid-write leaves the previous file intact).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2 if before_second_half else len(data)
            f.write(data[:half])
            if before_second_half:
                f.flush()
                os.fsync(f.fileno())
                before_second_half()
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        # The target was not touched; the partial temporary goes, so that it holds no space.
        tmp.unlink(missing_ok=True)
        if err.errno in _NO_SPACE:
            raise disk_full(path, len(data)) from None
        raise
    os.replace(tmp, path)
    _fsync_folder(path.parent)


# ENOSPC: the device is full; EDQUOT: the user's quota is (the same remedy).
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: Path, needed: int | None) -> DiskFullError:
    """The one-line error of a write to ``path`` that found no space: how much it needed (when
    known), how much is free there, and the fix."""
    try:
        free = f"{shutil.disk_usage(path.parent).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    need = f"{needed:,} bytes needed, " if needed is not None else ""
    return DiskFullError(
        f"no space left on the device to write {path} ({need}{free} there; the previous "
        "version of the file is intact): free some space or write to another disk."
    )


def atomic_copy(source: Path, path: Path) -> None:
    """Make ``path`` a copy of ``source`` atomically, writing no data where it can: a hard link
    to the same file (``source`` and ``path`` then share their bytes until either is replaced;
    every write here replaces, never edits in place), else a full copy, fsynced. ``path``'s old
    content stays until the new one is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # a file system without hard links, or another device
        try:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno in _NO_SPACE:
                raise disk_full(path, Path(source).stat().st_size) from None
            raise
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporaries of writes that a killed process never finished; return them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f".*{TMP_SUFFIX}")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
