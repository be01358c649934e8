"""System metrics of a training process: its peak host memory and, on a CUDA GPU, its peak GPU memory
and the GPU's mean utilisation while it trained.

Measured inside the training process, so under torchrun or Ray Train the figures are rank 0's (every
rank trains the same model on the same batch size, so rank 0 stands for each; the others are not
gathered). Dataloader worker processes are not counted in the host memory: they are forked, mostly
sharing the parent's pages. A run resumed from a checkpoint reports its last attempt. Megabytes are
10^6 bytes, as in MLflow's own system metrics.

GPU utilisation is what `nvidia-smi` reports (the share of time a kernel was running), sampled every
`interval_s` in a background thread: torch.cuda.utilization() would need pynvml, which is not a
dependency. It is the device's, so another process on the same GPU counts too. Where nvidia-smi is
missing, or the run is shorter than one interval, the metric is left out, with a warning.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import threading
from typing import Any

_QUERY = ["nvidia-smi", "--query-gpu=uuid,utilization.gpu", "--format=csv,noheader,nounits"]


def peak_host_memory_mb() -> float:
    """This process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak * (1 if sys.platform == "darwin" else 1024) / 1e6, 1)


def gpu_peak_memory_mb() -> float:
    """The most GPU memory torch's allocator held on the current device (reserved, fragmentation included:
    what the run needs of a card, less the CUDA context)."""
    import torch

    return round(torch.cuda.max_memory_reserved() / 1e6, 1)


def same_gpu(uuid_a: str, uuid_b: str) -> bool:
    """nvidia-smi writes 'GPU-<uuid>', torch's device properties '<uuid>'."""
    return uuid_a.strip().lower().removeprefix("gpu-") == uuid_b.strip().lower().removeprefix("gpu-")


def utilization_of(query_output: str, uuid: str) -> float | None:
    """The utilisation of GPU `uuid` in `nvidia-smi --query-gpu=uuid,utilization.gpu` CSV output; None when
    it is not listed or not reported ('[N/A]', as under MIG)."""
    for line in query_output.splitlines():
        listed, _, value = line.partition(",")
        if same_gpu(listed, uuid):
            try:
                return float(value)
            except ValueError:
                return None
    return None


class GpuUtilization:
    """Samples one GPU's utilisation every `interval_s` while in its `with` block; `mean()` afterwards."""

    def __init__(self, uuid: str, interval_s: float = 1.0) -> None:
        self.uuid = uuid
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.problem: str | None = None  # why there are no samples, when nvidia-smi could not give any
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="gpu-utilization", daemon=True)

    def __enter__(self) -> GpuUtilization:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        # The first sample one interval in: the moment training starts says nothing of how busy it keeps the GPU.
        while not self._stop.wait(self.interval_s):
            try:
                output = subprocess.run(_QUERY, capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError) as error:
                self.problem = f"nvidia-smi failed: {error}"
                return  # it will not get better: no more tries
            value = utilization_of(output, self.uuid)
            if value is None:
                self.problem = f"nvidia-smi reports no utilisation for GPU {self.uuid}"
                return
            self.samples.append(value)

    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None


def current_gpu_utilization(interval_s: float = 1.0) -> GpuUtilization:
    import torch

    return GpuUtilization(str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid), interval_s)


def gpu_metrics(utilization: GpuUtilization) -> tuple[dict[str, float], str | None]:
    """The GPU's figures for train_metrics.json, and a warning line when its utilisation could not be recorded."""
    metrics = {"gpu_peak_memory_mb": gpu_peak_memory_mb()}
    mean = utilization.mean()
    if mean is not None:
        metrics["gpu_utilization_pct"] = mean
        return metrics, None
    reason = utilization.problem or f"training took less than one {utilization.interval_s:g} s sampling interval"
    return metrics, f"GPU utilisation not recorded: {reason}"
