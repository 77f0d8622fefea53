"""The ceiling of an encrypted GET on this machine, without any HTTP server: a 256 MiB file sent
over loopback to a receiver process (recv_into a reused buffer, as bench/_s3client does), four ways:

  plain:   mmap + sendall of 1 MiB views (what Walrus does unencrypted; no decryption)
  inline:  one thread decrypts a chunk (AES-256-CTR, update_into one reused buffer) and sends it
           (what Walrus does encrypted, walrus/decoding.py)
  piped:   one thread decrypts up to 3 chunks ahead, another sends
  split:   two threads decrypt the two halves of each chunk at once, then it is sent

Prints MiB/s, server and client CPU and each way's ratio to plain (medians of ROUNDS, default 5):
how close to the unencrypted GET any Python server could come here. CHUNK (bytes) in the
environment changes the chunk size.

    .venv/bin/python bench/sse_ceiling.py [ROUNDS]
"""

import mmap
import os
import queue
import socket
import sys
import tempfile
import threading
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SIZE = 256 * 1024 * 1024
CHUNK = int(os.environ.get("CHUNK", 1024 * 1024))
KEY = os.urandom(32)


def receiver(port: int, done: "multiprocessing.Queue") -> None:  # noqa: F821
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    got = 0
    t0 = time.process_time()
    while got < SIZE:
        n = s.recv_into(view)
        if not n:
            break
        got += n
    done.put((got, time.process_time() - t0))


def serve(mode: str, path: str) -> tuple[float, float, float]:
    import multiprocessing

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    done: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=receiver, args=(port, done))
    proc.start()
    conn, _ = lst.accept()
    f = open(path, "rb")  # noqa: SIM115 - closed below, after the view and the mapping
    m = mmap.mmap(f.fileno(), SIZE, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
    view = memoryview(m)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if mode == "plain":
        for off in range(0, SIZE, CHUNK):
            conn.sendall(view[off : off + CHUNK])
    elif mode == "inline":
        dec = Cipher(algorithms.AES(KEY), modes.CTR(b"\0" * 16)).decryptor()
        out = bytearray(CHUNK + 15)
        for off in range(0, SIZE, CHUNK):
            n = dec.update_into(view[off : off + CHUNK], out)
            conn.sendall(memoryview(out)[:n])
    elif mode == "split":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(1)
        out = bytearray(CHUNK + 16)
        half = CHUNK // 2

        def dec_part(off: int, lo: int, hi: int) -> None:
            d = Cipher(algorithms.AES(KEY), modes.CTR(((off + lo) // 16).to_bytes(16, "big"))).decryptor()
            d.update_into(view[off + lo : off + hi], memoryview(out)[lo : hi + 15])

        for off in range(0, SIZE, CHUNK):
            fut = pool.submit(dec_part, off, half, CHUNK)
            dec_part(off, 0, half)
            fut.result()
            conn.sendall(memoryview(out)[:CHUNK])
        pool.shutdown()
    else:
        q: queue.Queue = queue.Queue(maxsize=3)
        free: queue.Queue = queue.Queue()
        for _ in range(4):
            free.put(bytearray(CHUNK + 15))

        def decrypt() -> None:
            dec = Cipher(algorithms.AES(KEY), modes.CTR(b"\0" * 16)).decryptor()
            for off in range(0, SIZE, CHUNK):
                out = free.get()
                dec.update_into(view[off : off + CHUNK], out)
                q.put(out)
            q.put(None)

        t = threading.Thread(target=decrypt)
        t.start()
        while (out := q.get()) is not None:
            conn.sendall(memoryview(out)[:CHUNK])
            free.put(out)
        t.join()
    got, client_cpu = done.get()
    elapsed = time.perf_counter() - t0
    server_cpu = time.process_time() - cpu0
    proc.join()
    conn.close()
    view.release()
    m.close()
    f.close()
    assert got == SIZE
    return SIZE / elapsed / 2**20, 100 * server_cpu / elapsed, 100 * client_cpu / elapsed


def main() -> None:
    with tempfile.NamedTemporaryFile(dir="/var/tmp") as f:
        f.write(os.urandom(SIZE))
        f.flush()
        results: dict[str, list[tuple[float, float, float]]] = {
            "plain": [],
            "inline": [],
            "piped": [],
            "split": [],
        }
        for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
            for mode in results:
                results[mode].append(serve(mode, f.name))
        base = sorted(r[0] for r in results["plain"])[len(results["plain"]) // 2]
        for mode, rs in results.items():
            rs.sort()
            mid = rs[len(rs) // 2]
            runs = ", ".join(f"{r[0]:,.0f}" for r in rs)
            print(
                f"{mode:7s} {mid[0]:8,.0f} MiB/s  server CPU {mid[1]:4.0f}%  client CPU {mid[2]:4.0f}%"
                f"  x{mid[0] / base:.2f}  all: {runs}"
            )


if __name__ == "__main__":
    main()
