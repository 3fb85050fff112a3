"""Running code on N CPU processes joined by gloo, as torchrun would (env:// variables).

``run_ranks(fn, world, *args)`` spawns ``world`` processes; process r sets RANK/WORLD_SIZE/
LOCAL_RANK/MASTER_ADDR/MASTER_PORT (a free port, new per call) and ``DPL_TEST_THREADS`` torch
threads (default 1), then calls ``fn(r, *args)``. ``fn`` must be a module-level function; it
reports through files (e.g. ``torch.save`` per rank). A failing rank fails the call.
"""
from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int) -> dict:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
            "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}


def _entry(rank, fn, world, port, args):
    os.environ.update(torchrun_env(rank, world, port))
    torch.set_num_threads(int(os.environ.get("DPL_TEST_THREADS", "1")))
    fn(rank, *args)


def run_ranks(fn, world: int, *args) -> None:
    mp.spawn(_entry, args=(fn, world, free_port(), args), nprocs=world, join=True)
