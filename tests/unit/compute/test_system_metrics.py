"""lmpipe.compute.system_metrics: peak host memory, and the GPU utilisation sampled from nvidia-smi."""

from __future__ import annotations

import subprocess
import time

import pytest

from lmpipe.compute import system_metrics
from lmpipe.compute.system_metrics import GpuUtilization, utilization_of

UUID = "5e9c1a2b-0000-1111-2222-333344445555"  # as torch's device properties write it
QUERY_OUTPUT = f"GPU-aaaaaaaa-0000-1111-2222-333344445555, 3\nGPU-{UUID.upper()}, 87\n"


def test_peak_host_memory_is_this_processs_resident_peak_in_megabytes():
    import psutil

    held = b"x" * 64 * 10**6  # 64 MB written, so resident
    now_mb = psutil.Process().memory_info().rss / 1e6
    # The kernel updates the high-water mark lazily (per-thread counters synced every few page faults).
    assert now_mb > 64 and system_metrics.peak_host_memory_mb() >= 0.95 * now_mb
    del held


def test_utilization_of_picks_the_gpu_by_uuid_whatever_its_prefix_and_case():
    assert utilization_of(QUERY_OUTPUT, UUID) == 87.0
    assert utilization_of(QUERY_OUTPUT, f"GPU-{UUID}") == 87.0


def test_utilization_of_a_gpu_not_listed_or_not_reporting_is_none():
    assert utilization_of(QUERY_OUTPUT, "ffffffff-0000-1111-2222-333344445555") is None
    assert utilization_of(f"GPU-{UUID}, [N/A]\n", UUID) is None  # a MIG instance
    assert utilization_of("", UUID) is None


@pytest.fixture
def nvidia_smi(monkeypatch):
    """subprocess.run answering the utilisation query with each of `values` in turn (then the last)."""

    def install(*values: int | Exception) -> list[list[str]]:
        calls: list[list[str]] = []

        def run(command, **kwargs):
            calls.append(command)
            value = values[min(len(calls), len(values)) - 1]
            if isinstance(value, Exception):
                raise value
            return subprocess.CompletedProcess(command, 0, stdout=f"GPU-{UUID}, {value}\n", stderr="")

        monkeypatch.setattr(system_metrics.subprocess, "run", run)
        return calls

    return install


def sample_until(sampler: GpuUtilization, samples: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    with sampler:
        while len(sampler.samples) < samples and sampler.problem is None:
            assert time.monotonic() < deadline, f"{len(sampler.samples)} samples in {timeout_s} s"
            time.sleep(0.005)


def test_the_sampler_averages_the_utilisation_while_in_its_block(nvidia_smi):
    calls = nvidia_smi(50, 100)
    sampler = GpuUtilization(UUID, interval_s=0.001)
    sample_until(sampler, 2)
    assert sampler.samples[:2] == [50.0, 100.0] and sampler.problem is None
    assert sampler.mean() == pytest.approx(sum(sampler.samples) / len(sampler.samples), abs=0.05)
    taken = len(calls)
    time.sleep(0.05)
    assert len(calls) == taken == len(sampler.samples)  # stopped with its block: no query after it


def test_without_nvidia_smi_the_sampler_gives_up_and_says_why(nvidia_smi, monkeypatch):
    nvidia_smi(FileNotFoundError("nvidia-smi"))
    sampler = GpuUtilization(UUID, interval_s=0.001)
    sample_until(sampler, 1)
    assert sampler.mean() is None and "nvidia-smi failed" in sampler.problem
    monkeypatch.setattr(system_metrics, "gpu_peak_memory_mb", lambda: 2048.0)
    metrics, warning = system_metrics.gpu_metrics(sampler)
    assert metrics == {"gpu_peak_memory_mb": 2048.0}
    assert warning.startswith("GPU utilisation not recorded: nvidia-smi failed")


def test_a_run_shorter_than_one_interval_records_the_memory_and_no_utilisation(monkeypatch):
    monkeypatch.setattr(system_metrics, "gpu_peak_memory_mb", lambda: 2048.0)
    with GpuUtilization(UUID, interval_s=60) as sampler:
        pass
    metrics, warning = system_metrics.gpu_metrics(sampler)
    assert metrics == {"gpu_peak_memory_mb": 2048.0}
    assert warning == "GPU utilisation not recorded: training took less than one 60 s sampling interval"


def test_gpu_metrics_hold_the_mean_utilisation_when_sampled(monkeypatch):
    monkeypatch.setattr(system_metrics, "gpu_peak_memory_mb", lambda: 2048.0)
    sampler = GpuUtilization(UUID)
    sampler.samples = [80.0, 90.0, 95.0]
    assert system_metrics.gpu_metrics(sampler) == ({"gpu_peak_memory_mb": 2048.0, "gpu_utilization_pct": 88.3}, None)
