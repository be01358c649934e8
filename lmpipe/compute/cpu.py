"""What the CPU this process runs on offers: cores it may use, and whether it computes bf16 natively."""

from __future__ import annotations

import os
from pathlib import Path

# CPU instructions that compute in bf16 natively (AVX-512 BF16: Zen 4, Cooper Lake; AMX: Sapphire Rapids).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


def available_cores() -> int:
    """Cores this process may use (cgroup/affinity aware), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def cpuinfo_value(field: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The first CPU's `field` as Linux's /proc/cpuinfo reports it; None elsewhere (macOS, Windows)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == field:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags; empty where there is no /proc/cpuinfo."""
    return frozenset((cpuinfo_value("flags", cpuinfo) or "").split())


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & NATIVE_BF16_CPU_FLAGS)
