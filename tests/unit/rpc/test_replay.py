"""The replay store: a nonce is new once while it is remembered, the memory is bounded and forgets
by itself, and processes sharing its file agree on which one saw a nonce first."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mallee.core.interprocess import FileLock
from mallee.rpc.replay import WINDOW, NonceStore, StoreFull

NOW = 1_800_000_000


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> NonceStore:
    made = NonceStore(tmp_path / "nonces" if request.param == "file" else None)
    request.addfinalizer(made.close)
    return made


def test_a_nonce_is_new_once_until_its_entry_expires(store: NonceStore) -> None:
    nonce = os.urandom(12)
    assert store.first_use(nonce, NOW + 61, NOW)
    assert not store.first_use(nonce, NOW + 61, NOW)
    assert not store.first_use(nonce, NOW + 70, NOW + 61)  # the last second it is remembered
    assert store.first_use(nonce, NOW + 123, NOW + 62)  # forgotten: its date is out of the window now
    assert store.first_use(os.urandom(12), NOW + 61, NOW)


def _same_window(n: int) -> list[bytes]:
    """`n` nonces that all fall in one window of the table."""
    return [b"\x07\x00\x00\x00" + i.to_bytes(8, "big") for i in range(n)]


def test_a_full_window_refuses_a_nonce_rather_than_forget_one(store: NonceStore) -> None:
    crowd = _same_window(WINDOW + 1)
    for nonce in crowd[:WINDOW]:
        assert store.first_use(nonce, NOW + 61, NOW)
    with pytest.raises(StoreFull):
        store.first_use(crowd[WINDOW], NOW + 61, NOW)
    assert all(not store.first_use(nonce, NOW + 61, NOW) for nonce in crowd[:WINDOW])  # all still known
    assert store.first_use(crowd[WINDOW], NOW + 130, NOW + 62)  # once they expire there is room


def test_stores_on_one_file_see_each_others_nonces_and_outlive_a_restart(tmp_path: Path) -> None:
    one, two = NonceStore(tmp_path / "nonces"), NonceStore(tmp_path / "nonces")
    nonce = os.urandom(12)
    assert one.first_use(nonce, NOW + 61, NOW)
    assert not two.first_use(nonce, NOW + 61, NOW)
    one.close()
    two.close()
    again = NonceStore(tmp_path / "nonces")
    assert not again.first_use(nonce, NOW + 61, NOW)
    again.close()


def test_a_store_waits_for_the_flock_another_process_holds(tmp_path: Path) -> None:
    store = NonceStore(tmp_path / "nonces")
    other = FileLock(tmp_path / "nonces")  # an open file of its own, as another process has
    other.acquire()
    done = threading.Event()
    worker = threading.Thread(target=lambda: (store.first_use(os.urandom(12), NOW + 61, NOW), done.set()))
    worker.start()
    try:
        assert not done.wait(0.3), "the store changed the table under another's lock"
    finally:
        other.release()
    assert done.wait(10)
    worker.join()
    other.close()
    store.close()


# A process offering the same nonces as its rivals, each at the same moment as they do (one every
# millisecond from a start it is told once all are ready): which ones it was first to.
_RIVAL = """
import json, sys, time
from pathlib import Path
from mallee.rpc.replay import NonceStore

job = json.loads(sys.stdin.readline())
store = NonceStore(Path(job["path"]))
print("ready", flush=True)
start = float(sys.stdin.readline())
won = []
for i, nonce in enumerate(bytes.fromhex(n) for n in job["nonces"]):
    moment = start + i * 0.001
    while time.time() < moment:
        pass
    if store.first_use(nonce, job["now"] + 61, job["now"]):
        won.append(i)
print(json.dumps(won))
"""


def test_processes_racing_on_one_file_accept_each_nonce_exactly_once(tmp_path: Path) -> None:
    """Each nonce is offered by every process at about the same moment: exactly one takes it.
    (Whether the lock is taken at all is checked, deterministically, by the test above.)"""
    # Half of them share a window, so the processes also race for the same free slots.
    nonces = [os.urandom(12) for _ in range(WINDOW * 4)] + _same_window(WINDOW)
    random.shuffle(nonces)
    job = {"path": str(tmp_path / "nonces"), "nonces": [n.hex() for n in nonces], "now": int(time.time())}
    rivals = [
        subprocess.Popen(
            [sys.executable, "-c", _RIVAL],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(max(2, min(4, os.cpu_count() or 1)))
    ]
    try:
        for rival in rivals:
            assert rival.stdin is not None and rival.stdout is not None
            rival.stdin.write(json.dumps(job) + "\n")
            rival.stdin.flush()
        for rival in rivals:
            assert rival.stdout is not None and rival.stdout.readline() == "ready\n"
        start = time.time() + 0.05
        won: list[int] = []
        for rival in rivals:
            out, err = rival.communicate(f"{start}\n", timeout=60)
            assert rival.returncode == 0, err
            won += json.loads(out)
    finally:
        for rival in rivals:
            if rival.poll() is None:
                rival.kill()
                rival.wait()
    assert sorted(won) == list(range(len(nonces)))  # each one once: none twice, none lost
