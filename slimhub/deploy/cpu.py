"""What CPU this is: vendor, model name and the instruction-set flags that decide how
int8 kernels compute (read from /proc/cpuinfo; elsewhere from the platform module)."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # in the order they matter


@dataclass(frozen=True)
class CPU:
    vendor: str  # "GenuineIntel", "AuthenticAMD", ... ("" when unknown)
    model: str
    flags: frozenset

    @property
    def is_amd(self):
        return self.vendor == "AuthenticAMD"

    @property
    def has_vnni(self):
        """32-bit int8 accumulation (VNNI or AMX): full 8-bit weights are exact."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def kind(self):
        """A short name of the int8 path: "x86 AVX2, no VNNI", "x86 AVX512-VNNI+AMX", ..."""
        if platform.machine().lower() in ("aarch64", "arm64"):
            return "ARM"
        if "amx_int8" in self.flags:
            return "x86 AVX512-VNNI+AMX"
        if "avx512_vnni" in self.flags:
            return "x86 AVX512-VNNI"
        if "avx_vnni" in self.flags:
            return "x86 AVX-VNNI"
        if "avx512f" in self.flags:
            return "x86 AVX-512, no VNNI"
        return "x86 AVX2, no VNNI" if "avx2" in self.flags else "x86 without AVX2"

    def describe(self):
        """One line: model, kind and the int8-relevant flags present."""
        present = [f for f in INT8_FLAGS if f in self.flags]
        return f"{self.model or 'unknown CPU'} ({self.kind}; flags: {' '.join(present) or 'none'})"


@functools.lru_cache(maxsize=1)
def cpu_info():
    """The :class:`CPU` of this machine (first processor of /proc/cpuinfo)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return CPU(vendor=fields.get("vendor_id", ""), model=fields.get("model name", platform.processor()),
               flags=frozenset(fields.get("flags", "").split()))
