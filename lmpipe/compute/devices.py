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

    def describe(self, world_size: int = 1) -> str:
        """Every device the run trains on: 'cuda:0 (H100), cuda:1 (H100), bf16' or 'cpu, 2 processes x 1
        thread, fp32'."""
        if self.device == "cuda":
            names = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(world_size))
            return (
                f"{names}, {self.precision}"
                if world_size > 1
                else f"cuda ({torch.cuda.get_device_name(0)}), {self.precision}"
            )
        if world_size > 1:
            threads = threads_per_process(self, world_size)
            return f"cpu, {world_size} processes x {threads} thread{'s' if threads > 1 else ''}, {self.precision}"
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


def world_size(processes: int | Literal["auto"], plan: DevicePlan) -> int:
    """Training processes on this node (train.processes): as set, or one per visible GPU on CUDA and 1 on a CPU."""
    if processes != "auto":
        return int(processes)
    return max(1, torch.cuda.device_count()) if plan.device == "cuda" else 1


def threads_per_process(plan: DevicePlan, local_processes: int) -> int:
    """A CPU's cores shared among the ranks on it: N ranks with all the cores each would only fight."""
    return max(1, plan.cpu_threads // max(1, local_processes))


def use_planned_threads(plan: DevicePlan, local_processes: int = 1) -> None:
    if plan.device == "cpu":
        torch.set_num_threads(threads_per_process(plan, local_processes))
