"""``load_weights``: build the model, fit the file's tensors into it, adapt the head and the
input channels, and report every step."""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnzoo.errors import WeightsError
from cnnzoo.models import ZooModel, build_model, get_spec
from cnnzoo.weights.files import FileContents, read_file, resolve_architecture
from cnnzoo.weights.keys import map_foreign_keys, strip_prefixes
from cnnzoo.weights.preprocessing import (
    adapt_preprocessing,
    assumed_preprocessing,
    timm_preprocessing,
)
from cnnzoo.weights.report import LoadReport, few


def load_weights(
    model_name: str | None,
    path: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **model_kwargs: Any,
) -> tuple[ZooModel, LoadReport]:
    """Build ``model_name`` and load the weights in ``path`` into it.

    Args:
        model_name: registry name, e.g. ``"resnet50"``; ``None`` takes the one the file names
            (cnnzoo exports and checkpoints, and torchvision files by their known names).
        path: a cnnzoo ``.safetensors`` export or checkpoint, a torchvision ``.pth`` file, or a
            timm state_dict (``mobilenet_v1``, ``efficientnet_b0``-``b4``).
        num_classes: classifier outputs; the file's when ``None``. When it differs from the
            file's, the classifier (and GoogLeNet's auxiliary FC layers) is re-initialised.
        in_chans: input channels; the file's when ``None``. When it differs, the first
            convolution is adapted: summed over its input channels for 1, repeated cyclically and
            rescaled by ``file_chans / in_chans`` otherwise (timm's ``adapt_input_conv`` rule).
        **model_kwargs: family options, as for :func:`cnnzoo.create_model`.

    Returns:
        The model (in eval mode, with ``model.pretrained_cfg`` set to its
        :class:`Preprocessing`) and the :class:`LoadReport`.

    Raises:
        WeightsError: an unreadable, unsafe, corrupt or foreign file, or one that does not fit
            the architecture (one line naming a few of the keys that differ).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}: give the path of a downloaded file.")
    contents = read_file(path)
    model_name = resolve_architecture(model_name, contents, path)
    spec = get_spec(model_name)
    report = LoadReport(str(path), model_name, contents.source, notes=list(contents.notes))
    state = strip_prefixes(contents.state, report)
    state = map_foreign_keys(state, spec.family, model_name, report)
    if contents.source == "state_dict" and "timm" in report.source:
        contents.preprocessing = timm_preprocessing(model_name)

    cls_key, conv_key = _end_keys(model_name, num_classes, in_chans, model_kwargs, state, path)
    file_classes = state[cls_key].shape[0]
    file_chans = state[conv_key].shape[1] if conv_key else _probe_chans(spec, in_chans)
    num_classes = file_classes if num_classes is None else num_classes
    in_chans = file_chans if in_chans is None else in_chans

    kwargs = dict(model_kwargs)
    allowed_missing: list[str] = []
    if spec.family == "googlenet":
        allowed_missing = _googlenet_options(state, contents, kwargs, in_chans, report)
    model = build_model(model_name, num_classes=file_classes, in_chans=in_chans, **kwargs)
    if conv_key and in_chans != file_chans:
        state[conv_key] = _adapt_input_conv(state[conv_key], in_chans, conv_key, report)
    _fill_batch_counters(model, state, report)
    _check_fits(model, state, allowed_missing, path, model_name)

    report.strict = not allowed_missing
    model.load_state_dict(state, strict=report.strict)
    report.loaded = [k for k in model.state_dict() if k in state]
    report.missing = list(allowed_missing)
    report.reinitialised = list(allowed_missing)
    if num_classes != file_classes:
        _replace_head(model, num_classes, file_classes, report)

    preprocessing = contents.preprocessing or assumed_preprocessing(spec, file_chans, report)
    model.pretrained_cfg = adapt_preprocessing(
        preprocessing, in_chans, num_classes != file_classes, report
    )
    model.eval()
    return model, report


def _end_keys(
    model_name: str,
    num_classes: int | None,
    in_chans: int | None,
    model_kwargs: dict[str, Any],
    state: dict[str, torch.Tensor],
    path: Path,
) -> tuple[str, str | None]:
    """The keys of the classifier's and the first convolution's weights (``None`` for the MLP,
    which has no convolution), which the file must hold: their shapes give its classes and
    channels."""
    probe = _probe(model_name, num_classes, in_chans, model_kwargs)
    first_conv = _first_conv(probe)
    cls_key = f"{probe.classifier_name}.weight"
    conv_key = f"{first_conv}.weight" if first_conv else None
    for key in (cls_key, conv_key):
        if key is not None and key not in state:
            raise WeightsError(
                f"{path} does not fit {model_name}: it has no {key!r} (it has "
                f"{few(list(state), 3)}); is it a file of another architecture?"
            )
    return cls_key, conv_key


def _probe(
    model_name: str, num_classes: int | None, in_chans: int | None, model_kwargs: dict[str, Any]
) -> ZooModel:
    # Built on the meta device: build_model checks the arguments, and the probe gives the names
    # of the classifier and the first convolution, with no memory or initialisation spent.
    with torch.device("meta"):
        return build_model(model_name, num_classes=num_classes, in_chans=in_chans, **model_kwargs)


def _first_conv(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    return None


def _probe_chans(spec: Any, in_chans: int | None) -> int:
    # Without a convolution nothing in the file tells its channels apart from its image size:
    # take the asked-for (or default) channels; a mismatch then shows as a shape error.
    return spec.input_size[0] if in_chans is None else in_chans


def _googlenet_options(
    state: dict[str, torch.Tensor],
    contents: FileContents,
    kwargs: dict[str, Any],
    in_chans: int,
    report: LoadReport,
) -> list[str]:
    aux_keys = [k for k in state if k.startswith(("aux1.", "aux2."))]
    allowed_missing: list[str] = []
    if aux_keys and not kwargs.get("aux_logits"):
        for key in aux_keys:
            del state[key]
        report.unexpected = aux_keys
        report.notes.append(
            f"dropped the file's {len(aux_keys)} auxiliary-head tensors (aux_logits=False; "
            f"build with aux_logits=True to keep them)"
        )
    elif kwargs.get("aux_logits") and not aux_keys:
        with torch.device("meta"):
            probe = build_model(report.model, in_chans=in_chans, **kwargs)
        allowed_missing = [k for k in probe.state_dict() if k.startswith(("aux1.", "aux2."))]
        report.notes.append("the file has no auxiliary heads: they start from initialisation")
    if contents.torchvision is not None and "transform_input" not in kwargs:
        if in_chans == 3:
            kwargs["transform_input"] = True
            report.notes.append(
                "set transform_input=True: torchvision's GoogLeNet weights (ported from "
                "Google) expect inputs scaled to [-1, 1]"
            )
        elif contents.preprocessing is not None:
            # transform_input is defined for RGB only; normalising to [-1, 1] is the same thing.
            contents.preprocessing = replace(
                contents.preprocessing, mean=(0.5,) * 3, std=(0.5,) * 3
            )
            report.notes.append(
                "transform_input needs 3 channels: the preprocessing uses mean 0.5, std 0.5 instead"
            )
    return allowed_missing


def _adapt_input_conv(
    weight: torch.Tensor, in_chans: int, key: str, report: LoadReport
) -> torch.Tensor:
    file_chans = weight.shape[1]
    if in_chans == 1:
        report.notes.append(f"{key}: {file_chans} input channels summed into 1")
        return weight.sum(dim=1, keepdim=True)
    # Repeat the channels cyclically and rescale, so that an image whose channels are copies of
    # one another gives the same activations as before.
    repeats = math.ceil(in_chans / file_chans)
    adapted = weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (file_chans / in_chans)
    report.notes.append(
        f"{key}: {file_chans} input channels repeated cyclically to {in_chans} and scaled by "
        f"{file_chans}/{in_chans}"
    )
    return adapted


def _fill_batch_counters(
    model: nn.Module, state: dict[str, torch.Tensor], report: LoadReport
) -> None:
    # Files saved before PyTorch 0.4.1 (torchvision's DenseNets among them) have no BatchNorm
    # `num_batches_tracked`; BatchNorm itself fills in 0 for them, and it only matters to
    # momentum=None, so they are not counted as missing.
    absent = [
        k
        for k, v in model.state_dict().items()
        if k.endswith("num_batches_tracked") and k not in state
    ]
    if absent and all(k.rsplit(".", 1)[0] + ".running_mean" in state for k in absent):
        for key in absent:
            state[key] = torch.zeros((), dtype=torch.long)
        report.notes.append(f"set {len(absent)} absent BatchNorm num_batches_tracked counters to 0")


def _check_fits(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    allowed_missing: list[str],
    path: Path,
    model_name: str,
) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state and k not in allowed_missing]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"{len(items)} {label} ({few(items, 3)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    raise WeightsError(
        f"{path} does not fit {model_name}: {'; '.join(parts)}; is it a file of another "
        f"architecture or variant?"
    )


def _replace_head(model: ZooModel, num_classes: int, file_classes: int, report: LoadReport) -> None:
    before = model.state_dict()
    model.reset_classifier(num_classes)
    after = model.state_dict()
    replaced = [k for k in after if after[k].shape != before[k].shape]
    report.shape_mismatched += [
        f"{k}: file {tuple(before[k].shape)} vs model {tuple(after[k].shape)}" for k in replaced
    ]
    report.reinitialised += replaced
    report.loaded = [k for k in report.loaded if k not in replaced]
    report.notes.append(
        f"replaced the {file_classes}-class classifier with a new {num_classes}-class one"
    )
