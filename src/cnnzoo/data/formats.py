"""Readers for the standard on-disk formats: IDX (MNIST, Fashion-MNIST) and the CIFAR pickles.

Both return plain numpy arrays; turning them into datasets is :mod:`cnnzoo.data.datasets`' job.
A file that is not what its name says raises :class:`~cnnzoo.errors.DataError` naming it.
"""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
from pathlib import Path

import numpy as np

from cnnzoo.errors import DataError

# IDX type byte → big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the plain file first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array of its declared shape.

    Raises:
        DataError: the header is not IDX or the data is shorter or longer than it declares.
    """
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number): replace it.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header: replace it.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header:,} data bytes but its header declares shape "
            f"{shape} ({expected:,} bytes): the file is truncated or corrupt, replace it."
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read ({exc}): replace it.") from None


# What the CIFAR pickles (Python 2, protocol 2) and the same dicts re-saved by Python 3 need:
# numpy's array reconstruction and bytes decoding. Nothing that can run code or touch the system.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _Refused(pickle.UnpicklingError):
    """A global that is not on the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`; every other class or function a
    pickle names is refused before it is imported, so a crafted file cannot run anything."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _Refused(f"{module}.{name}")
        # numpy 2 moved numpy.core to numpy._core; import the new home directly so the old
        # name's deprecation shim (and its warning) is never hit.
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return getattr(importlib.import_module(module), name)


def safe_unpickle(path: Path) -> object:
    """Load a pickle that may only contain builtin containers, bytes/str/numbers and numpy arrays.

    Raises:
        DataError: the file names anything else (its first such global is named), or is not a
            readable pickle.
    """
    raw = _read_bytes(path)
    try:
        # Python 2 pickles hold str as bytes; "bytes" keeps them so (as the CIFAR keys b"data").
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(
            f"{path} was refused: it is a pickle that asks for {exc}, which a CIFAR data file "
            "never needs (only numpy arrays, lists and bytes); replace it with the original file."
        ) from None
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean the same here
        raise DataError(f"{path} is not a readable CIFAR pickle ({exc}): replace it.") from None


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one CIFAR batch file."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(
            f"{path} is not a CIFAR batch (a dict with keys b'data' and {label_key!r}): "
            "replace it with the original file."
        )
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path} holds data of shape {data.shape} and type {data.dtype}, not (N, 3072) uint8 "
            "as CIFAR batches do: replace it."
        )
    if len(labels) != len(data):
        raise DataError(f"{path} has {len(data)} images but {len(labels)} labels: replace it.")
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar_names(path: Path, key: bytes) -> list[str] | None:
    """The class names stored under ``key`` in a CIFAR meta file, or ``None`` if it is absent."""
    if not path.is_file():
        return None
    meta = safe_unpickle(path)
    if not isinstance(meta, dict) or key not in meta:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]
