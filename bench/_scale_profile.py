"""Where a service's CPU goes while the benchmark drives it: py-spy samples the process (by pid)
for a few seconds while `work` runs, and the stacks are summed per function, with the share of
samples inside it (inclusive) and in its own code (self). Only the thread holding Python's lock is
sampled, so the shares are of the process's Python CPU time, not of its waiting."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

PY_SPY = Path(sys.executable).parent / "py-spy"


def available() -> bool:
    return PY_SPY.exists() or shutil.which("py-spy") is not None


def sample(
    pids: dict[str, int],
    seconds: float,
    work: Callable[[], None],
    out: Path,
    *,
    repeat: bool = True,
    top: int = 18,
) -> dict[str, str]:
    """Sample each of `pids` (name -> pid) for `seconds` while `work` runs (over and over with
    `repeat`, else once); each process's summary (or why there is none)."""
    binary = str(PY_SPY) if PY_SPY.exists() else "py-spy"
    started: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, pid in pids.items():
        raw = out / f"{name}.raw"
        # --gil: only the thread holding Python's lock, i.e. where the process's Python CPU goes
        # (waits on sockets, locks and queues are left out); --nonblocking: never pauses it.
        command = [binary, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100", "-f", "raw"]
        command += ["--gil", "--nonblocking"]
        process = subprocess.Popen(
            [*command, "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        started[name] = (process, raw)
    summaries: dict[str, str] = {}
    try:
        time.sleep(0.5)  # py-spy attaches
        work()
        while repeat and any(p.poll() is None for p, _ in started.values()):
            work()
        for name, (process, raw) in started.items():
            try:
                _, errors = process.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                summaries[name] = "(py-spy did not finish in time)"
                continue
            if process.returncode != 0 or not raw.exists():
                summaries[name] = f"(py-spy failed: {errors.decode(errors='replace').strip()[-300:]})"
            else:
                summaries[name] = summarize(raw.read_text(), top)
    finally:
        for process, _ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return summaries


def summarize(collapsed: str, top: int) -> str:
    """Per function: % of samples with it on the stack (inclusive) and at its top (self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; inclusive (on the stack) | self (running its own code):"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {100 * own[frame] / total:5.1f}%  {frame}")
    lines.append("most self time:")
    for frame, count in own.most_common(top // 2):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` -> `fn (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
