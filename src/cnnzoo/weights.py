"""Safe, offline loading of weight files into registered models, with a report of what happened.

Accepted files (read from a local path; nothing here touches the network):

- cnnzoo's ``.safetensors`` exports (``trainer`` writes them); their metadata names the model and
  gives the classes, channels, image size, mean/std and class names;
- cnnzoo checkpoints (``last.pt``/``best.pt``: a dict with ``"model_name"`` and ``"model"``);
- torchvision ``.pth`` state_dicts of every architecture cnnzoo shares with torchvision (module
  names are the checkpoint format, so they load as they are), including DenseNet's legacy keys;
- timm state_dicts of ``mobilenetv1_100`` (into ``mobilenet_v1``) and ``efficientnet_b0`` …
  ``efficientnet_b4`` (into the EfficientNets of the same name), through a key mapping.

Safety: a pickled file is only ever read by ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers and refuses anything that would run code; there is no fallback.
A file whose name ends in hex digits (torchvision and torch.hub's ``name-<sha256 prefix>.pth``)
is hashed and refused when the digits do not match.

Every load returns a :class:`LoadReport` and attaches the weights' :class:`Preprocessing` to the
model as ``model.pretrained_cfg``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnzoo.errors import WeightsError
from cnnzoo.registry import create_model, get_spec, list_models

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers
_HASHED_NAME = re.compile(r"-([0-9a-f]{8,64})\.(?:pth|pt)$")
# torchvision's own rule (densenet.py `_load_state_dict`): "denselayer1.norm.1.weight" was saved
# by torchvision < 0.3, where the layer's modules were named "norm.1", "conv.1", ...
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a set of weights.

    Attributes:
        input_size: ``(C, H, W)`` the network sees.
        resize: side the shorter image side is resized to before cropping (``None``: resize
            straight to ``input_size``).
        crop: side of the centre crop (``None``: no crop).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (resizing).
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by after that.
        channel_order: ``"RGB"``, ``"L"`` (one grey channel) or ``"C=N"`` for other counts.
        class_names: the name of each output, or ``None`` when unknown (e.g. a new head).
        source: where these values come from (the file's metadata, a table, an assumption).
    """

    input_size: tuple[int, int, int]
    resize: int | None
    crop: int | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str
    class_names: tuple[str, ...] | None
    source: str

    def describe(self) -> str:
        """One line: resize, crop, interpolation, mean/std, channels and classes."""
        steps = []
        if self.resize:
            steps.append(f"resize {self.resize} ({self.interpolation})")
        if self.crop:
            steps.append(f"centre crop {self.crop}")
        if not steps:
            steps.append(f"resize to {self.input_size[1]}×{self.input_size[2]}")
        mean = ", ".join(f"{m:.3f}" for m in self.mean)
        std = ", ".join(f"{s:.3f}" for s in self.std)
        classes = f"{len(self.class_names)} named" if self.class_names else "unnamed"
        return (
            f"{', '.join(steps)}, {self.channel_order} in [0, 1], mean ({mean}), std ({std}); "
            f"{classes} classes [{self.source}]"
        )


