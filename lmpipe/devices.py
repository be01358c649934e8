"""Pick the device and precision at run time, so one config runs on a laptop or a GPU pool."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class DevicePlan:
    device: str  # "cuda" or "cpu"
    precision: Precision
    cpu_threads: int

    def describe(self) -> str:
        if self.device == "cuda":
            return f"cuda ({torch.cuda.get_device_name(0)}), {self.precision}"
        return f"cpu, {self.cpu_threads} threads, {self.precision}"


def available_cores() -> int:
    """Cores this process may use (cgroup/affinity aware), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# CPU instructions that compute in bf16 natively (AVX-512 BF16: Zen 4, Cooper Lake; AMX: Sapphire Rapids).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


CPUINFO = Path("/proc/cpuinfo")


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


def plan_device(requested: Literal["auto", "fp32", "bf16", "fp16"] = "auto") -> DevicePlan:
    cores = available_cores()
    if not torch.cuda.is_available():
        # bf16 autocast where the CPU computes bf16 natively: faster than fp32 at the same loss
        # (bench/train_bench.py, figures in bench/README.md). Emulated bf16 and fp16 are not: fp32.
        if requested == "auto":
            return DevicePlan("cpu", "bf16" if cpu_has_native_bf16() else "fp32", cores)
        return DevicePlan("cpu", "bf16" if requested == "bf16" else "fp32", cores)
    if requested == "auto":
        # Native bf16 only (Ampere+); emulated bf16 on a T4/V100 is slower than fp16.
        requested = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return DevicePlan("cuda", requested, cores)


def use_planned_threads(plan: DevicePlan) -> None:
    if plan.device == "cpu":
        torch.set_num_threads(plan.cpu_threads)
