"""Collectives over a real 2-process gloo group, and their single-process identities."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from sslgraph.utils import dist


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        local = torch.arange(rank + 2, dtype=torch.float32).unsqueeze(1) + 10 * rank  # 2 rows, then 3 rows
        gathered = dist.all_gather_cat(local)
        mean = dist.all_reduce_mean(torch.tensor([float(rank)]))
        results[rank] = (gathered.squeeze(1).tolist(), mean.item(), dist.rank(), dist.world_size())
    finally:
        tdist.destroy_process_group()


def test_all_gather_cat_with_unequal_sizes_and_mean_over_two_processes() -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=2, join=True)
        for rank in (0, 1):
            gathered, mean, seen_rank, world = results[rank]
            assert gathered == [0.0, 1.0, 10.0, 11.0, 12.0]
            assert mean == 0.5 and seen_rank == rank and world == 2


def test_single_process_helpers_are_identities() -> None:
    t = torch.randn(3, 2)
    assert not dist.is_dist() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    assert dist.all_gather_cat(t) is t and dist.all_reduce_mean(t) is t