@dataclass
class LoadReport:
    """What a load did. Keys are the model's state_dict keys.

    Attributes:
        path: the file read.
        model: the registry name loaded into.
        source: the kind of file (``"cnnzoo export"``, ``"torchvision"``, ``"timm"``, ...).
        loaded: keys set from the file.
        missing: keys the model has and the file lacks (left at their initialisation).
        unexpected: keys in the file that the model has no place for (not loaded).
        shape_mismatched: ``"key: file (…) vs model (…)"`` for tensors that could not load.
        reinitialised: keys freshly initialised instead of loaded (a replaced head, missing aux).
        notes: every adaptation made, one sentence each (prefixes, renamed keys, channel rule).
        strict: whether ``load_state_dict(strict=True)`` was used.
    """

    path: str
    model: str
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    strict: bool = True

    @property
    def complete(self) -> bool:
        """True when every tensor of the model came from the file unchanged in role."""
        return not (self.missing or self.unexpected or self.shape_mismatched or self.reinitialised)

    def lines(self) -> list[str]:
        """The report as printable lines."""
        how = "strict" if self.strict else "non-strict, every difference listed"
        out = [
            f"weights {self.path} ({self.source}) → {self.model}: "
            f"{len(self.loaded)} tensors loaded ({how})"
        ]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected (not loaded)", self.unexpected),
            ("shape-mismatched", self.shape_mismatched),
            ("re-initialised", self.reinitialised),
        ):
            if keys:
                out.append(f"  {label}: {len(keys)}: {_few(keys, 6)}")
        out.extend(f"  note: {note}" for note in self.notes)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _TorchvisionFile(NamedTuple):
    builder: str
    tag: str
    resize: int
    crop: int
    interpolation: str


