"""Process entry points for the two-process (gloo) tests; top level so torch.multiprocessing can spawn them."""

from __future__ import annotations

import os


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
    )
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)


def gathered_loss(rank, world, port, anchor, positive, out):
    import torch

    from sfp_rag.training.losses import info_nce

    _join(rank, world, port)
    n = anchor.shape[0] // world
    a = anchor[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    p = positive[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    loss = info_nce(a, p, 0.05, distributed=True)
    (loss * world).backward()
    out.put((rank, loss.item(), (a.grad / world).tolist(), (p.grad / world).tolist()))
    torch.distributed.destroy_process_group()


def train_run(rank, world, port, config_dict, out):
    import torch

    from sfp_rag.training.config import TrainConfig
    from sfp_rag.training.trainer import train

    _join(rank, world, port)
    losses = []
    train(TrainConfig(**config_dict), callback=lambda step, loss: losses.append(loss), show_progress=False)
    out.put((rank, losses))
    torch.distributed.destroy_process_group()
