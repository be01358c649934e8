"""One Ray Train worker: one rank of a DDP run spread over a Ray cluster's nodes.

Ray Train's TorchTrainer starts this function in each worker, on whichever node Ray placed it, with
the process group already joined (gloo on CPUs, NCCL on GPUs) and RANK, WORLD_SIZE and LOCAL_RANK
set: the Hugging Face Trainer then finds a distributed run exactly as under torchrun, so
lmpipe.training.loop trains it unchanged, with the same data order, checkpoints and rank-0 writes.
The Trainer goes through Ray's Hugging Face integration (`prepare_trainer`), which adapts Ray Data
inputs; the blocks here are a map-style dataset every node reads from the shared artifact root, so it
changes nothing today and keeps the door open to Ray Data. Ray's RayTrainReportCallback is not used:
the pipeline's own checkpoints are atomic and already on storage every node sees, and copying each
into Ray's storage would double the writes.

What differs from a torchrun rank is where events go (a Ray queue the driver prints from: this
process's stdout is not the task's) and who owns the process group (Ray: it is left open here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmpipe.training import events
from lmpipe.training.job import TrainingJob
from lmpipe.training.loop import train_model


def train_on_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch.distributed as dist
    from ray.train.huggingface.transformers import prepare_trainer

    queue = config["events"]
    events.send_to(queue.put)
    job, out_dir = TrainingJob.model_validate(config["job"]), Path(config["out_dir"])
    report_placement(job)
    metrics = train_model(job, out_dir, prepare=prepare_trainer)
    # Every worker reports (Ray Train expects it of all ranks): the run's numbers show in Ray's dashboard.
    ray.train.report({name: value for name, value in metrics.items() if isinstance(value, int | float)})
    if dist.is_initialized():
        dist.barrier()  # rank 0 has written the model and the records: the task may read them


def report_placement(job: TrainingJob) -> None:
    """Which node and device each rank trains on, as one event from rank 0: the device line of a run whose
    ranks are spread over machines the task never sees."""
    import ray
    import torch
    import torch.distributed as dist

    from lmpipe.compute.devices import plan_device

    plan = plan_device(job.train.precision)
    device = (
        f"cuda ({torch.cuda.get_device_name(torch.cuda.current_device())}), {plan.precision}"
        if plan.device == "cuda"
        else f"cpu, {max(1, int(job.train.ray_cpus_per_worker))} threads, {plan.precision}"
    )
    mine = {
        "rank": dist.get_rank() if dist.is_initialized() else 0,
        "node": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "device": device,
    }
    everyone: list[Any] = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    events.emit("ranks", ranks=sorted(everyone, key=lambda entry: entry["rank"]))
