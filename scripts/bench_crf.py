"""Benchmark conll_crf's LinearChainCRF against pytorch-crf on identical inputs.

    python scripts/bench_crf.py [--threads 1] [--repeats 20] [--block 10] [--in-context] [--json metrics/bench_crf.json]
        [--device cuda] [--shapes 256x128x9,256x128x17]

For each (B, T, K) with ragged lengths (uniform in [1, T], one sequence of
length T), both CRFs get the same parameters and emissions. Measured:
sequences/s for the NLL forward+backward (gradients w.r.t. emissions and CRF
parameters) and for Viterbi decoding: the best single call after a warm-up,
the implementations taking turns in blocks of `block` consecutive calls (as
timeit measures), so both see the same machine load. With --in-context, a
second table times every call of either implementation right after the same
untimed BiLSTM forward+backward over the batch (as inside the real model; see
`encoder_step`). Paths are compared; log-likelihoods must agree to 1e-3.
On a GPU (--device cuda) every timed call ends with torch.cuda.synchronize(),
so a time covers the kernels it launched.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torchcrf import CRF as TorchCRF

from conll_crf.crf import LinearChainCRF

SHAPES = [(32, 40, 9), (128, 40, 9), (32, 128, 9), (256, 30, 17)]


def best_times(fns, repeats, block, between=None, sync=lambda: None):
    """Best (minimum) time of one call of each function over `repeats` rounds.
    Within a round the functions take turns, each running `block` calls in a
    row, so both see the same machine load. With `between`, that untimed
    function runs before every timed call of either implementation. `sync`
    waits for the device (a GPU's queued kernels) before and after each call."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            for _ in range(block):
                if between is not None:
                    between()
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                best[i] = min(best[i], time.perf_counter() - t0)
    return best


def encoder_step(B, T, width=64, seed=0, device="cpu"):
    """An untimed stand-in for what runs before the CRF in the real model: a
    BiLSTM forward and backward over the same batch shape. Run before each
    timed call in the --in-context measurement, it leaves the caches, the allocator
    and the autograd engine as a network would, the same for both CRFs."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(width, width // 2, bidirectional=True, batch_first=True).to(device)
    x = torch.randn(B, T, width).to(device)

    def run():
        lstm(x)[0].sum().backward()

    return run


def bench_shape(B, T, K, repeats, block, in_context=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    em = torch.randn(B, T, K, generator=g).to(device)
    tags = torch.randint(0, K, (B, T), generator=g).to(device)
    ref = TorchCRF(K, batch_first=True).to(device)
    ours = LinearChainCRF(K).to(device)
    with torch.no_grad():
        ours.transitions.copy_(ref.transitions)
        ours.start_transitions.copy_(ref.start_transitions)
        ours.end_transitions.copy_(ref.end_transitions)
    mask_u8 = mask.to(torch.uint8)

    def ref_train():
        x = em.clone().requires_grad_(True)
        loss = -ref(x, tags, mask_u8, reduction="sum")
        loss.backward()

    def our_train():
        x = em.clone().requires_grad_(True)
        loss = ours.nll(x, tags, mask).sum()
        loss.backward()

    ll_ref = ref(em, tags, mask_u8, reduction="none")
    ll_ours = -ours.nll(em, tags, mask)
    ll_diff = (ll_ref - ll_ours).abs().max().item()
    paths_ref = ref.decode(em, mask_u8)
    _, paths = ours.viterbi(em, mask)
    same = all(paths[b, : len(p)].tolist() == p for b, p in enumerate(paths_ref))
    r = {"shape": [B, T, K], "max_abs_loglik_diff": ll_diff, "identical_paths": same}
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    modes = [("warm", block, None)] + ([("in_context", 1, encoder_step(B, T, device=device))] if in_context else [])
    for mode, blk, between in modes:
        rounds = repeats if mode == "warm" else repeats * 2
        t_ours, t_ref = best_times([our_train, ref_train], rounds, blk, between, sync)
        v_ours, v_ref = best_times(
            [lambda: ours.viterbi(em, mask), lambda: ref.decode(em, mask_u8)], rounds, blk, between, sync
        )
        r[mode] = {
            "nll_fwd_bwd_seqs_per_s": {"ours": B / t_ours, "pytorch_crf": B / t_ref, "ratio": t_ref / t_ours},
            "viterbi_seqs_per_s": {"ours": B / v_ours, "pytorch_crf": B / v_ref, "ratio": v_ref / v_ours},
        }
    return r


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--repeats", type=int, default=20, help="rounds (warm); --in-context runs 2 * repeats rounds of single calls"
    )
    parser.add_argument("--block", type=int, default=10, help="consecutive calls per turn in the warm measurement")
    parser.add_argument(
        "--in-context", action="store_true", help="also time every call after a BiLSTM forward+backward"
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU")
    parser.add_argument(
        "--shapes",
        default=None,
        help="B x T x K shapes, e.g. 256x128x9,256x128x17 (default: "
        + ",".join("x".join(map(str, s)) for s in SHAPES)
        + ")",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    where = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    )
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.device}: {where}")
    rows = []
    for B, T, K in shapes:
        rows.append(bench_shape(B, T, K, args.repeats, args.block, args.in_context, device=args.device))
        write_json(args, rows, where)  # after every shape: a run cut short keeps what it measured
    for mode in ("warm", "in_context") if args.in_context else ("warm",):
        how = (
            f"blocks of {args.block} consecutive calls"
            if mode == "warm"
            else "every call right after a BiLSTM forward+backward"
        )
        print(f"\n{mode} ({how}), sequences/s and ratio ours / pytorch-crf")
        header = (
            f"{'B, T, K':>14} | {'NLL fwd+bwd: ours':>18} {'pytorch-crf':>12} {'ratio':>6} | "
            f"{'Viterbi: ours':>14} {'pytorch-crf':>12} {'ratio':>6} | paths"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            n, v = r[mode]["nll_fwd_bwd_seqs_per_s"], r[mode]["viterbi_seqs_per_s"]
            print(
                f"{str(tuple(r['shape'])):>14} | {n['ours']:>18,.0f} {n['pytorch_crf']:>12,.0f} {n['ratio']:>5.1f}x | "
                f"{v['ours']:>14,.0f} {v['pytorch_crf']:>12,.0f} {v['ratio']:>5.1f}x | "
                f"{'identical' if r['identical_paths'] else 'DIFFERENT'} (|dLL| {r['max_abs_loglik_diff']:.1e})"
            )


def write_json(args, rows, where) -> None:
    """The rows measured so far, with the run's settings, to --json (if given)."""
    if not args.json:
        return
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "block": args.block,
        "repeats": args.repeats,
        "in_context": args.in_context,
        "machine": platform.machine(),
        "device": args.device if args.device == "cpu" else f"{args.device}: {where}",
        "rows": rows,
    }
    args.json.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
