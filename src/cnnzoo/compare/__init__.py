"""``cnnzoo compare``: the classic networks trained alike on your data, timed on your machine,
and set beside each other (and beside their published ImageNet figures). See docs/compare.md.

    from cnnzoo.compare import CompareConfig, run_compare
    result = run_compare(CompareConfig(models=["lenet5", "resnet20"], out="runs/cmp"))
    result.rows[0].top1_pct, result.files["report.html"]

The names below load on first use, so that ``cnnzoo``'s command line can register ``compare``
(``cnnzoo.compare.cli``) without importing the trainer and matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BallChart": "charts",
    "ball_chart_data": "charts",
    "pareto_front": "charts",
    "CompareResult": "core",
    "run_compare": "core",
    "run_degradation": "core",
    "DEFAULT_MODELS": "plan",
    "QUICK_MODELS": "plan",
    "CompareConfig": "plan",
    "make_plan": "plan",
    "imagenet_rows": "reference",
    "CompareReporter": "reporter",
    "CompareRow": "results",
    "read_rows": "results",
    "RunRecord": "runs",
}
__all__ = [
    "DEFAULT_MODELS",
    "QUICK_MODELS",
    "BallChart",
    "CompareConfig",
    "CompareReporter",
    "CompareResult",
    "CompareRow",
    "RunRecord",
    "ball_chart_data",
    "imagenet_rows",
    "make_plan",
    "pareto_front",
    "read_rows",
    "run_compare",
    "run_degradation",
]

if TYPE_CHECKING:
    from cnnzoo.compare.charts import BallChart, ball_chart_data, pareto_front
    from cnnzoo.compare.core import CompareResult, run_compare, run_degradation
    from cnnzoo.compare.plan import DEFAULT_MODELS, QUICK_MODELS, CompareConfig, make_plan
    from cnnzoo.compare.reference import imagenet_rows
    from cnnzoo.compare.reporter import CompareReporter
    from cnnzoo.compare.results import CompareRow, read_rows
    from cnnzoo.compare.runs import RunRecord


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cnnzoo.compare' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cnnzoo.compare.{module}"), name)
