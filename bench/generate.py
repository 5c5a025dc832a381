"""Benchmark: leafpipe's batched greedy generation against one prompt at a time.

Both run `leafpipe.evaluation.generation.generate` on the same model, prompts and torch threads, in
one process: "batched" with `--batch-size` prompts per `generate` call (left-padded, longest first,
what the `generate` rule does), "single" with batch size 1 (what the paper's evaluation scripts
do with plain `model.generate`). Greedy decoding must give the same completions both ways: the
script checks every completion before it reports any speed and stops with UNEQUAL RESULTS
otherwise. Prompts are confounder-world test problems (`leafpipe.data.world`); the tokenizer is
leafpipe's offline BPE tokenizer trained on the world; the model is a random-init Llama of the
chosen shape. Tokens are those of the completions (equal for both), so a batch that keeps
decoding for its longest row pays for the padding of the rows that stopped earlier.

Time: one untimed warm-up call of each on 4 prompts, then `--repeats` timed passes of each over
all prompts, alternating which goes first; the median counts. Throughput is generated tokens/s.
The last line is exactly `speed-up: N.Nx` (batched over single, tokens/s, this run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from leafpipe.data.world import WorldConfig, make_world  # noqa: E402
from leafpipe.evaluation.generation import generate  # noqa: E402
from leafpipe.text.tokenizer import train_tokenizer  # noqa: E402

# Decoders only: the vocabulary is the tokenizer's, the rest LlamaConfig's defaults.
SHAPES = {"tiny": common.TINY, "smollm2-135m": common.SMOLLM2_135M_DECODER}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def setup(args: argparse.Namespace):
    world = make_world(
        WorldConfig(
            seed=args.seed,
            n_teacher_train=200,
            n_student_train=0,
            n_distill_train=0,
            n_test=args.prompts,
        )
    )
    texts = [t for r in world["teacher_train"] for t in (r["instruction"], r["response"])]
    tokenizer = train_tokenizer(texts, vocab_size=512)
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        **common.special_token_ids(tokenizer),
        **SHAPES[args.shape],
    )
    model = LlamaForCausalLM(config).eval().to(args.device)
    return model, tokenizer, world["test"][: args.prompts]


def timed(
    model, tokenizer, rows, batch_size: int, args: argparse.Namespace
) -> tuple[float, list[dict]]:
    common.sync(args.device)
    start = time.perf_counter()
    out = generate(
        model,
        tokenizer,
        rows,
        max_new_tokens=args.max_new_tokens,
        batch_size=batch_size,
        threads=args.threads,
    )
    common.sync(args.device)
    return time.perf_counter() - start, out


def main(argv: Sequence[str] | None = None) -> float:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    model, tokenizer, rows = setup(args)
    sizes = {"batched": args.batch_size, "single": 1}
    for size in sizes.values():
        timed(model, tokenizer, rows[:4], size, args)
    seconds: dict[str, list[float]] = {name: [] for name in sizes}
    outputs: dict[str, list[dict]] = {}
    for r in range(args.repeats):
        for name in list(sizes) if r % 2 == 0 else list(sizes)[::-1]:
            elapsed, outputs[name] = timed(model, tokenizer, rows, sizes[name], args)
            seconds[name].append(elapsed)
    differ = sum(
        a["completion"] != b["completion"] for a, b in zip(outputs["batched"], outputs["single"])
    )
    if differ:
        raise SystemExit(
            f"UNEQUAL RESULTS: {differ} of {len(rows)} completions differ "
            "between batched and single"
        )
    tokens = sum(o["completion_tokens"] for o in outputs["batched"])
    print(
        f"device {args.device}, shape {args.shape}, torch {torch.__version__}, "
        f"{args.threads} threads, "
        f"{len(rows)} prompts, {tokens} generated tokens per pass, batch size {args.batch_size}, "
        f"median of {args.repeats}"
    )
    rate = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        rate[name] = tokens / median
        print(f"{name:8s} {median:8.2f} s  {rate[name]:9.1f} tokens/s")
    print(f"completions equal: {len(rows)} of {len(rows)}")
    speedup = rate["batched"] / rate["single"]
    print(f"speed-up: {speedup:.1f}x")
    return speedup


if __name__ == "__main__":
    main()
