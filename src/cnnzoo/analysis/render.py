"""Rendering a :class:`~cnnzoo.analysis.summary.Summary`: a table grouped by block, JSON with a
stable schema, CSV, Markdown, and the ``--explain`` text. Nothing here counts; every number
comes from the summary, and the written-out formulas from :mod:`cnnzoo.analysis.formulas`.

The JSON schema is documented in ``docs/analyzer.md``; :data:`SCHEMA_VERSION` changes whenever a
field is renamed or removed (adding a field keeps the version).
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from cnnzoo.analysis import formulas
from cnnzoo.analysis.summary import LayerRow, Summary
from cnnzoo.units import human, human_bytes

SCHEMA_VERSION = 1

# The per-layer fields of the JSON and CSV outputs, in order (the JSON schema's `layers`).
LAYER_FIELDS = (
    "name", "type", "block", "input_shape", "output_shape", "kernel", "stride", "padding",
    "dilation", "groups", "ceil_mode", "bias", "params", "params_trainable", "params_frozen",
    "buffers", "macs", "output_bytes", "inplace", "rf_size", "rf_jump",
)  # fmt: skip


def _dims(shape: tuple[int, ...] | None, drop_batch: bool = True) -> str:
    if shape is None:
        return "-"
    return "×".join(str(d) for d in (shape[1:] if drop_batch else shape))


def _pair(value: tuple[int, ...] | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return str(value[0]) if len(set(value)) == 1 else "×".join(str(v) for v in value)


def _ksp(row: LayerRow) -> str:
    if row.kernel is None:
        return ""
    return f"{_pair(row.kernel)}/{_pair(row.stride)}/{_pair(row.padding)}"


def _rf(row: LayerRow) -> str:
    if row.rf_size is None or row.rf_jump is None:
        return ""
    return f"{_pair(row.rf_size)}/{_pair(row.rf_jump)}"


# -- structured outputs -------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def layer_dict(row: LayerRow) -> dict[str, Any]:
    """One row as the JSON schema's layer object (tuples become lists)."""
    return {key: _jsonable(getattr(row, key)) for key in LAYER_FIELDS}


def to_dict(summary: Summary, optimizer: str = "adam") -> dict[str, Any]:
    """The summary as the documented JSON object (schema version :data:`SCHEMA_VERSION`).

    Raises:
        InvalidArgumentError: an optimizer name the training-memory estimate does not know.
    """
    memory = summary.training_memory(optimizer)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": summary.model,
        "input_size": list(summary.input_size),
        "batch_size": summary.batch_size,
        "dtype": str(summary.dtype).removeprefix("torch."),
        "params": summary.params,
        "params_trainable": summary.params_trainable,
        "params_frozen": summary.params_frozen,
        "buffers": summary.buffers,
        "macs": summary.macs,
        "flops": summary.flops,
        "param_bytes": summary.param_bytes,
        "buffer_bytes": summary.buffer_bytes,
        "input_bytes": summary.input_bytes,
        "activation_bytes": summary.activation_bytes,
        "saved_activation_bytes": summary.saved_activation_bytes,
        "training_memory": {
            "optimizer": optimizer.lower(),
            "batch_size": summary.batch_size,
            "weights": memory.weights,
            "gradients": memory.gradients,
            "optimizer_state": memory.optimizer_state,
            "activations": memory.activations,
            "total": memory.total,
        },
        "unknown": dict(sorted(summary.unknown.items())),
        "layers": [layer_dict(row) for row in summary.layers],
    }


def render_json(summary: Summary, optimizer: str = "adam") -> str:
    """:func:`to_dict` as indented JSON text (UTF-8 characters kept as they are)."""
    return json.dumps(to_dict(summary, optimizer), indent=2, ensure_ascii=False)