# torchvision's ImageNet weight files for the architectures we share, with the preprocessing of
# their `transforms` (torchvision/models/*.py, `Weights` enums; mean/std are ImageNet's for all).
# tests/test_weights.py checks this table against the installed torchvision.
TORCHVISION_FILES: dict[str, _TorchvisionFile] = {
    f: _TorchvisionFile(*row)
    for f, *row in (
        ("alexnet-owt-7be5be79.pth", "alexnet", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg11-8a719046.pth", "vgg11", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg11_bn-6002323d.pth", "vgg11_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg13-19584684.pth", "vgg13", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg13_bn-abd245e5.pth", "vgg13_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg16-397923af.pth", "vgg16", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg16_bn-6c64b313.pth", "vgg16_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg19-dcbb9e9d.pth", "vgg19", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("vgg19_bn-c79401a0.pth", "vgg19_bn", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("googlenet-1378be20.pth", "googlenet", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet18-f37072fd.pth", "resnet18", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet34-b627a593.pth", "resnet34", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet50-0676ba61.pth", "resnet50", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet50-11ad3fa6.pth", "resnet50", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("resnet101-63fe2227.pth", "resnet101", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet101-cd907fc2.pth", "resnet101", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("resnet152-394f9c45.pth", "resnet152", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("resnet152-f82ba261.pth", "resnet152", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("densenet121-a639ec97.pth", "densenet121", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet169-b2777c0a.pth", "densenet169", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet201-c1103571.pth", "densenet201", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("densenet161-8d451a50.pth", "densenet161", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("mobilenet_v2-b0353104.pth", "mobilenet_v2", "IMAGENET1K_V1", 256, 224, "bilinear"),
        ("mobilenet_v2-7ebf99e0.pth", "mobilenet_v2", "IMAGENET1K_V2", 232, 224, "bilinear"),
        ("mobilenet_v3_large-8738ca79.pth", "mobilenet_v3_large", "IMAGENET1K_V1", 256, 224,
         "bilinear"),
        ("mobilenet_v3_large-5c1a4163.pth", "mobilenet_v3_large", "IMAGENET1K_V2", 232, 224,
         "bilinear"),
        ("mobilenet_v3_small-047dcff4.pth", "mobilenet_v3_small", "IMAGENET1K_V1", 256, 224,
         "bilinear"),
        ("efficientnet_b0_rwightman-7f5810bc.pth", "efficientnet_b0", "IMAGENET1K_V1", 256, 224,
         "bicubic"),
        ("efficientnet_b1_rwightman-bac287d4.pth", "efficientnet_b1", "IMAGENET1K_V1", 256, 240,
         "bicubic"),
        ("efficientnet_b1-c27df63c.pth", "efficientnet_b1", "IMAGENET1K_V2", 255, 240,
         "bilinear"),
        ("efficientnet_b2_rwightman-c35c1473.pth", "efficientnet_b2", "IMAGENET1K_V1", 288, 288,
         "bicubic"),
        ("efficientnet_b3_rwightman-b3899882.pth", "efficientnet_b3", "IMAGENET1K_V1", 320, 300,
         "bicubic"),
        ("efficientnet_b4_rwightman-23ab8bcd.pth", "efficientnet_b4", "IMAGENET1K_V1", 384, 380,
         "bicubic"),
        ("efficientnet_b5_lukemelas-1a07897c.pth", "efficientnet_b5", "IMAGENET1K_V1", 456, 456,
         "bicubic"),
        ("efficientnet_b6_lukemelas-24a108a5.pth", "efficientnet_b6", "IMAGENET1K_V1", 528, 528,
         "bicubic"),
        ("efficientnet_b7_lukemelas-c5b4e57e.pth", "efficientnet_b7", "IMAGENET1K_V1", 600, 600,
         "bicubic"),
    )
}  # fmt: skip

# timm architectures whose state_dict maps exactly onto ours, and the preprocessing of timm's
# default pretrained tag for each (input side, crop fraction, interpolation, mean, std).
# efficientnet_b5-b7 are left out: timm builds them with BatchNorm eps 1e-5 where ours (as
# torchvision's) use 1e-3, so the same tensors would compute something else; tf_efficientnet_*
# pad like TensorFlow ("SAME"), which no key reveals - docs/weights.md says so.
TIMM_ARCHS: dict[str, tuple[str, int, float, tuple[float, ...], tuple[float, ...]]] = {
    "mobilenet_v1": ("mobilenetv1_100.ra4_e3600_r224_in1k", 224, 0.875, (0.5,) * 3, (0.5,) * 3),
    "efficientnet_b0": ("efficientnet_b0.ra_in1k", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b1": ("efficientnet_b1.ra4_e3600_r240_in1k", 240, 0.9, (0.5,) * 3, (0.5,) * 3),
    "efficientnet_b2": ("efficientnet_b2.ra_in1k", 256, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b3": ("efficientnet_b3.ra2_in1k", 288, 0.875, IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_b4": ("efficientnet_b4.ra2_in1k", 320, 0.875, IMAGENET_MEAN, IMAGENET_STD),
}


@dataclass
class _FileContents:
    state: dict[str, torch.Tensor]
    source: str
    preprocessing: Preprocessing | None = None
    notes: list[str] = field(default_factory=list)
    torchvision: _TorchvisionFile | None = None
    named: str | None = None  # the architecture the file names, if it names one


def load_weights(
    model_name: str | None,
    path: str | Path,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **model_kwargs: Any,
) -> tuple[nn.Module, LoadReport]:
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
    contents = _read(path)
    model_name = _architecture(model_name, contents, path)
    spec = get_spec(model_name)
    report = LoadReport(str(path), model_name, contents.source, notes=list(contents.notes))
    state = _strip_prefixes(contents.state, report)
    state = _map_foreign_keys(state, spec.family, model_name, report)
    if contents.source == "state_dict" and "timm" in report.source:
        contents.preprocessing = _timm_preprocessing(model_name)

    probe = _probe(model_name, num_classes, in_chans, model_kwargs)
    first_conv = _first_conv(probe)
    cls_key = f"{probe.classifier_name}.weight"
    conv_key = f"{first_conv}.weight" if first_conv else None  # the MLP has no convolution
    for key in (cls_key, conv_key):
        if key is not None and key not in state:
            raise WeightsError(
                f"{path} does not fit {model_name}: it has no {key!r} (it has "
                f"{_few(list(state), 3)}); is it a file of another architecture?"
            )
    file_classes = state[cls_key].shape[0]
    file_chans = state[conv_key].shape[1] if conv_key else _probe_chans(spec, in_chans)
    num_classes = file_classes if num_classes is None else num_classes
    in_chans = file_chans if in_chans is None else in_chans

    kwargs = dict(model_kwargs)
    allowed_missing: list[str] = []
    if spec.family == "googlenet":
        allowed_missing = _googlenet_options(state, contents, kwargs, in_chans, report)
    model = create_model(model_name, num_classes=file_classes, in_chans=in_chans, **kwargs)
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

    preprocessing = contents.preprocessing or _assumed_preprocessing(spec, file_chans, report)
    model.pretrained_cfg = _adapt_preprocessing(
        preprocessing, in_chans, num_classes != file_classes, report
    )
    model.eval()
    return model, report


# --- reading files ---------------------------------------------------------------------------


def _read(path: Path) -> _FileContents:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    _check_hash(path)
    obj = _torch_load(path)
    known = TORCHVISION_FILES.get(path.name)
    if isinstance(obj, dict) and "model_name" in obj and "model" in obj:
        contents = _FileContents(_tensors(obj["model"], path), "cnnzoo checkpoint")
        contents.named = str(obj["model_name"])
        if isinstance(obj.get("metadata"), dict):  # checkpoints of cnnzoo 0.1 have none
            contents.preprocessing = _cnnzoo_preprocessing(obj["metadata"], path, contents.source)
        return contents
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # timm's and Lightning's training checkpoints keep the weights under "state_dict".
        return _FileContents(_tensors(obj["state_dict"], path), "state_dict")
    if known is not None:
        pre = _torchvision_preprocessing(known)
        note = f"torchvision {known.builder}.{known.tag}: preprocessing and class names known"
        contents = _FileContents(_tensors(obj, path), "torchvision", pre, [note], known)
        contents.named = next(n for n in list_models() if get_spec(n).torchvision == known.builder)
        return contents
    return _FileContents(_tensors(obj, path), "state_dict")


def _architecture(model_name: str | None, contents: _FileContents, path: Path) -> str:
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


def _read_safetensors(path: Path) -> _FileContents:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path} as safetensors: {_first_line(err)}") from None
    if "model" not in meta:  # e.g. timm's hub files (model.safetensors): a bare state_dict
        return _FileContents(state, "state_dict")
    contents = _FileContents(state, "cnnzoo export")
    contents.preprocessing = _cnnzoo_preprocessing(meta, path, contents.source)
    contents.named = meta["model"]
    return contents


def _cnnzoo_preprocessing(meta: dict[str, str], path: Path, kind: str) -> Preprocessing:
    """The preprocessing cnnzoo's trainer records (``trainer._metadata``), as strings."""
    try:
        chans = int(meta["in_chans"])
        side = int(meta["image_size"])
        pre = Preprocessing(
            input_size=(chans, side, side),
            resize=None,
            crop=None,
            interpolation="bilinear",
            mean=tuple(json.loads(meta["mean"])),
            std=tuple(json.loads(meta["std"])),
            channel_order=_channel_order(chans),
            class_names=tuple(json.loads(meta["class_names"])),
            source=f"{kind}{', trained on ' + meta['dataset'] if 'dataset' in meta else ''}",
        )
    except (KeyError, ValueError, TypeError) as err:
        raise WeightsError(f"{path} has incomplete cnnzoo metadata ({err}).") from None
    return pre


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
        detail = reason.group(1).strip() if reason else _first_line(err)
        raise WeightsError(f"cannot read {path} as a torch file: {detail}.") from None


def _tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path} holds no state_dict (a dict of tensors).")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path} is not a state_dict: {_few(bad, 3)} are not tensors; save "
            f"model.state_dict() instead."
        )
    return dict(obj)


# --- key clean-up and mappings -----------------------------------------------------------------


def _strip_prefixes(state: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    stripped: set[str] = set()
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
                    stripped.add(prefix)
        out[key] = value
    if stripped:
        report.notes.append(f"stripped the {' and '.join(sorted(stripped))} key prefixes")
    return out


def _map_foreign_keys(
    state: dict[str, torch.Tensor], family: str, model_name: str, report: LoadReport
) -> dict[str, torch.Tensor]:
    if "conv_stem.weight" in state:  # timm's EfficientNet-style layout
        if model_name not in TIMM_ARCHS:
            raise WeightsError(
                f"{report.path} is a timm state_dict; timm files load into "
                f"{', '.join(TIMM_ARCHS)} only, not {model_name}."
            )
        mapped = _map_timm_mobilenet_v1(state) if family == "mobilenet" else _map_timm_effnet(state)
        report.source = f"timm {TIMM_ARCHS[model_name][0].split('.')[0]}"
        report.notes.append(f"mapped {len(mapped)} timm keys onto cnnzoo's (torchvision) layout")
        return mapped
    if family == "densenet":
        renamed = {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}
        count = sum(a != b for a, b in zip(state, renamed, strict=True))
        if count:
            report.notes.append(f"renamed {count} legacy DenseNet keys (norm.1 → norm1, ...)")
        return renamed
    return state


def _blocks(state: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    found = {
        tuple(map(int, m.groups())) for k in state if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))
    }
    return sorted(found)  # type: ignore[arg-type]


def _map_timm_mobilenet_v1(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # timm blocks.{s}.{j} are Table 1's rows in order: our features.{i}, i counted from 1.
    index = {sj: i for i, sj in enumerate(_blocks(state), start=1)}
    parts = {"conv_dw": "dw.0", "bn1": "dw.1", "conv_pw": "pw.0", "bn2": "pw.1"}
    out = {}
    for key, value in state.items():
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)$", key):
            s, j, part, leaf = m.groups()
            new = f"features.{index[(int(s), int(j))]}.{parts.get(part, part)}.{leaf}"
        else:
            new = _rename_top(key, {"conv_stem": "features.0.0", "bn1": "features.0.1"})
        out[new] = value
    return out


def _map_timm_effnet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # timm: blocks.{s}.{j} with DepthwiseSeparable (conv_dw, bn1, se, conv_pw, bn2) in stage 0
    # and InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3) after; torchvision:
    # features.{s+1}.{j}.block.{n} with n counting expand / depthwise / SE / project.
    inverted = {sj for sj in _blocks(state) if f"blocks.{sj[0]}.{sj[1]}.conv_pwl.weight" in state}
    separable = {"conv_dw": "0.0", "bn1": "0.1", "se": "1", "conv_pw": "2.0", "bn2": "2.1"}
    residual = {
        "conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "se": "2",
        "conv_pwl": "3.0", "bn3": "3.1",
    }  # fmt: skip
    se = {"conv_reduce": "fc1", "conv_expand": "fc2"}
    head = 1 + max((s for s, _ in _blocks(state)), default=-1) + 1
    out = {}
    for key, value in state.items():
        if m := re.match(r"blocks\.(\d+)\.(\d+)\.([a-z_]+\d?)\.(.+)$", key):
            s, j, part, rest = int(m[1]), int(m[2]), m[3], m[4]
            table = residual if (s, j) in inverted else separable
            if part not in table:
                raise WeightsError(f"unknown timm EfficientNet key {key!r}.")
            if part == "se":
                sub, leaf = rest.split(".", 1)
                rest = f"{se.get(sub, sub)}.{leaf}"
            new = f"features.{s + 1}.{j}.block.{table[part]}.{rest}"
        else:
            new = _rename_top(
                key,
                {
                    "conv_stem": "features.0.0",
                    "bn1": "features.0.1",
                    "conv_head": f"features.{head}.0",
                    "bn2": f"features.{head}.1",
                    "classifier": "classifier.1",
                },
            )
        out[new] = value
    return out


def _rename_top(key: str, names: dict[str, str]) -> str:
    module, _, leaf = key.partition(".")
    return f"{names[module]}.{leaf}" if module in names else key


# --- building, adapting, checking ------------------------------------------------------------


def _probe(
    model_name: str, num_classes: int | None, in_chans: int | None, model_kwargs: dict[str, Any]
) -> nn.Module:
    # Built on the meta device: create_model checks the arguments, and the probe gives the names
    # of the classifier and the first convolution, with no memory or initialisation spent.
    with torch.device("meta"):
        return create_model(model_name, num_classes=num_classes, in_chans=in_chans, **model_kwargs)


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
    contents: _FileContents,
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
            probe = create_model(report.model, in_chans=in_chans, **kwargs)
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
        f"{len(items)} {label} ({_few(items, 3)})"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
        if items
    ]
    raise WeightsError(
        f"{path} does not fit {model_name}: {'; '.join(parts)}; is it a file of another "
        f"architecture or variant?"
    )


def _replace_head(
    model: nn.Module, num_classes: int, file_classes: int, report: LoadReport
) -> None:
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


# --- preprocessing ---------------------------------------------------------------------------


def _channel_order(chans: int) -> str:
    return {1: "L", 3: "RGB"}.get(chans, f"C={chans}")


def _torchvision_preprocessing(known: _TorchvisionFile) -> Preprocessing:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return Preprocessing(
        input_size=(3, known.crop, known.crop),
        resize=known.resize,
        crop=known.crop,
        interpolation=known.interpolation,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channel_order="RGB",
        class_names=tuple(_IMAGENET_CATEGORIES),
        source=f"torchvision {known.builder} {known.tag}",
    )


def _timm_preprocessing(model_name: str) -> Preprocessing:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    tag, side, crop_pct, mean, std = TIMM_ARCHS[model_name]
    return Preprocessing(
        input_size=(3, side, side),
        resize=math.floor(side / crop_pct),
        crop=side,
        interpolation="bicubic",
        mean=mean,
        std=std,
        channel_order="RGB",
        # timm's ImageNet-1k class order is torchvision's (the sorted WordNet ids).
        class_names=tuple(_IMAGENET_CATEGORIES),
        source=f"timm {tag} defaults (assumed: timm files do not record their tag)",
    )


def _assumed_preprocessing(spec: Any, chans: int, report: LoadReport) -> Preprocessing:
    side = spec.input_size[1]
    imagenet = chans == 3
    report.notes.append(
        "the file records no preprocessing: assuming "
        + ("ImageNet mean/std" if imagenet else "mean 0.5, std 0.5")
        + f" at {side} px; check it against where the weights came from"
    )
    return Preprocessing(
        input_size=(chans, side, side),
        resize=None,
        crop=None,
        interpolation="bilinear",
        mean=IMAGENET_MEAN if imagenet else (0.5,) * chans,
        std=IMAGENET_STD if imagenet else (0.5,) * chans,
        channel_order=_channel_order(chans),
        class_names=None,
        source="assumed",
    )


def _adapt_preprocessing(
    pre: Preprocessing, in_chans: int, new_head: bool, report: LoadReport
) -> Preprocessing:
    if new_head and pre.class_names is not None:
        pre = replace(pre, class_names=None)
    file_chans = len(pre.mean)
    if in_chans == file_chans:
        return pre
    if in_chans == 1:
        mean, std = (sum(pre.mean) / file_chans,), (sum(pre.std) / file_chans,)
        rule = "averaged"
    else:
        mean = tuple(pre.mean[i % file_chans] for i in range(in_chans))
        std = tuple(pre.std[i % file_chans] for i in range(in_chans))
        rule = "repeated cyclically"
    report.notes.append(
        f"mean/std {rule} to {in_chans} channel(s): mean {tuple(round(m, 4) for m in mean)}, "
        f"std {tuple(round(s, 4) for s in std)}"
    )
    side = pre.input_size[1:]
    return replace(
        pre,
        input_size=(in_chans, *side),
        mean=mean,
        std=std,
        channel_order=_channel_order(in_chans),
    )


# --- text helpers ----------------------------------------------------------------------------


def _few(items: list[str], n: int) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", … (+{len(items) - n})" if len(items) > n else "")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
