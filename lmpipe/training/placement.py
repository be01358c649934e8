"""Where a training run's ranks go, decided on the task's machine before anything starts: the launcher,
the world size, and the device and precision the ranks train in. The cache key and the training job
both read it, so what is keyed is what is launched."""

from __future__ import annotations

from dataclasses import dataclass

from lmpipe.compute.devices import plan_device, world_size
from lmpipe.config.schema import TrainConfig


@dataclass(frozen=True)
class Placement:
    launcher: str  # "local" (this node: one process, or N through torchrun) or "ray" (Ray Train workers)
    world_size: int
    device: str  # "cpu" or "cuda"
    precision: str  # as the ranks will train; "auto" when only the Ray workers can resolve it


def placement_of(train: TrainConfig) -> Placement:
    if train.launcher == "ray":
        # The ranks run on the cluster's nodes, not here: their devices are what each worker reserves,
        # and `precision: auto` is resolved by the workers on their own hardware.
        device = "cuda" if train.ray_gpus_per_worker > 0 else "cpu"
        return Placement("ray", train.ray_workers, device, train.precision)
    plan = plan_device(train.precision)
    return Placement("local", world_size(train.processes, plan), plan.device, plan.precision)