def render_csv(summary: Summary) -> str:
    """One row per layer with the columns of :data:`LAYER_FIELDS`; a shape or pair is written
    ``1x64x55x55``, a missing value as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LAYER_FIELDS)
    for row in summary.layers:
        cells = []
        for key in LAYER_FIELDS:
            value = getattr(row, key)
            if value is None:
                value = ""
            elif isinstance(value, tuple):
                value = "x".join(str(v) for v in value)
            cells.append(value)
        writer.writerow(cells)
    return out.getvalue()


# -- tables ---------------------------------------------------------------------------------------

_COLUMNS: list[tuple[str, JustifyMethod]] = [
    ("block", "left"), ("layer", "left"), ("type", "left"), ("output", "right"),
    ("k/s/p", "right"), ("params", "right"), ("MACs", "right"), ("act. bytes", "right"),
    ("RF size/jump", "right"),
]  # fmt: skip


def _cells(row: LayerRow) -> list[str]:
    return [
        row.name, row.type, _dims(row.output_shape), _ksp(row), f"{row.params:,}",
        f"{row.macs:,}", "in place" if row.inplace else f"{row.output_bytes:,}", _rf(row),
    ]  # fmt: skip


def _title(summary: Summary) -> str:
    return f"{summary.model} at {_dims(summary.input_size, False)}, batch {summary.batch_size}"


def totals_lines(summary: Summary, optimizer: str = "adam") -> list[str]:
    """The totals under a table: parameters, MACs and FLOPs, bytes, training memory, unknowns."""
    m = summary.training_memory(optimizer)
    lines = [
        f"params {summary.params:,} (trainable {summary.params_trainable:,}, frozen "
        f"{summary.params_frozen:,}) · buffers {summary.buffers:,}",
        f"MACs {summary.macs:,} ({human(summary.macs)}; conv + linear multiply-adds) · "
        f"FLOPs = 2 × MACs = {summary.flops:,} ({human(summary.flops)})",
        f"parameter bytes {summary.param_bytes:,} ({human_bytes(summary.param_bytes)}) · "
        f"buffer bytes {summary.buffer_bytes:,} · forward activation bytes "
        f"{summary.activation_bytes:,} ({human_bytes(summary.activation_bytes)})",
        f"training memory, {optimizer.lower()} at batch {summary.batch_size} (estimate): "
        f"weights {human_bytes(m.weights)} + gradients {human_bytes(m.gradients)} + optimizer "
        f"state {human_bytes(m.optimizer_state)} + activations {human_bytes(m.activations)} "
        f"= {human_bytes(m.total)}",
    ]
    if summary.unknown:
        listed = ", ".join(f"{k} ×{v}" for k, v in sorted(summary.unknown.items()))
        lines.append(f"no formula (not counted, not zero): {listed}")
    return lines


def render_table(summary: Summary, optimizer: str = "adam", width: int = 160) -> str:
    """A table of every layer, grouped by block (a rule between blocks), then the totals.

    ``width`` is fixed rather than read from the terminal so the text is reproducible.
    """
    table = Table(title=_title(summary), title_justify="left")
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify)
    block = None
    for row in summary.layers:
        label = ""
        if row.block != block:
            if block is not None:
                table.add_section()
            block = label = row.block
        table.add_row(label, *_cells(row))
    text = io.StringIO()
    console = Console(file=text, width=width, color_system=None, force_terminal=False, emoji=False)
    console.print(table)
    for line in totals_lines(summary, optimizer):
        console.print(line, markup=False, highlight=False)
    # rich pads the title line with spaces; trailing blanks would only make diffs noisy
    return "\n".join(line.rstrip() for line in text.getvalue().splitlines())


def render_markdown(summary: Summary, optimizer: str = "adam") -> str:
    """A GitHub Markdown table of every layer, then the totals as a list."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"**{_title(summary)}**", "", line([c for c, _ in _COLUMNS])]
    out.append(line(["---:" if j == "right" else "---" for _, j in _COLUMNS]))
    block = None
    for row in summary.layers:
        out.append(line([row.block if row.block != block else "", *_cells(row)]))
        block = row.block
    out.append("")
    out += [f"- {text}" for text in totals_lines(summary, optimizer)]
    return "\n".join(out)


