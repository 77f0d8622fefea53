"""Decide whether this host's KVM is worth using, or whether guests should run under TCG (`qemu`).

`/dev/kvm` opening, or even a tiny guest reaching HLT, proves nothing: a paravirtual KVM (kvm_pvm)
passes both yet runs guests 400x slower than real KVM. So after quick hints we time a long-mode loop
of a few million instructions in a throwaway VM made with raw ioctls, in a forked child that the
parent kills when its budget runs out.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import select
import signal
import struct
import time
from dataclasses import dataclass
from pathlib import Path

# The loop takes 1-5 ms on real KVM and ~1.9 s on a paravirtual one; anything under this is "fast".
FAST_LOOP_SECONDS = 0.1
# How long the guest loop may run before the parent gives up on it.
LOOP_BUDGET_SECONDS = 0.5
LOOP_ITERATIONS = 1_500_000  # dec + jnz per iteration: ~3 M instructions

# ioctl numbers from <linux/kvm.h> (x86-64); _IOW/_IOR encode the struct sizes given beside them.
_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_GET_VCPU_MMAP_SIZE = 0xAE04
_KVM_CREATE_VCPU = 0xAE41
_KVM_SET_USER_MEMORY_REGION = 0x4020AE46  # struct kvm_userspace_memory_region, 32 bytes
_KVM_RUN = 0xAE80
_KVM_SET_REGS = 0x4090AE82  # struct kvm_regs, 144 bytes
_KVM_GET_SREGS = 0x8138AE83  # struct kvm_sregs, 312 bytes
_KVM_SET_SREGS = 0x4138AE84
_KVM_EXIT_HLT = 5

_GUEST_MEM = 0x200000  # 2 MiB of guest memory, identity-mapped by one large page
_PML4, _PDPT, _PD, _CODE = 0x1000, 0x2000, 0x3000, 0x8000


@dataclass(frozen=True)
class AcceleratorChoice:
    """The libvirt domain type to use, why, and how long deciding took."""

    domain_type: str  # "kvm" or "qemu"
    reason: str
    seconds: float


@dataclass(frozen=True)
class HostPaths:
    """Where the hints are read from; tests point these at fakes."""

    dev_kvm: Path = Path("/dev/kvm")
    sys_module: Path = Path("/sys/module")
    cpuinfo: Path = Path("/proc/cpuinfo")


def choose_accelerator(timeout: float = 1.0, paths: HostPaths | None = None) -> AcceleratorChoice:
    """Return "kvm" only when a timed guest loop shows hardware-speed KVM; never blocks past `timeout`."""
    start = time.monotonic()
    hint = quick_hint(paths or HostPaths())
    if hint is not None:
        return AcceleratorChoice("qemu", hint, time.monotonic() - start)
    choice = time_kvm_loop(min(LOOP_BUDGET_SECONDS, timeout), timeout, (paths or HostPaths()).dev_kvm)
    return AcceleratorChoice(choice.domain_type, choice.reason, time.monotonic() - start)


def quick_hint(paths: HostPaths) -> str | None:
    """A reason KVM cannot be worth using, found without running a guest; None when unsure."""
    if not paths.dev_kvm.exists():
        return f"{paths.dev_kvm} does not exist"
    if not os.access(paths.dev_kvm, os.R_OK | os.W_OK):
        return f"{paths.dev_kvm} is not readable and writable by this user"
    if (paths.sys_module / "kvm_pvm").exists():
        return "kvm_pvm is loaded: /dev/kvm is a paravirtual KVM, far slower than TCG for full guests"
    try:
        cpuinfo = paths.cpuinfo.read_text()
    except OSError:
        return None
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if not flags & {"vmx", "svm"}:
        return "the CPU shows no vmx/svm flag: no hardware virtualisation"
    return None


def time_kvm_loop(budget: float, timeout: float, dev_kvm: Path = Path("/dev/kvm")) -> AcceleratorChoice:
    """Run the guest loop in a forked child; "kvm" if it halts within FAST_LOOP_SECONDS.

    The child reports b"R" once the VM is set up, then b"D <seconds> <exit reason>" or b"E <error>".
    The parent allows `budget` for the loop itself and `timeout` for everything, then kills the child.
    """
    start = time.monotonic()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        os.close(read_fd)
        _child(write_fd, dev_kvm)
    os.close(write_fd)
    try:
        report = _read_report(read_fd, start, budget, timeout)
    finally:
        os.close(read_fd)
        _reap(pid)
    return _judge(report, budget, time.monotonic() - start)


def _read_report(fd: int, start: float, budget: float, timeout: float) -> bytes:
    """Collect the child's messages until its report line ends or its time is up (then append b"T")."""
    data = b""
    deadline = start + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return data + b"T"
        chunk = os.read(fd, 256)
        if not chunk:
            return data
        if not data and chunk.startswith(b"R"):  # set-up done: the loop itself gets `budget`
            deadline = min(deadline, time.monotonic() + budget)
        data += chunk
    return data


