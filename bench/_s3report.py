"""bench/s3.py's results, the targets they are judged against, and the printed report."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from _harness import print_facts
from _loadgen import LoadResult
from _s3baseline import ROUTE, SSE_BASELINE_ROUTE, print_baseline
from _s3client import Transfer

GET_TARGET, PUT_TARGET, SMALL_TARGET = 0.8, 0.6, 10.0
SSE_TARGET_RATIO = 0.8  # SSE-S3 against the same figure unencrypted, in the same run
SSE_ROUTE = "endpoint-sse"  # the large-object route to the tree's endpoint, SSE-S3 bucket
SSE_TARGET = "mallee SSE-S3"  # ... and the small-object target
RSS_LIMIT_MIB = 150.0


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class LargeResult:
    """One kind of large transfer (say, GET through the endpoint): every run's MiB/s."""

    operation: str
    route: str
    runs: list[float] = field(default_factory=list)
    server_cpu_pct: list[float] = field(default_factory=list)

    def add(self, transfer: Transfer, server_cpu_pct: float) -> None:
        self.runs.append(round(transfer.mb_per_s, 1))
        self.server_cpu_pct.append(server_cpu_pct)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else 0.0

    def row(self) -> dict[str, Any]:
        return {**asdict(self), "mib_per_s": round(self.median, 1)}


@dataclass
class SmallResult:
    operation: str
    target: str
    load: LoadResult
    server_cpu_pct: float

    @classmethod
    def combine(cls, rounds: Sequence[SmallResult]) -> SmallResult:
        """The rounds of one operation on one target as one: requests and seconds added up (ops/s
        is the overall rate), the median of the rounds' p50 and p99, the largest max, every error,
        the mean server CPU."""
        if len(rounds) == 1:
            return rounds[0]
        loads = [r.load for r in rounds]
        load = LoadResult.combined(loads)
        cpu = round(statistics.fmean(r.server_cpu_pct for r in rounds), 1)
        return cls(rounds[0].operation, rounds[0].target, load, cpu)

    def row(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "target": self.target,
            **asdict(self.load),
            "ops_per_s": round(self.load.rps, 1),
            "errors": self.load.errors,
            "server_cpu_pct": self.server_cpu_pct,
            "loadgen_cpu_pct": round(100 * self.load.loadgen_cpu_seconds / self.load.seconds, 1)
            if self.load.seconds
            else 0.0,
        }


# ---------------------------------------------------------------------------------------------
# Targets and report


@dataclass
class Verdict:
    """One figure against its baseline: the ratio and whether the target is met (None: not judged)."""

    name: str
    figure: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None

    @property
    def result(self) -> str:
        return {True: "met", False: "MISSED", None: "-"}[self.met]


def _ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 2) if baseline else None


def _large_verdicts(large: Sequence[LargeResult], limits: dict[str, float]) -> list[Verdict]:
    by = {(r.operation, r.route): r.median for r in large}
    labels = {"endpoint": "endpoint", "walrus": "Walrus port"}
    verdicts = []
    for op, limit_name, limit, target in (
        ("GET", "loopback limit", limits["loopback_mib_per_s"], GET_TARGET),
        ("PUT", "read+MD5+write", limits["store_mib_per_s"], PUT_TARGET),
    ):
        for route, judged in (("endpoint", True), ("walrus", False)):
            ratio = _ratio(by[op, route], limit)
            verdicts.append(
                Verdict(
                    f"large {op}, {labels[route]}",
                    f"{by[op, route]:,.0f} MiB/s",
                    f"{limit_name} {limit:,.0f} MiB/s",
                    ratio,
                    f">= {target:.1f}x" if judged else "(info)",
                    (ratio is not None and ratio >= target) if judged else None,
                )
            )
    return verdicts


