"""Boot guest images directly with qemu-system-x86_64 (TCG) for tests, and never leave one running.

Run as a script (`python qemu.py imds FILE.json`) it answers one HTTP request on stdin/stdout as the
EC2 instance metadata service would: QEMU's user-mode network starts it per guest connection through
`guestfwd=tcp:169.254.169.254:80-cmd:...`, so tests get metadata without bridges or root networking.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
IMDS_TOKEN = "mallee-test-token"
_POWER_BUTTON_REPEAT_SECONDS = 5.0


@dataclass
class Guest:
    """A running QEMU process and its serial log."""

    process: subprocess.Popen[bytes]
    serial: Path
    qmp: Path
    started: float

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds from QEMU start until `text` appears on the serial console; AssertionError if not."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if text in self.console():
                return time.monotonic() - self.started
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not on the console within {timeout} s:\n{self.console()[-3000:]}")

    def powerdown(self, timeout: float = 30.0) -> int:
        """Press the ACPI power button over QMP until QEMU exits; returns its exit code.

        busybox acpid forks before it opens /dev/input/event*, so a press right after MALLEE-READY can
        be lost on a loaded machine: press again, as the libvirt driver does."""
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.qmp))
            stream = sock.makefile("rw")
            stream.readline()  # greeting
            stream.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
            stream.flush()
            stream.readline()
            while True:
                stream.write(json.dumps({"execute": "system_powerdown"}) + "\n")
                stream.flush()
                stream.readline()
                try:
                    return self.process.wait(
                        min(_POWER_BUTTON_REPEAT_SECONDS, max(0.1, deadline - time.monotonic()))
                    )
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        raise


@contextmanager
def boot(
    workdir: Path,
    kernel: Path,
    initrd: Path,
    append: str = "console=ttyS0",
    disk: Path | None = None,
    nic: str = "none",
    memory_mib: int = 128,
) -> Iterator[Guest]:
    """Start QEMU (q35, TCG, PVH kernel boot) with the console in a file; kill it by pid on exit."""
    serial, qmp = workdir / "serial.log", workdir / "qmp.sock"
    command = [QEMU, "-machine", "q35", "-accel", "tcg", "-m", str(memory_mib), "-nographic",
               "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
               "-serial", f"file:{serial}", "-monitor", "none", "-nic", nic, "-no-reboot",
               "-qmp", f"unix:{qmp},server=on,wait=off"]  # fmt: skip
    if disk is not None:
        command += ["-drive", f"file={disk},if=virtio"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        yield Guest(process, serial, qmp, time.monotonic())
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def user_nic(metadata: Path, forwards: dict[int, int] | None = None) -> str:
    """A -nic value: QEMU user networking with DHCP, the metadata responder and host port forwards
    (host port -> guest port)."""
    responder = f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} imds {shlex.quote(str(metadata))}"
    # slirp forwards only addresses inside its own network, so that network is the link-local one.
    nic = f"user,model=virtio-net-pci,net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:{responder}"
    for host_port, guest_port in (forwards or {}).items():
        nic += f",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"
    return nic


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve_one_metadata_request(metadata: dict[str, str]) -> None:
    """Answer one request on stdin/stdout: PUT /latest/api/token, then token-checked GETs of paths in
    `metadata` ("meta-data/instance-id" -> text)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    method, path, _ = stdin.readline().decode().split(" ", 2)
    headers = {}
    while (line := stdin.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status, body = "404 Not Found", ""
    if method == "PUT" and path == "/latest/api/token":
        status, body = "200 OK", IMDS_TOKEN
    elif headers.get("x-aws-ec2-metadata-token", IMDS_TOKEN) != IMDS_TOKEN:
        status = "401 Unauthorized"
    elif path.removeprefix("/latest/") in metadata:
        status, body = "200 OK", metadata[path.removeprefix("/latest/")]
    data = body.encode()
    log = metadata.get("_log")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{method} {path} token={'x-aws-ec2-metadata-token' in headers} {status}\n")
    stdout.write(f"HTTP/1.0 {status}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode())
    stdout.write(data)
    stdout.flush()


if __name__ == "__main__" and sys.argv[1:2] == ["imds"]:
    _serve_one_metadata_request(json.loads(Path(sys.argv[2]).read_text()))
