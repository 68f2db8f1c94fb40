"""SenCLIP training module under torch.distributed: keys are gathered from every rank before they are enqueued."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from senclip.core import get_preset
        from senclip.model import build_senclip

        torch.manual_seed(0)  # same initial weights on every rank
        model = build_senclip(get_preset("tiny", queue_size=10, negatives="queue+batch"))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        torch.manual_seed(100 + rank)  # different data per rank
        for _ in range(2):
            images, ground = torch.randn(3, 3, 32, 32), torch.randn(3, 4, 64)
            out = ddp(images, ground, torch.ones(3, 4, dtype=torch.bool))
            out["loss"].backward()
        torch.save({"queue": model.queue, "valid": model.queue_valid, "ptr": model.queue_ptr,
                    "key": out["key"].detach()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # over ~3 s on 2 cores: make test-slow (CI runs it)
def test_ddp_gathers_keys_into_queue(tmp_path):
    world = 2
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # identical queues on both ranks: 2 steps x 2 ranks x 3 keys = 12 keys into 10 slots, wrapping around
    torch.testing.assert_close(r0["queue"], r1["queue"], rtol=0, atol=0)
    assert r0["valid"].all() and int(r0["ptr"]) == 12 % 10
    # the last step's keys of rank 0 then rank 1 sit in slots 6, 7, 8 and 9, 0, 1
    torch.testing.assert_close(r0["queue"][6:9], r0["key"])
    torch.testing.assert_close(r0["queue"][[9, 0, 1]], r1["key"])
