"""Pick the device and precision at run time, so one config runs on a laptop or a GPU pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lmpipe.compute.cpu import available_cores, cpu_has_native_bf16

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
