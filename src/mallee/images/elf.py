"""Just enough ELF64 reading for image building: a section's bytes (a kernel module's `.modinfo`),
a program's DT_NEEDED libraries and its interpreter. Reading them ourselves avoids running `ldd`
(which executes the program's loader) and `modinfo` (not installed on minimal hosts)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
_SHT_DYNAMIC = 6
_DT_NEEDED = 1


@dataclass(frozen=True)
class _Section:
    name_offset: int
    kind: int
    offset: int
    size: int
    link: int


class ElfFile:
    """A parsed little-endian ELF64 image held in memory."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
            raise ValueError("not a little-endian ELF64 file")
        self.data = data
        self._sections = self._read_sections()
        names = self._sections[struct.unpack_from("<H", data, 0x3E)[0]]
        self._by_name = {self._string(names.offset, s.name_offset): s for s in self._sections}

    def section(self, name: str) -> bytes | None:
        """The raw bytes of the section called `name`, or None."""
        found = self._by_name.get(name)
        return None if found is None else self.data[found.offset : found.offset + found.size]

    def needed(self) -> list[str]:
        """The sonames in DT_NEEDED, in order (empty for a static program)."""
        result = []
        for section in self._sections:
            if section.kind != _SHT_DYNAMIC:
                continue
            strings = self._sections[section.link].offset
            for index in range(section.size // 16):
                tag, value = struct.unpack_from("<qQ", self.data, section.offset + index * 16)
                if tag == _DT_NEEDED:
                    result.append(self._string(strings, value))
        return result

    def interpreter(self) -> str | None:
        """The program interpreter (dynamic loader) path, or None for a static program."""
        interp = self.section(".interp")
        return None if interp is None else interp.rstrip(b"\0").decode()

    def _read_sections(self) -> list[_Section]:
        shoff = struct.unpack_from("<Q", self.data, 0x28)[0]
        entsize, count = struct.unpack_from("<HH", self.data, 0x3A)
        sections = []
        for index in range(count):
            name, kind, _flags, _addr, offset, size, link = struct.unpack_from(
                "<IIQQQQI", self.data, shoff + index * entsize
            )
            sections.append(_Section(name, kind, offset, size, link))
        return sections

    def _string(self, table_offset: int, index: int) -> str:
        start = table_offset + index
        return self.data[start : self.data.index(b"\0", start)].decode()


def modinfo(module: bytes) -> dict[str, list[str]]:
    """A kernel module's `.modinfo` key=value pairs (keys such as "alias" repeat, hence lists)."""
    section = ElfFile(module).section(".modinfo") or b""
    info: dict[str, list[str]] = {}
    for item in section.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info
