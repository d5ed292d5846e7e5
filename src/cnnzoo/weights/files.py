"""Reading a weight file safely: safetensors, or a pickle through ``torch.load(weights_only=True)``
only, with the torch.hub hash check; and which architecture a file names."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.errors import WeightsError
from cnnzoo.models import get_spec, list_models
from cnnzoo.weights.preprocessing import (
    TORCHVISION_FILES,
    Preprocessing,
    TorchvisionFile,
    cnnzoo_preprocessing,
    torchvision_preprocessing,
)
from cnnzoo.weights.report import few, first_line

_HASHED_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")


@dataclass
class FileContents:
    """What a file holds: its tensors, what kind of file it is, and what it says of itself."""

    state: dict[str, torch.Tensor]
    source: str
    preprocessing: Preprocessing | None = None
    notes: list[str] = field(default_factory=list)
    torchvision: TorchvisionFile | None = None
    named: str | None = None  # the architecture the file names, if it names one


def read_file(path: Path) -> FileContents:
    """Read ``path`` safely (see the package docstring); one-line ``WeightsError`` otherwise."""
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    _check_hash(path)
    obj = _torch_load(path)
    known = TORCHVISION_FILES.get(path.name)
    if isinstance(obj, dict) and "model_name" in obj and "model" in obj:
        contents = FileContents(_tensors(obj["model"], path), "cnnzoo checkpoint")
        contents.named = str(obj["model_name"])
        if isinstance(obj.get("metadata"), dict):  # checkpoints of cnnzoo 0.1 have none
            contents.preprocessing = cnnzoo_preprocessing(obj["metadata"], path, contents.source)
        return contents
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # timm's and Lightning's training checkpoints keep the weights under "state_dict".
        return FileContents(_tensors(obj["state_dict"], path), "state_dict")
    if known is not None:
        pre = torchvision_preprocessing(known)
        note = f"torchvision {known.builder}.{known.tag}: preprocessing and class names known"
        contents = FileContents(_tensors(obj, path), "torchvision", pre, [note], known)
        contents.named = next(n for n in list_models() if get_spec(n).torchvision == known.builder)
        return contents
    return FileContents(_tensors(obj, path), "state_dict")


def resolve_architecture(model_name: str | None, contents: FileContents, path: Path) -> str:
    """The registry name to build: the one asked for, checked against the one the file names."""
    named = contents.named
    if model_name is None:
        if named is None:
            raise WeightsError(
                f"{path} does not name its architecture (a {contents.source} file, as "
                f"torchvision and timm files are): give the model, e.g. --model resnet50."
            )
        return named
    get_spec(model_name)  # an unknown name fails here, with suggestions
    if named is not None and named != model_name:
        what = {
            "torchvision": f"{path.name} is torchvision's {named} weights",
            "cnnzoo checkpoint": f"{path} is a checkpoint of {named!r}",
        }.get(contents.source, f"{path} holds weights of {named!r}")
        raise WeightsError(f"{what}, not {model_name!r}: load it as {named} (--model {named}).")
    return model_name


def _read_safetensors(path: Path) -> FileContents:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path} as safetensors: {first_line(err)}") from None
    if "model" not in meta:  # e.g. timm's hub files (model.safetensors): a bare state_dict
        return FileContents(state, "state_dict")
    contents = FileContents(state, "cnnzoo export")
    contents.preprocessing = cnnzoo_preprocessing(meta, path, contents.source)
    contents.named = meta["model"]
    return contents


def _check_hash(path: Path) -> None:
    match = _HASHED_NAME.search(path.name)
    if match is None:
        return
    expected = match.group(1)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(expected):
        raise WeightsError(
            f"{path}: its name says SHA-256 {expected}…, the file's is {actual[: len(expected)]}…"
            f" (a partial or corrupted download?): download it again."
        )


def _torch_load(path: Path) -> Any:
    try:
        # weights_only=True rebuilds tensors and plain containers only: a pickle that would
        # import or call anything else is refused before any of it runs.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        wanted = re.search(r"GLOBAL ([\w.]+)", text)
        if wanted or "Unsupported global" in text:
            what = wanted.group(1) if wanted else "a global"
            raise WeightsError(
                f"refused {path}: unpickling it would call or build {what}, which weights_only "
                f"loading forbids (only tensors and plain containers); convert it to "
                f"safetensors where you trust it."
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = reason.group(1).strip() if reason else first_line(err)
        raise WeightsError(f"cannot read {path} as a torch file: {detail}.") from None


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path} holds no state_dict (a dict of tensors).")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path} is not a state_dict: {few(bad, 3)} are not tensors; save "
            f"model.state_dict() instead."
        )
    return dict(obj)
