"""The results table (printed) and the JSON file (``bench-results/latest.json``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: a figure next to its same-run baseline."""

    key: str
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    #: True/False when the row has a target, None otherwise.
    passed: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


def check(value: float | None, *, at_most: float | None = None,
          at_least: float | None = None) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if at_most is not None and value > at_most:
        return False
    return not (at_least is not None and value < at_least)


def _number(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not unit and float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    header = ("#", "figure", "value", "baseline (same run)", "ratio", "target", "result")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        baseline = (f"{_number(row.baseline, row.unit)} ({row.baseline_name})"
                    if row.baseline is not None else "-")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        result = {True: "pass", False: "MISS", None: ""}[row.passed]
        lines.append((row.key, row.figure, _number(row.value, row.unit), baseline, ratio,
                      row.target, result))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    out = ["| # | figure | value | baseline (same run) | ratio | target | result |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        baseline = (f"{_number(row.baseline, row.unit)} ({row.baseline_name})"
                    if row.baseline is not None else "-")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        result = {True: "pass", False: "**miss**", None: ""}[row.passed]
        out.append(f"| {row.key} | {row.figure} | {_number(row.value, row.unit)} | "
                   f"{baseline} | {ratio} | {row.target} | {result} |")
    return "\n".join(out)


def write_json(path: Path, rows: list[Row], details: dict[str, Any],
               meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
        "details": details,
    }
    path.write_text(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")
