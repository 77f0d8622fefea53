"""bench/s3.py --baseline REV: Mallee as it was at git revision REV, measured beside the working tree
in the same run, and the table of this tree's figures as ratios of REV's.

The baseline runs from REV's `src` (extracted with `git archive`, put first on PYTHONPATH) on a data
directory and ports of its own. Both Mallees stay up for the whole run, but only one is under load at
a time: the benchmark measures them in turn, and swaps which of the two goes first from one round
(large objects) or operation (small objects) to the next, so that noise and the disk's leftovers
from the previous measurement hit both alike.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from _harness import REPO_DIR, ProcessSet, Ready, Target, source_of, start_mallee

ROUTE = "baseline"  # the large-object route to the baseline's public endpoint
SSE_BASELINE_ROUTE = "baseline-sse"  # ... to its SSE-S3 bucket (revisions that have encryption)
TREE_ROUTE = "endpoint"  # ... and to the tree's
TREE_TARGET = "mallee"  # the small-object target of the tree's public endpoint


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Item = TypeVar("Item", bound=_Named)


def target_name(revision: str) -> str:
    return f"mallee@{revision}"


def _git(*args: str) -> str:
    """A read-only git command in the repository; its stdout stripped ("" when it failed)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def describe(revision: str) -> dict[str, Any]:
    """What is compared: REV's commit, and whether the tree's `src` differs from HEAD (uncommitted
    or untracked files), since the tree is reported by HEAD's commit."""
    commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if not commit:
        raise RuntimeError(f"--baseline {revision}: not a commit in {REPO_DIR}")
    changed = subprocess.run(
        ["git", "-C", str(REPO_DIR), "diff", "--quiet", "HEAD", "--", "src"], capture_output=True
    ).returncode
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", "src")
    return {
        "revision": revision,
        "name": target_name(revision),
        "commit": commit,
        "tree_commit": _git("rev-parse", "HEAD"),
        "tree_src_modified": changed != 0 or bool(untracked),
    }


def start_baseline(
    procs: ProcessSet,
    workdir: Path,
    compared: dict[str, Any],
    avoid: set[int],
    ready: Ready,
    what: str,
    extra_env: dict[str, str] | None = None,
) -> Target:
    """Mallee at the commit `describe` found (not the name again: HEAD or a branch may move during
    the run): its src extracted under `workdir`/baseline-src, its data directory and log
    (mallee.log) under `workdir`/baseline, on a free block of ports outside `avoid`, with the
    tree's settings (`extra_env`; a revision that does not know one ignores it)."""
    revision = compared["revision"]
    print(f"starting mallee at {revision} ({compared['commit'][:7]}) ...", file=sys.stderr)
    source = source_of(compared["commit"], workdir / "baseline-src")
    (workdir / "baseline").mkdir()
    return start_mallee(
        procs,
        workdir / "baseline",
        avoid,
        ready,
        what,
        name=target_name(revision),
        source=source,
        extra_env=extra_env,
    )


def alternate(items: Sequence[Item], turn: int, names: tuple[str, str]) -> list[Item]:
    """`items` in order, except that on odd turns the two named ones swap places (each keeps its
    slot otherwise): the tree's and the baseline's measurements take turns going first. Unchanged
    when either name is missing (no --baseline)."""
    out = list(items)
    where = [i for i, item in enumerate(out) if item.name in names]
    if turn % 2 and len(where) == 2:
        first, second = where
        out[first], out[second] = out[second], out[first]
    return out


# ---------------------------------------------------------------------------------------------
# Figures and report


def figures(report: dict[str, Any], sse_route: str = "endpoint-sse") -> list[dict[str, Any]]:
    """The compared figures from the report's `large` and `small` rows (four, and the large SSE-S3
    ones when the baseline has encryption; `sse_route`: the tree's SSE-S3 route): the tree's value, the
    baseline's, tree / baseline (None when the baseline measured nothing), and each side's runs
    (the large rounds; the small rounds with --rounds, else the one measurement)."""
    base = report["baseline"]["name"]
    value: dict[tuple[str, str], float] = {}
    runs: dict[tuple[str, str], list[float]] = {}
    for r in report["large"]:
        value[r["operation"], r["route"]], runs[r["operation"], r["route"]] = r["mib_per_s"], r["runs"]
    for r in report["small"]:
        value[r["operation"], r["target"]] = r["ops_per_s"]
    for r in report.get("small_rounds") or report["small"]:
        runs.setdefault((r["operation"], r["target"]), []).append(r["ops_per_s"])
    rows = [(f"large {op}, endpoint", "MiB/s", (op, TREE_ROUTE), (op, ROUTE)) for op in ("PUT", "GET")]
    if ("GET", SSE_BASELINE_ROUTE) in value:
        rows += [
            (f"large {op}, SSE-S3", "MiB/s", (op, sse_route), (op, SSE_BASELINE_ROUTE))
            for op in ("PUT", "GET")
        ]
    rows += [
        (f"4 KiB {op} ops/s", "ops/s", (op, TREE_TARGET), (op, base)) for op in ("PutObject", "GetObject")
    ]
    return [
        {
            "figure": name,
            "unit": unit,
            "tree": value[tree],
            "baseline": value[baseline],
            "ratio": round(value[tree] / value[baseline], 3) if value[baseline] else None,
            "tree_runs": runs[tree],
            "baseline_runs": runs[baseline],
        }
        for name, unit, tree, baseline in rows
    ]


def _runs(values: Sequence[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def print_baseline(report: dict[str, Any]) -> None:
    base = report["baseline"]
    tree = f"working tree at {base['tree_commit'][:7]}"
    if base["tree_src_modified"]:
        tree += " + uncommitted changes in src"
    print(f"tree vs baseline: {tree} vs {base['name']} = {base['commit'][:7]}; ratio = tree / baseline")
    header = f"{'figure':<32} {'tree':<16} {'baseline':<16} {'ratio':>7}  runs: tree | baseline"
    print(header)
    print("-" * len(header))
    for row in base["figures"]:
        unit = row["unit"]
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        runs = " | ".join(_runs(row[side]) for side in ("tree_runs", "baseline_runs"))
        print(
            f"{row['figure']:<32} {row['tree']:>9,.0f} {unit:<6} {row['baseline']:>9,.0f} {unit:<6} "
            f"{ratio:>7}  {runs}"
        )