# -- explain --------------------------------------------------------------------------------------


def _padding(row: LayerRow, kernel: tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(row.padding, str):  # "same" pads half the dilated extent, "valid" nothing
        if row.padding == "valid":
            return (0, 0)
        dilation = row.dilation or (1, 1)
        return tuple(d * (k - 1) // 2 for d, k in zip(dilation, kernel, strict=True))
    return row.padding or (0, 0)


def _size_text(row: LayerRow, input_shape: tuple[int, ...], kernel: tuple[int, ...]) -> str:
    """H' and W' written out, or one W' when both axes work the same numbers."""
    h, w = input_shape[2:]
    k, s, p = kernel, row.stride or kernel, _padding(row, kernel)
    d = row.dilation or (1, 1)
    axes = [
        formulas.output_size_formula(n, k[a], s[a], p[a], d[a], row.ceil_mode)
        for a, n in enumerate((h, w))
    ]
    if axes[0] == axes[1]:
        return f"W' = {axes[1]}"
    return f"H' = {axes[0]}, W' = {axes[1]}"


def explain_line(row: LayerRow) -> str:
    """One layer with its formulas and numbers substituted, e.g.
    ``features.0: W' = ⌊(224 − 11 + 2·2)/4⌋ + 1 = 55, params = 64·(11²·3 + 1) = 23,296, ...``.

    Convolutions: output size per axis, parameters K·(F²·C/groups + 1), MACs; pooling layers:
    output size (with ``ceil_mode``); linear layers: parameters out·(in + 1), MACs; any other
    layer: its output shape.
    """
    shape = _dims(row.output_shape)
    kernel, inp, out = row.kernel, row.input_shape, row.output_shape
    if kernel is not None and inp is not None and len(inp) == 4:
        size = _size_text(row, inp, kernel)
        if row.groups is None or out is None:  # pooling (only a Conv2d or subclass has groups)
            return f"{row.name} ({row.type}): {size} → {shape}"
        c, k = inp[1], out[1]
        oh, ow = out[2:]
        groups = row.groups or 1
        params = formulas.conv_params_formula(c, k, kernel, groups, bool(row.bias))
        macs = formulas.conv_macs_formula(c, k, kernel, oh, ow, groups, out[0])
        shared = "" if row.params else " (shared: counted at its first call)"
        return f"{row.name}: {size}, params = {params}{shared}, MACs = {macs}"
    if kernel is None and row.bias is not None and inp is not None and out is not None:
        n_in, n_out = inp[-1], out[-1]
        rows = math.prod(out[:-1])
        params = formulas.linear_params_formula(n_in, n_out, row.bias)
        macs = formulas.linear_macs_formula(n_in, n_out, rows)
        shared = "" if row.params else " (shared: counted at its first call)"
        return f"{row.name}: params = {params}{shared}, MACs = {macs}"
    return f"{row.name} ({row.type}): → {shape}"


def render_explain(summary: Summary, optimizer: str = "adam") -> str:
    """Every layer worked out with :func:`explain_line`, grouped by block, then the totals."""
    lines = [
        _title(summary),
        "W' = ⌊(W − F + 2P)/S⌋ + 1 (⌈ ⌉ with ceil_mode; F → D·(F − 1) + 1 when dilated); "
        "conv params = K·(F²·C/groups + 1), MACs = K·H'·W'·F²·C/groups; "
        "linear params = out·(in + 1), MACs = in·out",
    ]
    block = None
    for row in summary.layers:
        if row.block != block:
            block = row.block
            lines.append(f"[{block}]")
        lines.append("  " + explain_line(row))
    return "\n".join([*lines, *totals_lines(summary, optimizer)])
