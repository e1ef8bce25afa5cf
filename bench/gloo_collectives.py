"""PyTorch gloo on the same machine, for bench/collectives.ts to compare against.

    python3 bench/gloo_collectives.py WORKERS FLOATS REPS

Starts WORKERS processes on 127.0.0.1 (torch.distributed, backend gloo) and
times all_reduce (sum) of FLOATS float32 values and all_gather of FLOATS/WORKERS
each, the way bench/collectives.ts times its own: one warm-up, then REPS runs
each after a barrier; per run the slowest rank; the median over runs. Prints one
JSON line: {"impl": "gloo", "allreduce_s": ..., "allgather_s": ...}.
"""
import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def timed(fn, reps):
    out = []
    for i in range(-1, reps):
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        if i >= 0:
            out.append(dt)
    t = torch.tensor(out, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return statistics.median(t.tolist())


def child(rank, world, floats, reps, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    x = torch.rand(floats, dtype=torch.float32)
    part = torch.rand(floats // world, dtype=torch.float32)
    parts = [torch.empty_like(part) for _ in range(world)]
    ar = timed(lambda: dist.all_reduce(x), reps)
    ag = timed(lambda: dist.all_gather(parts, part), reps)
    if rank == 0:
        queue.put({"impl": "gloo", "allreduce_s": ar, "allgather_s": ag})
    dist.barrier()
    dist.destroy_process_group()


def main():
    world, floats, reps = (int(a) for a in sys.argv[1:4])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=child, args=(r, world, floats, reps, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = queue.get(timeout=600)
    for p in procs:
        p.join()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
