"""Key clean-up and the mappings of foreign layouts (timm) onto cnnzoo's (torchvision's)."""

from __future__ import annotations

import re

import torch

from cnnzoo.errors import WeightsError
from cnnzoo.weights.preprocessing import TIMM_ARCHS
from cnnzoo.weights.report import LoadReport

_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile wrappers


# torchvision's own rule (densenet.py `_load_state_dict`): "denselayer1.norm.1.weight" was saved
# by torchvision < 0.3, where the layer's modules were named "norm.1", "conv.1", ...
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def strip_prefixes(state: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
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


def map_foreign_keys(
    state: dict[str, torch.Tensor], family: str, model_name: str, report: LoadReport
) -> dict[str, torch.Tensor]:
    if "conv_stem.weight" in state:  # timm's EfficientNet-style layout
        if model_name not in TIMM_ARCHS:
            raise WeightsError(
                f"{report.path} is a timm state_dict; timm files load into "
                f"{', '.join(TIMM_ARCHS)} only, not {model_name}."
            )
        mapped = map_timm_mobilenet_v1(state) if family == "mobilenet" else map_timm_effnet(state)
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
    found = {(int(m[1]), int(m[2])) for k in state if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))}
    return sorted(found)


def map_timm_mobilenet_v1(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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


def map_timm_effnet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
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
