"""torchrun for training: the process group, DDP with summed gradients, and features gathered across
ranks so every rank's loss sees the global batch (open_clip's `gather_features` with
`local_loss=False, gather_with_grad=False`).

Each rank all-gathers the detached local tensors and puts its own local tensor, with its autograd
graph, back in its slot: the loss on every rank is the loss of the global batch, and each rank's
backward reaches its own parameters. Gradients are summed (not averaged) over ranks, so a step
equals a single-process step on the global batch.
"""

import torch
import torch.distributed as dist

from encoding.runtime import resolve_device, start_group, torchrun_env


def start_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); under torchrun starts the process group (nccl on CUDA, gloo on CPU; a rank
    missing after `RENDEZVOUS_TIMEOUT` is BadInput; collectives wait as long)."""
    rank, world, local_rank = torchrun_env()
    device = resolve_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        start_group("nccl" if device.type == "cuda" else "gloo", world)
    return rank, world, device


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(local: torch.Tensor) -> torch.Tensor:
    """(W·B, ...) from every rank's (B, ...) tensor, in rank order; this rank's slot keeps its gradient."""
    rank, size = world()
    if size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank] = local
    return torch.cat(parts)


def from_rank0(value):
    """`value` as rank 0 holds it, on every rank (`value` itself in one process): ranks whose BatchNorm
    statistics differ must still agree on validation results, so they stop early together."""
    rank, size = world()
    if size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def allreduce_sum_hook(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: sum gradient buckets over ranks (DDP's default averages them)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def summing_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under DDP with gradients summed over ranks."""
    wrapped = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )
    wrapped.register_comm_hook(None, allreduce_sum_hook)
    return wrapped
