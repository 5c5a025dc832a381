"""Benchmark: the student head's matrix products in fp32 against bf16 (`KDSpec.head_precision`).

What is timed, per precision, on the same random hidden states and head: `ce_loss_sum` forward and
backward over `--tokens` trained tokens of width `--hidden` through a bias-free `--vocab` x
`--hidden` head (N(0, 0.02²) weights, N(0, 1) hidden states), `--chunk-tokens` at a time. That is
the head's three products per chunk (logits, hidden-state gradient, weight gradient) and the fp32
softmax between them; the cross-entropy stands in for every divergence (the head's work is the
same) so that no teacher head is timed. On CUDA a third row times fp32 with TF32 products, which
the distill job uses for `head_precision: fp32` (`leafpipe.distill.parts.allow_tf32`).

Each precision runs once to warm up, then `--repeats` times; the median wall-clock time counts
(on CUDA after a synchronisation). The loss of each precision is printed next to its time: bf16
must agree with fp32 to about 2^-8 relative (tests/distill/test_head_precision.py derives
the bound).

Output: a table, then exactly one line `fp32/bf16 time ratio: N.NNx` (> 1: bf16 is faster), and on
CUDA one more, `fp32/tf32 time ratio: N.NNx`. On a CPU the ratio says little about a GPU: CPUs
have no bf16 tensor cores, and their bf16 products may be slower than fp32 ones (each chunk also
pays the casts); the speed-up that `head_precision: auto` is for needs a GPU to measure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402

from leafpipe.distill.kd_loss import ce_loss_sum  # noqa: E402
from leafpipe.distill.spec import KDSpec  # noqa: E402


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    p.add_argument("--tokens", type=int, default=512, help="trained tokens (one row)")
    p.add_argument("--hidden", type=int, default=2048, help="head width (Llama-3.2-1B: 2048)")
    p.add_argument("--vocab", type=int, default=32000, help="head rows (Llama-3: 128256)")
    p.add_argument(
        "--chunk-tokens", type=int, default=KDSpec().chunk_tokens, help="KDSpec.chunk_tokens"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes per precision; the median counts"
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads"
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _pass(
    hidden: torch.Tensor,
    head: nn.Linear,
    ids: torch.Tensor,
    mask: torch.Tensor,
    chunk: int,
    precision: str,
) -> float:
    """One forward and backward pass; returns the loss."""
    head.weight.grad = hidden.grad = None
    loss = ce_loss_sum(hidden, head, ids, mask, chunk, precision)
    loss.backward()
    return loss.item()


def _timed(
    args: argparse.Namespace, hidden, head, ids, mask, precision: str
) -> tuple[float, float]:
    """(median seconds, loss) of `args.repeats` passes after a warm-up pass."""
    _pass(hidden, head, ids, mask, args.chunk_tokens, precision)
    times = []
    for _ in range(args.repeats):
        common.sync(args.device)
        start = time.perf_counter()
        loss = _pass(hidden, head, ids, mask, args.chunk_tokens, precision)
        common.sync(args.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), loss


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Print the table and the ratio line(s); returns {row: median seconds}."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    hidden = (
        torch.randn(1, args.tokens + 1, args.hidden, generator=g).to(args.device).requires_grad_()
    )
    head = nn.Linear(args.hidden, args.vocab, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(args.vocab, args.hidden, generator=g) * 0.02)
    head = head.to(args.device)
    ids = torch.randint(0, args.vocab, (1, args.tokens + 1), generator=g).to(args.device)
    mask = torch.ones(1, args.tokens, dtype=torch.bool, device=args.device)
    # (row, head_precision, TF32 for fp32 products): TF32 exists on CUDA only.
    rows = [("fp32", "fp32", False), ("bf16", "bf16", False)]
    if args.device.startswith("cuda"):
        rows.append(("tf32", "fp32", True))
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    results: dict[str, float] = {}
    print(
        f"head {args.vocab} x {args.hidden}, {args.tokens} tokens in chunks of "
        f"{args.chunk_tokens}, "
        f"{args.device}, {args.threads} threads; median of {args.repeats}"
    )
    print(f"{'products':>9} {'time (s)':>10} {'loss':>14}")
    try:
        for name, precision, tf32 in rows:
            matmul.fp32_precision = "tf32" if tf32 else "ieee"
            seconds, loss = _timed(args, hidden, head, ids, mask, precision)
            results[name] = seconds
            print(f"{name:>9} {seconds:>10.4f} {loss:>14.6f}")
    finally:
        matmul.fp32_precision = before
    for name in results:
        if name != "fp32":
            print(f"fp32/{name} time ratio: {results['fp32'] / results[name]:.2f}x")
    return results


if __name__ == "__main__":
    main()