def _small_verdicts(small: Sequence[SmallResult]) -> list[Verdict]:
    verdicts = []
    for op in ("PutObject", "GetObject"):
        by = {r.target: r.load.rps for r in small if r.operation == op}
        ratio = _ratio(by["mallee"], by["moto"])
        verdicts.append(
            Verdict(
                f"4 KiB {op} ops/s",
                f"{by['mallee']:,.0f} ops/s",
                f"moto {by['moto']:,.0f} ops/s",
                ratio,
                f">= {SMALL_TARGET:.0f}x",
                ratio is not None and ratio >= SMALL_TARGET,
            )
        )
    return verdicts


def _memory_verdict(big: dict[str, Any] | None) -> Verdict:
    name, target = "Walrus RSS, 5 GiB PUT+GET", f"< {RSS_LIMIT_MIB:.0f} MiB"
    if big is None:
        return Verdict(name, "not run", "needs --big", None, target, None)
    if "skipped" in big:
        return Verdict(name, "skipped", "not enough free disk", None, target, None)
    peak = max(big["put_peak_rss_mib"], big["get_peak_rss_mib"])
    return Verdict(
        name, f"{peak:.0f} MiB", f"limit {RSS_LIMIT_MIB:.0f} MiB", None, target, peak < RSS_LIMIT_MIB
    )


def verdicts(
    report: dict[str, Any], large: Sequence[LargeResult], small: Sequence[SmallResult]
) -> list[Verdict]:
    return [
        *_large_verdicts(large, report["limits"]),
        *_small_verdicts(small),
        *_sse_verdicts(large, small),
        _memory_verdict(report.get("big")),
    ]


def _sse_verdicts(large: Sequence[LargeResult], small: Sequence[SmallResult]) -> list[Verdict]:
    """SSE-S3 (a bucket with default encryption) against the same endpoint unencrypted."""
    pairs: list[tuple[str, str, float, float]] = []
    by_route = {(r.operation, r.route): r.median for r in large}
    for op in ("PUT", "GET"):
        if (op, SSE_ROUTE) in by_route:
            pairs.append((f"large {op}, SSE-S3", "MiB/s", by_route[op, SSE_ROUTE], by_route[op, "endpoint"]))
    by_target = {(r.operation, r.target): r.load.rps for r in small}
    for op in ("PutObject", "GetObject"):
        if (op, SSE_TARGET) in by_target:
            pairs.append((f"4 KiB {op}, SSE-S3", "ops/s", by_target[op, SSE_TARGET], by_target[op, "mallee"]))
    found = []
    for name, unit, value, plain in pairs:
        ratio = _ratio(value, plain)
        found.append(
            Verdict(
                name,
                f"{value:,.0f} {unit}",
                f"unencrypted {plain:,.0f} {unit}",
                ratio,
                f">= {SSE_TARGET_RATIO:.1f}x",
                ratio is not None and ratio >= SSE_TARGET_RATIO,
            )
        )
    return found


def _print_large(report: dict[str, Any], large: Sequence[LargeResult]) -> None:
    settings = report["settings"]
    labels = {
        ("PUT", SSE_ROUTE): "mallee endpoint SSE-S3",
        ("GET", SSE_ROUTE): "mallee endpoint SSE-S3",
        ("PUT", "limit"): "limit: read+MD5+write",
        ("GET", "limit"): "limit: sendfile",
        ("GET", "limit-copy"): "limit: read+send",
    }
    if "baseline" in report:
        name = report["baseline"]["name"]
        labels.update({(op, ROUTE): f"{name} endpoint" for op in ("PUT", "GET")})
        labels.update({(op, SSE_BASELINE_ROUTE): f"{name} endpoint SSE-S3" for op in ("PUT", "GET")})
    rows = []
    for r in large:
        label = labels.get((r.operation, r.route)) or {"endpoint": "mallee endpoint"}.get(
            r.route, "walrus port (direct)"
        )
        rows.append((f"{r.operation} {label}", r))
    width = max(32, *(len(label) for label, _ in rows))  # a baseline's name (mallee@REV) may be longer
    header = f"{'large object':<{width}} {'MiB/s':>8}  {'runs (MiB/s)':<28} {'srv CPU':>8}"
    print(f"large objects: {settings['size_mib']} MiB, median of {settings['repeat']} runs, one connection")
    print(header)
    print("-" * len(header))
    for label, r in rows:
        runs = ", ".join(f"{v:,.0f}" for v in r.runs)
        cpu = statistics.median(r.server_cpu_pct) if r.server_cpu_pct else 0.0
        print(f"{label:<{width}} {r.median:>8,.0f}  {runs:<28} {cpu:>7.0f}%")