def _judge(report: bytes, budget: float, elapsed: float) -> AcceleratorChoice:
    """Turn the child's report into a choice."""
    body = report.removeprefix(b"R").strip()
    if body.endswith(b"T"):
        return AcceleratorChoice("qemu", f"a KVM guest loop did not halt within {budget:.2f} s", elapsed)
    if body.startswith(b"D"):
        _, seconds, exit_reason = body.decode().split()
        if int(exit_reason) != _KVM_EXIT_HLT:
            return AcceleratorChoice("qemu", f"the KVM test guest exited with reason {exit_reason}", elapsed)
        loop = float(seconds)
        if loop < FAST_LOOP_SECONDS:
            return AcceleratorChoice("kvm", f"a KVM guest loop halted in {loop * 1000:.1f} ms", elapsed)
        return AcceleratorChoice("qemu", f"a KVM guest loop took {loop:.2f} s: KVM is too slow", elapsed)
    detail = body.removeprefix(b"E").decode(errors="replace").strip() or "no report"
    return AcceleratorChoice("qemu", f"the KVM probe failed: {detail}", elapsed)


def _reap(pid: int) -> None:
    """Kill the child if it still runs (it may be stuck in KVM_RUN) and collect it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _child(fd: int, dev_kvm: Path) -> None:
    """Set up the VM, time KVM_RUN, write the report and exit without running any parent cleanup."""
    code = 0
    try:
        vcpu, run, _memory = _make_vm(dev_kvm)  # _memory: keep the guest RAM mapped
        os.write(fd, b"R")
        start = time.perf_counter()
        fcntl.ioctl(vcpu, _KVM_RUN, 0)
        seconds = time.perf_counter() - start
        exit_reason = struct.unpack_from("<I", run, 8)[0]
        os.write(fd, f"D {seconds:.6f} {exit_reason}\n".encode())
    except BaseException as exc:  # anything at all must become a report, not a stray parent
        os.write(fd, f"E {type(exc).__name__}: {exc}\n".encode())
        code = 1
    os._exit(code)


def _make_vm(dev_kvm: Path) -> tuple[int, mmap.mmap, mmap.mmap]:
    """A VM with one vCPU in 64-bit mode at the loop: the vCPU fd, its kvm_run mapping, guest RAM."""
    kvm = os.open(dev_kvm, os.O_RDWR | os.O_CLOEXEC)
    if fcntl.ioctl(kvm, _KVM_GET_API_VERSION, 0) != 12:
        raise RuntimeError("unexpected KVM API version")
    vm = fcntl.ioctl(kvm, _KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, _GUEST_MEM)
    _fill_guest_memory(memory)
    address = _buffer_address(memory)
    region = struct.pack("<IIQQQ", 0, 0, 0, _GUEST_MEM, address)
    fcntl.ioctl(vm, _KVM_SET_USER_MEMORY_REGION, region)
    vcpu = fcntl.ioctl(vm, _KVM_CREATE_VCPU, 0)
    run = mmap.mmap(vcpu, fcntl.ioctl(kvm, _KVM_GET_VCPU_MMAP_SIZE, 0))
    _enter_long_mode(vcpu)
    regs = bytearray(144)
    struct.pack_into("<QQ", regs, 128, _CODE, 0x2)  # rip, rflags (bit 1 is always set)
    struct.pack_into("<Q", regs, 48, _GUEST_MEM - 0x10)  # rsp
    fcntl.ioctl(vcpu, _KVM_SET_REGS, bytes(regs))
    return vcpu, run, memory


def _buffer_address(memory: mmap.mmap) -> int:
    """The host virtual address of an anonymous mapping (KVM needs it for the memory slot)."""
    import ctypes  # local: only the forked child needs ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(memory))


def _fill_guest_memory(memory: mmap.mmap) -> None:
    """Page tables identity-mapping the first 2 MiB, and the loop: mov ecx,N; dec ecx; jnz; hlt."""
    struct.pack_into("<Q", memory, _PML4, _PDPT | 0x3)  # present | writable
    struct.pack_into("<Q", memory, _PDPT, _PD | 0x3)
    struct.pack_into("<Q", memory, _PD, 0x83)  # present | writable | 2 MiB page
    code = b"\xb9" + struct.pack("<I", LOOP_ITERATIONS) + b"\xff\xc9\x75\xfc\xf4"
    memory[_CODE : _CODE + len(code)] = code


def _enter_long_mode(vcpu: int) -> None:
    """Switch the vCPU's special registers to 64-bit paging with flat long-mode segments."""
    sregs = bytearray(fcntl.ioctl(vcpu, _KVM_GET_SREGS, bytes(312)))
    # struct kvm_segment: base u64, limit u32, selector u16, type, present, dpl, db, s, l, g, avl u8 ...
    code_seg = struct.pack("<QIHBBBBBBBBBB", 0, 0xFFFFFFFF, 8, 11, 1, 0, 0, 1, 1, 1, 0, 0, 0)
    data_seg = struct.pack("<QIHBBBBBBBBBB", 0, 0xFFFFFFFF, 16, 3, 1, 0, 0, 1, 0, 1, 0, 0, 0)
    sregs[0:24] = code_seg  # cs
    for index in range(1, 6):  # ds, es, fs, gs, ss
        sregs[index * 24 : index * 24 + 24] = data_seg
    # After 8 segments (tr, ldt included) and gdt/idt (16 bytes each): cr0, cr2, cr3, cr4, cr8, efer.
    control = 8 * 24 + 2 * 16
    cr0 = 0x80000001 | 0x10 | 0x20  # PG | PE | ET | NE
    struct.pack_into("<QQQQQQ", sregs, control, cr0, 0, _PML4, 0x20, 0, 0x500)  # CR4.PAE; EFER LME|LMA
    fcntl.ioctl(vcpu, _KVM_SET_SREGS, bytes(sregs))
