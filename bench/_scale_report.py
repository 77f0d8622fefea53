"""bench/scale.py's report: one row per figure, its value at each level of instances, how it grew
from the first level to the last, the baseline measured in the same run, the ratio, the target and
whether it is met."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Figure:
    """One figure at each level (None: not measured there)."""

    name: str
    unit: str
    values: dict[int, float | None] = field(default_factory=dict)
    baseline: dict[int, float] = field(default_factory=dict)  # same unit, same level
    baseline_name: str = ""
    target: str = "(info)"
    # Judged on the last level: (value, baseline or None) -> met?
    meets: Callable[[float, float | None], bool] | None = None
    digits: int = 1

    def ratio(self, level: int) -> float | None:
        value, base = self.values.get(level), self.baseline.get(level)
        return None if value is None or not base else value / base

    def growth(self, first: int, last: int) -> float | None:
        a, b = self.values.get(first), self.values.get(last)
        return None if a is None or b is None or a <= 0 or b < 0 else b / a

    def result(self, level: int) -> str:
        value = self.values.get(level)
        if self.meets is None or value is None:
            return "-"
        return "met" if self.meets(value, self.baseline.get(level)) else "MISSED"

    def row(self) -> dict[str, Any]:
        return {
            "figure": self.name,
            "unit": self.unit,
            "values": {str(k): v for k, v in self.values.items()},
            "baseline": {str(k): v for k, v in self.baseline.items()},
            "baseline_name": self.baseline_name,
            "target": self.target,
        }


def at_most(limit: float) -> Callable[[float, float | None], bool]:
    return lambda value, _base: value <= limit


def below_baseline(value: float, base: float | None) -> bool:
    return base is not None and value < base


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(figures: Sequence[Figure], levels: Sequence[int]) -> None:
    first, last = levels[0], levels[-1]
    heads = [f"at {level:,}" for level in levels]
    header = (
        f"{'figure':<48} {'unit':<7}"
        + "".join(f"{h:>11}" for h in heads)
        + f" {'growth':>7}  {f'baseline (at {last:,})':<30} {'ratio':>6}  {'target':<10} result"
    )
    print(header)
    print("-" * len(header))
    for f in figures:
        cells = "".join(f"{_number(f.values.get(level), f.digits):>11}" for level in levels)
        growth = f.growth(first, last)
        base = f.baseline.get(last)
        base_text = f"{f.baseline_name} {_number(base, f.digits)}" if base is not None else "-"
        ratio = f.ratio(last)
        print(
            f"{f.name:<48} {f.unit:<7}{cells} {'-' if growth is None else f'{growth:.2f}x':>7}  "
            f"{base_text:<30} {'-' if ratio is None else f'{ratio:.2f}x':>6}  {f.target:<10} {f.result(last)}"
        )