def _print_small(small: Sequence[SmallResult]) -> None:
    width = max(7, *(len(r.target) for r in small))  # a baseline's name (mallee@REV) may be longer
    header = (
        f"{'small object (4 KiB)':<22} {'target':<{width}} {'ops/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6} {'srv CPU':>8} {'gen CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in small:
        load, gen_cpu = r.load, r.row()["loadgen_cpu_pct"]
        print(
            f"{r.operation:<22} {r.target:<{width}} {load.rps:>8,.0f} {load.p50_ms:>8.2f} "
            f"{load.p99_ms:>8.2f} {load.max_ms:>8.1f} {load.errors:>6} {r.server_cpu_pct:>7.0f}% "
            f"{gen_cpu:>7.0f}%"
        )


def _print_memory(report: dict[str, Any]) -> None:
    mem, big = report["memory"], report.get("big")
    workers = ", ".join(
        f"pid {pid} {start['VmRSS']} -> {end['VmRSS']} MiB (VmHWM {end['VmHWM']})"
        for pid, start, end in zip(mem["walrus_pids"], mem["start"], mem["end"], strict=True)
    )
    print(
        f"memory:   walrus workers RSS at start -> end: {workers}; max sampled during the "
        f"{report['settings']['size_mib']} MiB transfers {mem['large_peak_rss_mib']} MiB in one worker, "
        f"{mem['large_peak_total_rss_mib']} MiB all workers"
    )
    if big and "skipped" not in big:
        print(
            f"--big:    5 GiB PUT {big['put_mib_per_s']:,.0f} MiB/s "
            f"(walrus RSS max {big['put_peak_rss_mib']} MiB in one worker, "
            f"{big['put_peak_total_rss_mib']} MiB all), GET {big['get_mib_per_s']:,.0f} MiB/s "
            f"(max {big['get_peak_rss_mib']} MiB in one worker, {big['get_peak_total_rss_mib']} MiB all)"
        )


def _print_verdicts(found: Sequence[Verdict]) -> None:
    header = f"{'figure':<32} {'value':<16} {'baseline':<30} {'ratio':>6}  {'target':<10} result"
    print(header)
    print("-" * len(header))
    for v in found:
        ratio = "" if v.ratio is None else f"{v.ratio:.2f}x"
        print(f"{v.name:<32} {v.figure:<16} {v.baseline:<30} {ratio:>6}  {v.target:<10} {v.result}")


def print_report(
    report: dict[str, Any],
    large: Sequence[LargeResult],
    small: Sequence[SmallResult],
    found: Sequence[Verdict],
) -> None:
    print_facts(report["machine"], report["versions"])
    limits, settings = report["limits"], report["settings"]
    sendfile, copy = limits["loopback_sendfile_mib_per_s"], limits["loopback_copy_mib_per_s"]
    print(
        f"limits:   loopback {limits['loopback_mib_per_s']:,.0f} MiB/s (best of sendfile "
        f"{sendfile:,.0f} and read+send {copy:,.0f}), "
        f"read+MD5+write+fsync {limits['store_mib_per_s']:,.0f} MiB/s, "
        f"MD5 on one core {limits['md5_mib_per_s']:,.0f} MiB/s"
    )
    print(
        f"small:    {settings['client']}, {settings['connections']} connections, "
        f"{settings['threads']} threads, "
        f"{settings['warmup']} s warm-up + {settings['seconds']} s per measurement"
        + (f", {settings['rounds']} rounds interleaved" if "rounds" in settings else "")
    )
    _print_memory(report)
    print()
    _print_large(report, large)
    print()
    _print_small(small)
    print()
    _print_verdicts(found)
    if "baseline" in report:
        print()
        print_baseline(report)
