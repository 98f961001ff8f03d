"""The results table (printed) and the JSON file (``bench-results/latest.json``)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
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
    #: CPU microseconds per operation of each sampled process (throughput figures).
    cpu_us: dict[str, float] = field(default_factory=dict)
    #: Which repetition of the suite measured it; the value of every one after a merge.
    run: int = 0
    values: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


def merge(rows: list[Row]) -> list[Row]:
    """One row per figure from every repetition: the median value, baseline and CPU per
    operation, every run's value kept (``values``); a target passes only if it passed in
    every run."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.key, row.figure), []).append(row)
    merged = []
    for group in groups.values():
        values = [r.value for r in group if r.value is not None and not math.isnan(r.value)]
        baselines = [r.baseline for r in group if r.baseline is not None]
        verdicts = [r.passed for r in group if r.passed is not None]
        names = {name for r in group for name in r.cpu_us}
        merged.append(replace(
            group[0],
            value=statistics.median(values) if values else None,
            baseline=statistics.median(baselines) if baselines else None,
            passed=all(verdicts) if verdicts else None,
            cpu_us={name: statistics.median(r.cpu_us[name] for r in group if name in r.cpu_us)
                    for name in sorted(names)},
            values=values,
            note=group[-1].note if len(group) > 1 else group[0].note,
            # When the runs disagree the median may look like a pass while a run missed.
            extra={**group[0].extra, **({"met_in": f"{sum(verdicts)}/{len(verdicts)}"}
                                        if len(set(verdicts)) > 1 else {})}))
    return merged


def verdict(row: Row, miss: str = "MISS") -> str:
    """The result column: pass, a miss (with how many runs met the target, when some
    did), or nothing for a figure without a target."""
    if row.passed is None:
        return ""
    if row.passed:
        return "pass"
    met_in = row.extra.get("met_in")
    return f"{miss} (met in {met_in})" if met_in else miss


def spread(row: Row) -> str:
    """Every run's value and how far apart they lie, relative to the median."""
    if len(row.values) < 2 or not row.value:
        return ""
    low, high = min(row.values), max(row.values)
    return f"{_number(low)}-{_number(high)} ({(high - low) / abs(row.value):.0%})"


def cpu_words(cpu_us: dict[str, float]) -> str:
    return ", ".join(f"{name} {us:,.0f}" for name, us in cpu_us.items())


def cpu_text(row: Row) -> str:
    return cpu_words(row.cpu_us)


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
    header = ("#", "figure", "value", "runs (spread)", "baseline (same run)", "ratio",
              "CPU us/op", "target", "result")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        baseline = (f"{_number(row.baseline, row.unit)} ({row.baseline_name})"
                    if row.baseline is not None else "-")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append((row.key, row.figure, _number(row.value, row.unit), spread(row),
                      baseline, ratio, cpu_text(row), row.target, verdict(row)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    out = ["| # | figure | value | runs (spread) | baseline (same run) | ratio | CPU us/op "
           "| target | result |",
           "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        baseline = (f"{_number(row.baseline, row.unit)} ({row.baseline_name})"
                    if row.baseline is not None else "-")
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        result = verdict(row, "**miss**")
        out.append(f"| {row.key} | {row.figure} | {_number(row.value, row.unit)} | "
                   f"{spread(row)} | {baseline} | {ratio} | {cpu_text(row)} | {row.target} "
                   f"| {result} |")
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
