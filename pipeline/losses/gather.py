"""Features gathered across DDP ranks, so every rank's loss sees the global batch (open_clip's
`gather_features` with `local_loss=False, gather_with_grad=False`).

Each rank all-gathers the detached local tensors and puts its own local tensor, with its autograd
graph, back in its slot: the loss on every rank is the loss of the global batch, and each rank's
backward reaches its own heads' parameters. The engine sums (not averages) the heads' gradients over
ranks, so a step equals a single-process step on the global batch.
"""

import torch
import torch.distributed as dist


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


def allreduce_sum_hook(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: sum gradient buckets over ranks (DDP's default averages them)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])
