"""Why short CRF calls slow down inside a model: the cost of *different* ops
right after an encoder step.

    python experiments/scripts/bench_cold_ops.py [--n 40] [--rounds 50]

Times n small PyTorch ops ([9, 32] tensors, one thread) in two variants, n
different ops and n calls of one op, each alone ("warm") and right after an
untimed BiLSTM forward+backward ("after encoder", the `encoder_step` of
bench_crf.py), best of `rounds`. Prints the four times and the extra time
per op that the encoder step causes.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the product's bench_crf.py
from bench_crf import encoder_step  # noqa: E402


def different_ops(n):
    a, b = torch.rand(9, 32) + 0.5, torch.rand(9, 32) + 0.5
    i = torch.randint(0, 9, (9, 32))
    o = torch.empty(9, 32)
    ops = [
        lambda: torch.add(a, b, out=o),
        lambda: torch.mul(a, b, out=o),
        lambda: torch.sub(a, b, out=o),
        lambda: torch.div(a, b, out=o),
        lambda: torch.amax(a, 0),
        lambda: torch.amin(a, 0),
        lambda: a.sum(0),
        lambda: a.max(0),
        lambda: torch.where(a > 1, a, b),
        lambda: a.gather(0, i),
        lambda: torch.exp(a),
        lambda: torch.log(a),
        lambda: a.clamp(0, 1),
        lambda: a.masked_fill(a > 1, 0.0),
        lambda: torch.cat([a, b]),
        lambda: torch.stack([a, b]),
        lambda: a.flip(0),
        lambda: a.t().contiguous(),
        lambda: a.view(-1).take(i.view(-1)),
        lambda: torch.mm(a.t(), b),
        lambda: a.cumsum(0),
        lambda: a.argmax(0),
        lambda: a.sort(0),
        lambda: a.topk(2, 0),
        lambda: torch.bitwise_and(i, i),
        lambda: i.remainder(3),
        lambda: i.div(2, rounding_mode="floor"),
        lambda: a.repeat(2, 1),
        lambda: a.expand(2, 9, 32).contiguous(),
        lambda: torch.nan_to_num(a),
        lambda: a.abs(),
        lambda: a.neg(),
        lambda: a.sqrt(),
        lambda: a.sigmoid(),
        lambda: a.tanh(),
        lambda: a.round(),
        lambda: a.floor(),
        lambda: a.ceil(),
        lambda: a.sign(),
        lambda: a.square(),
    ]
    if n > len(ops):
        raise SystemExit(f"--n can be at most {len(ops)}")
    return ops[:n], [ops[0]] * n


def best_time(ops, rounds, before=None):
    for op in ops:
        op()
    best = float("inf")
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        for op in ops:
            op()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = encoder_step(32, 40)
    different, same = different_ops(args.n)
    for name, ops in ((f"{args.n} different ops", different), (f"{args.n} calls of one op", same)):
        warm = best_time(ops, args.rounds)
        cold = best_time(ops, args.rounds, encoder)
        print(
            f"{name:>24}: warm {warm * 1e6:7.0f} us, after encoder {cold * 1e6:7.0f} us, "
            f"extra {(cold - warm) / args.n * 1e6:5.1f} us per op"
        )


if __name__ == "__main__":
    main()
