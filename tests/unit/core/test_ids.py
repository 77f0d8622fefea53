"""Request ids: UUID-shaped (EC2 clients read 36 characters) and never repeated."""

from __future__ import annotations

import os
import uuid

from mallee.core import ids


def test_request_ids_are_uuid4_shaped_and_unique() -> None:
    made = [ids.request_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for value in made[:100]:
        assert len(value) == 36
        assert str(uuid.UUID(value)) == value  # lower-case hex, dashes in place
        assert uuid.UUID(value).version == 4


def test_a_forked_process_draws_its_own_request_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, ids.request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 36
    assert child[:24] != ids.request_id()[:24]  # another random prefix, not a shared counter
