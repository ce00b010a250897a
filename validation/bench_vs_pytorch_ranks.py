"""One rank of the PyTorch side of validation/bench-vs-pytorch-ranks.sh.

Started by mpirun inside the emulated nodes of scripts/emu-cluster.sh, exactly where the
mics ranks run: the rank, world size and local rank come from Open MPI's environment, and
the gloo process group meets at node 1's address on the emulated network, so PyTorch's
traffic between nodes crosses the same shaped links as mics's. Trains validation/torch_gpt.py
(the mics GPT) on random tokens with AdamW and gradient clipping, in one of three layouts:

  ddp   DistributedDataParallel, gradients all-reduced once per optimizer step (no_sync on
        the earlier micro-steps, as mics's two-hop reduction);
  fsdp  FSDP2 fully_shard per block, then the root, over a 1-D mesh of all ranks (ZeRO-3);
  hsdp  FSDP2 over a 2-D (replicate, shard) mesh: shards inside a node, replicas across
        nodes (mics --strategy mics --partition-size = ranks per node); the replicas'
        all-reduce runs on the last micro-step only, the shard reduce-scatter on every one.

Rank 0 writes one CSV row per optimizer step (step, ms, loss, grad_norm) to --out; the
step time is rank 0's wall time from the first micro-step's forward to the end of
zero_grad.
"""
import argparse
import csv
import fcntl
import os
import socket
import struct
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT, parameter_count  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layout", choices=("ddp", "fsdp", "hsdp"), required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ranks-per-node", type=int, default=2)
    p.add_argument("--port", type=int, default=29517)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--out", required=True, help="CSV of rank 0's step times")
    return p.parse_args()


def interface_address(name):
    """IPv4 address of interface NAME (SIOCGIFADDR), without needing iproute2 in Python."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", name.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24])


def rendezvous_address():
    """Node 1's address: emu-cluster.sh numbers node i as .i of one /24 on every eth0,
    and mpirun places ranks 0..G-1 on node 1. MASTER_ADDR overrides (other launchers)."""
    if os.environ.get("MASTER_ADDR"):
        return os.environ["MASTER_ADDR"]
    own = interface_address("eth0")
    return own.rsplit(".", 1)[0] + ".1"


def init(args):
    rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
    world = int(os.environ["OMPI_COMM_WORLD_SIZE"])
    # gloo resolves its own address from this interface, not from the namespace's
    # hostname (which no resolver knows).
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "eth0")
    url = f"tcp://{rendezvous_address()}:{args.port}"
    dist.init_process_group("gloo", init_method=url, rank=rank, world_size=world)
    return rank, world


def check_node_order(world, rpn):
    """The hybrid mesh's shard groups are rows of arange(world).view(-1, rpn): they must be
    the ranks of one node, as mics's node-aligned partition groups are."""
    hosts = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    for start in range(0, world, rpn):
        row = hosts[start:start + rpn]
        if len(set(row)) != 1:
            raise SystemExit(f"ranks {start}..{start + rpn - 1} are on {row}: not one node")
    return hosts


def wrap(model, args, world):
    if args.layout == "ddp":
        return DistributedDataParallel(model, gradient_as_bucket_view=True)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    if args.layout == "fsdp":
        mesh = init_device_mesh("cpu", (world,))
    else:
        mesh = init_device_mesh("cpu", (world // args.ranks_per_node, args.ranks_per_node),
                                mesh_dim_names=("replicate", "shard"))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def optimizer(model, lr):
    """AdamW as mics configures it (betas 0.9/0.95, weight decay 0.1 on matrices only),
    fused where this PyTorch has a CPU fused kernel for these parameters, else foreach."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=True), "fused"
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8,
                                 foreach=True), "foreach"


def micro_step(model, args, x, y, last, accum):
    """Forward and backward of one micro-batch, gradients synchronised only where mics
    synchronises them; returns the micro-batch's mean loss."""
    if args.layout == "hsdp":
        model.set_requires_all_reduce(last)
    if args.layout == "ddp" and not last:
        with model.no_sync():
            loss = model(x, y)
            (loss / accum).backward()
    else:
        loss = model(x, y)
        (loss / accum).backward()
    return loss.item()


def train(model, opt, args, batches, accum):
    rows = []
    for step in range(args.steps):
        t0 = time.perf_counter()
        loss = 0.0
        for m in range(accum):
            x, y = batches[(step * accum + m) % len(batches)]
            loss += micro_step(model, args, x, y, m == accum - 1, accum) / accum
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ms = (time.perf_counter() - t0) * 1e3
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        rows.append((step + 1, ms, loss, float(norm)))
    return rows


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    rank, world = init(args)
    per_micro = world * args.micro_batch
    if args.global_batch % per_micro:
        raise SystemExit("global batch must be ranks x micro-batch x accumulation")
    accum = args.global_batch // per_micro
    hosts = check_node_order(world, args.ranks_per_node)
    torch.manual_seed(1234)
    model = GPT(args.layers, args.hidden, args.heads, args.seq, args.vocab)
    params = parameter_count(model)
    model = wrap(model, args, world)
    opt, kind = optimizer(model, args.lr)
    gen = torch.Generator().manual_seed(1000 + rank)
    batches = []
    for _ in range(4):   # a few distinct batches, made before the clock starts
        t = torch.randint(0, args.vocab, (args.micro_batch, args.seq + 1), generator=gen)
        batches.append((t[:, :-1].contiguous(), t[:, 1:].contiguous()))
    rows = train(model, opt, args, batches, accum)
    if rank == 0:
        with open(args.out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "ms", "loss", "grad_norm"])
            w.writerows((s, f"{ms:.3f}", f"{lo:.5f}", f"{n:.5f}") for s, ms, lo, n in rows)
        print(f"torch {args.layout}: parameters {params} world {world} nodes "
              f"{len(set(hosts))} accumulation {accum} adamw {kind} torch {torch.__version__}"
              f" threads {torch.get_num_threads()}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
