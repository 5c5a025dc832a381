"""Benchmark: leafpipe's gradient scoring against the one-sample-at-a-time reference.

What is compared (same process, same model object, same rows, same dtype, same torch threads):

- ours: `leafpipe.detect.scoring.score_samples` with `ScoreSpec(response_level=False)`, so it
  computes instruction-level scores only and does exactly the work of the reference: one response
  loss per sample, its gradient at every input embedding. Its parameters are frozen and only the
  input embeddings require grad; samples are batched by a token budget.
- baseline: what the paper's public detection script does (written out below in `baseline_scores`,
  the reference): one sample at a time, every parameter requires grad, the full logits at every
  position, the mean cross-entropy of the response tokens, `loss.backward()` (which computes every
  parameter's gradient too), the gradient norm of each instruction token's input embedding, then
  the parameter gradients are zeroed. Instruction and target tokens come from
  `leafpipe.text.templates.encode_sample` for both, so both score exactly the same spans.

Both start from text: tokenisation is inside the timed region of both.

Equal results: the per-sample min-max normalised instruction scores of both must agree within
`--atol` (default 1e-4 in fp32; 5e-2 in bf16, whose 8-bit mantissa and the different reduction
order of a padded batch move normalised scores: measured 2e-3 with the tiny shape and 3e-3 with
the llama-3.2-1b shape, bf16 on CPU); otherwise the script stops with a message and prints no
speed-up. On CUDA the same bf16 tolerance applies.

Timing: one untimed warm-up pass of each method on `--warmup` rows, then `--repeats` timed passes
over all rows, alternating which method goes first; the median pass counts. Throughput is rows/s
and tokens/s, tokens being the real (unpadded) chat tokens. TFLOP/s counts 4·N·T for both, N the
non-embedding parameters (transformer blocks; input embedding and output head excluded), T the
tokens: forward 2·N·T plus the input-gradient backward 2·N·T. The baseline really does more (its
parameter gradients are another 2·N·T and its head runs at every position), but that work is not
needed for the result, so it is not counted as useful.

Peak memory, reported as the peak above what was resident before the pass:
- CPU: torch's allocations are invisible to tracemalloc, and glibc keeps freed heap pages, so two
  methods measured in one process would share (and hide) each other's peaks. Each method is
  therefore run once more in a fresh subprocess that rebuilds the same model and rows (checked by
  a fingerprint); there the kernel's resident high-water mark (VmHWM) is reset after setup by
  writing 5 to /proc/self/clear_refs and read after the pass. Exact, not sampled; Linux only
  (elsewhere the column says n/a). That pass is not warmed up, so one-off buffers (thread pools,
  kernel workspaces) count, for both methods alike.
- CUDA: `torch.cuda.max_memory_allocated()` during the timed pass, after
  `reset_peak_memory_stats()`, minus the memory allocated before it (the weights). The baseline's
  parameter gradients are part of its peak.

Shapes: `--shape tiny` (default: hidden 256, 4 layers, 8 heads) for a CPU run in under a minute,
and `world-teacher` (the default pipeline's teacher); `smollm2-135m`, `llama-3.2-1b` and
`llama-3.1-8b` are real Llama shapes with random weights, built directly on the device in the run's
dtype (an 8B model is never materialised in fp32 on the CPU).
Rows are synthetic chats made of confounder-world sentences (`leafpipe.data.world`) of about
`--min-tokens`..`--max-tokens` chat tokens (64..256 for the small shapes, 512..2048 for the real
ones), `--instruction-frac` of them in the instruction; the tokenizer is leafpipe's offline BPE
tokenizer trained on the same world. With a real shape the model's vocabulary (49152 or 128256)
is larger than the tokenizer's: only the first ids occur, which changes no cost (every logit is
still computed).

On CUDA the table's MFU column is TFLOP/s over the GPU's bf16 dense peak, read from its name
(bench/gpu_targets.py; `--peak-tflops` for a GPU it does not know). `--json PATH` also writes the
table's measurements, for bench/gpu_targets.py.

The last line of the output is exactly `speed-up: N.Nx` (ours over baseline, rows/s, this run).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault(
    "TQDM_DISABLE", "1"
)  # score_samples' progress bar would interleave with the table

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402
import gpu_targets  # noqa: E402

from leafpipe.data.world import WorldConfig, make_world
from leafpipe.detect.scoring import ScoreSpec, score_samples, token_budget
from leafpipe.text.templates import INSTRUCTION, encode_sample
from leafpipe.text.tokenizer import train_tokenizer

SHAPES: dict[str, dict[str, Any]] = {
    "world-teacher": common.llama_shape(128, 3, 4, 2, 384),
    "tiny": common.TINY,
    "smollm2-135m": {
        **common.SMOLLM2_135M_DECODER,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
    },
    **common.REAL_SHAPES,
}
SMALL_SHAPES = ("world-teacher", "tiny")  # CPU-sized: short rows by default
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_ATOL = {"fp32": 1e-4, "bf16": 5e-2}
METHODS = ("baseline", "ours")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The device and shape of the model `build_model` makes (bench/score_steps.py's too)."""
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--shape", choices=sorted(SHAPES), default="tiny", help="model shape (random weights)"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    add_model_arguments(p)
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp32 on cpu, bf16 on cuda")
    p.add_argument("--samples", type=int, default=64, help="rows scored per timed pass")
    p.add_argument(
        "--min-tokens",
        type=int,
        help="shortest chat, in tokens (default: 64 small shapes, 512 real ones)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="longest chat, in tokens (default: 256 small shapes, 2048 real ones)",
    )
    p.add_argument(
        "--instruction-frac",
        type=float,
        default=0.5,
        help="share of a chat's tokens in the instruction",
    )
    p.add_argument(
        "--vocab",
        type=int,
        default=1024,
        help="BPE vocabulary of the offline tokenizer "
        "(at most; the world's text runs out of merges at 485)",
    )
    p.add_argument(
        "--batch-tokens",
        type=int,
        help="ours: ScoreSpec.max_tokens (default: leafpipe's budget for the device)",
    )
    p.add_argument(
        "--max-batch", type=int, default=ScoreSpec().max_batch, help="ours: ScoreSpec.max_batch"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch intra-op threads, both methods",
    )
    p.add_argument("--warmup", type=int, default=4, help="rows of the untimed warm-up pass")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes per method; the median counts"
    )
    p.add_argument(
        "--atol", type=float, help="equality tolerance on normalised scores (default by dtype)"
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        help="for the MFU column on cuda (default: the bf16 dense peak of the GPU, gpu_targets.py)",
    )
    p.add_argument(
        "--json", type=Path, help="also write the measurements here (bench/gpu_targets.py)"
    )
    p.add_argument("--memory", choices=("on", "off"), default="on", help="measure peak memory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--memory-probe", choices=METHODS, help=argparse.SUPPRESS
    )  # internal: the CPU subprocess
    p.add_argument("--fingerprint", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.atol = DEFAULT_ATOL[args.dtype] if args.atol is None else args.atol
    lengths = (64, 256) if args.shape in SMALL_SHAPES else (512, 2048)
    args.min_tokens = lengths[0] if args.min_tokens is None else args.min_tokens
    args.max_tokens = (
        max(lengths[1], args.min_tokens) if args.max_tokens is None else args.max_tokens
    )
    if not 0 < args.instruction_frac < 1 or not 16 <= args.min_tokens <= args.max_tokens:
        p.error("need 0 < --instruction-frac < 1 and 16 <= --min-tokens <= --max-tokens")
    return args


# --- setup: tokenizer, rows, model ---------------------------------------------------------------


def world_pieces(seed: int) -> dict[str, list[str]]:
    """Confounder-world text cut into short pieces: instruction sentences and response lines."""
    world = make_world(
        WorldConfig(
            seed=seed, n_teacher_train=400, n_student_train=0, n_distill_train=400, n_test=0
        )
    )
    rows = world["teacher_train"] + world["distill_train"]
    sentences = [
        t if t.endswith(("?", ".")) else t + "." for r in rows for t in r["instruction"].split(". ")
    ]
    return {
        "instruction": sentences,
        "response": [line for r in rows for line in r["response"].split("\n")],
    }


def build_rows(
    tokenizer: PreTrainedTokenizerBase,
    pieces: dict[str, list[str]],
    n: int,
    min_tokens: int,
    max_tokens: int,
    instruction_frac: float,
    seed: int,
) -> list[dict]:
    """`n` chats of about U(min_tokens, max_tokens) tokens, template included: random world
    sentences joined by spaces as the instruction, random solution lines joined by newlines (one
    reasoning step each) as the response. A chat overshoots its drawn length by at most one piece
    (about 12 tokens)."""
    rng = random.Random(seed)
    cost = {
        text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for p in pieces.values()
        for text in p
    }
    template = len(encode_sample(tokenizer, "a", "b")) - 2
    rows = []
    for i in range(n):
        total = rng.randint(min_tokens, max_tokens) - template
        budget = {"instruction": max(1, round(total * instruction_frac))}
        budget["response"] = max(1, total - budget["instruction"])
        parts: dict[str, list[str]] = {}
        for field, limit in budget.items():
            parts[field], used = [], 0
            while used < limit:
                text = rng.choice(pieces[field])
                parts[field].append(text)
                used += cost[text]
        rows.append(
            {
                "id": f"bench-{i:05d}",
                "instruction": " ".join(parts["instruction"]),
                "response": "\n".join(parts["response"]),
            }
        )
    return rows


def build_model(
    args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase, max_len: int
) -> PreTrainedModel:
    """Random init directly on the device, in the run's dtype."""
    shape = dict(SHAPES[args.shape])
    shape.setdefault("vocab_size", len(tokenizer))
    config = LlamaConfig(
        **shape,
        max_position_embeddings=max(2048, max_len),
        **common.special_token_ids(tokenizer),
        attn_implementation="sdpa",
    )
    return common.random_llama(config, DTYPES[args.dtype], args.device, args.seed).eval()


def non_embedding_params(model: PreTrainedModel) -> int:
    """Parameters of the transformer blocks and final norm: input embedding and output head
    excluded."""
    skip = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


@dataclass
class Setup:
    tokenizer: PreTrainedTokenizerBase
    rows: list[dict]
    model: PreTrainedModel
    n_tokens: int  # real chat tokens over all rows
    fingerprint: str


def setup(args: argparse.Namespace) -> Setup:
    torch.set_num_threads(args.threads)
    pieces = world_pieces(args.seed)
    tokenizer = train_tokenizer([t for p in pieces.values() for t in p], args.vocab)
    rows = build_rows(
        tokenizer,
        pieces,
        args.samples,
        args.min_tokens,
        args.max_tokens,
        args.instruction_frac,
        args.seed,
    )
    lengths = [len(encode_sample(tokenizer, r["instruction"], r["response"])) for r in rows]
    model = build_model(args, tokenizer, max(lengths))
    digest = hashlib.sha256(json.dumps(rows).encode())
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    with torch.no_grad():
        for p in model.parameters():
            digest.update(f"{p.sum(dtype=torch.float64).item():.10e}".encode())
    return Setup(tokenizer, rows, model, sum(lengths), digest.hexdigest()[:16])


# --- the two methods -----------------------------------------------------------------------------


def _minmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.full(x.shape, np.nan)


def baseline_scores(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict]
) -> list[np.ndarray]:
    """The reference: the paper's per-sample procedure. Returns min-max normalised instruction
    scores per row, [n_instruction_tokens] each."""
    # Train mode would change nothing here (no dropout in Llama); eval keeps both alike.
    model.eval()
    model.requires_grad_(True)  # as in the paper: every parameter is trainable
    device = next(model.parameters()).device
    out = []
    for row in rows:
        enc = encode_sample(tokenizer, row["instruction"], row["response"])
        ids = torch.tensor([enc.input_ids], device=device)
        labels = torch.where(torch.tensor([enc.loss_mask()], device=device), ids, -100)
        # The embedding matrix requires grad, so the embeddings are an inner node of the graph:
        # their gradient must be retained explicitly.
        embeds = model.get_input_embeddings()(ids)
        embeds.retain_grad()
        # [1, T, V]: every position, full vocabulary.
        logits = model(inputs_embeds=embeds).logits
        # Mean cross-entropy of the response tokens (and end of turn), as `labels=` would compute
        # it.
        loss = F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=-100)
        loss.backward()  # input-embedding gradients, and every parameter's gradient
        instruction = torch.tensor([f == INSTRUCTION for f in enc.fields], device=device)
        out.append(_minmax(embeds.grad[0].float().norm(dim=-1)[instruction].cpu().numpy()))
        model.zero_grad(
            set_to_none=False
        )  # keep the buffers: reallocating them per sample would only slow it
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return out


def ours_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    spec: ScoreSpec,
) -> list[np.ndarray]:
    """leafpipe.detect.scoring.score_samples, instruction level; the same output as
    `baseline_scores`."""
    frame = score_samples(model, tokenizer, rows, spec)
    instr = frame[frame["part"] == INSTRUCTION]
    values = instr["grad_norm_normalized"].to_numpy(np.float64)
    ids = instr["sample_id"].to_numpy()
    bounds = (
        np.flatnonzero(ids[1:] != ids[:-1]) + 1
    )  # rows come back in input order, tokens in sequence order
    return np.split(values, bounds)


def methods(
    args: argparse.Namespace, s: Setup
) -> dict[str, Callable[[Sequence[dict]], list[np.ndarray]]]:
    spec = ScoreSpec(max_tokens=args.batch_tokens, max_batch=args.max_batch, response_level=False)
    return {
        "baseline": lambda rows: baseline_scores(s.model, s.tokenizer, rows),
        "ours": lambda rows: ours_scores(s.model, s.tokenizer, rows, spec),
    }


# --- measurement ---------------------------------------------------------------------------------


def memory_probe(args: argparse.Namespace) -> None:
    """Subprocess side of the CPU memory measurement: one pass, peak RSS above the setup's RSS."""
    s = setup(args)
    if s.fingerprint != args.fingerprint:
        raise SystemExit(
            f"memory probe built different model or rows ({s.fingerprint} != {args.fingerprint})"
        )
    run = methods(args, s)[args.memory_probe]
    gc.collect()
    before = common.reset_peak()
    run(s.rows)
    print(json.dumps({"peak_mib": common.peak_mib_since(before)}))


def cpu_peak_mib(argv: Sequence[str], method: str, fingerprint: str) -> float | None:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        *argv,
        "--memory-probe",
        method,
        "--fingerprint",
        fingerprint,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"}
    )
    if done.returncode != 0:
        raise SystemExit(f"memory probe for {method} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


@dataclass
class Timing:
    seconds: list[float]
    peak_mib: float | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(
    run: Callable[[Sequence[dict]], list[np.ndarray]],
    rows: Sequence[dict],
    device: str,
    cuda_memory: bool,
) -> tuple[list[np.ndarray], float, float | None]:
    gc.collect()
    peak = None
    if cuda_memory:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    common.sync(device)
    t0 = time.perf_counter()
    result = run(rows)
    common.sync(device)
    seconds = time.perf_counter() - t0
    if cuda_memory:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result, seconds, peak


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise SystemExit("baseline and ours scored different instruction spans")
    worst = 0.0
    for x, y in zip(a, b):
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        if np.isfinite(x).any():
            worst = max(worst, float(np.nanmax(np.abs(x - y))))
    return worst


def main(argv: Sequence[str] | None = None) -> float:
    """Run the benchmark, print the table; returns the speed-up (ours over baseline, rows/s)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe(args)
        return float("nan")
    s = setup(args)
    run = methods(args, s)
    cuda = args.device.startswith("cuda")
    n_params = non_embedding_params(s.model)

    for name in METHODS:  # warm-up: kernels, allocator pools, lazy imports
        run[name](s.rows[: args.warmup])
    timings = {name: Timing([]) for name in METHODS}
    results: dict[str, list[np.ndarray]] = {}
    for r in range(args.repeats):
        for name in METHODS if r % 2 == 0 else METHODS[::-1]:
            results[name], seconds, peak = timed(
                run[name], s.rows, args.device, cuda and args.memory == "on"
            )
            timings[name].seconds.append(seconds)
            if peak is not None:
                timings[name].peak_mib = max(peak, timings[name].peak_mib or 0.0)
    diff = max_abs_diff(results["baseline"], results["ours"])
    if not diff <= args.atol:
        raise SystemExit(
            f"UNEQUAL RESULTS: normalised instruction scores differ by {diff:.3g} > {args.atol:g} "
            f"({args.dtype}); no speed-up is reported"
        )
    if args.memory == "on" and not cuda:
        for name in METHODS:
            timings[name].peak_mib = cpu_peak_mib(argv, name, s.fingerprint)

    lengths = [len(encode_sample(s.tokenizer, r["instruction"], r["response"])) for r in s.rows]
    print(
        f"leafpipe scoring benchmark: torch {torch.__version__}, "
        f"transformers {transformers.__version__}, device {args.device}, dtype {args.dtype}, "
        f"threads {torch.get_num_threads()}, seed {args.seed}"
    )
    print(
        f"model: {args.shape} random-init Llama, {n_params / 1e6:.1f}M non-embedding params, "
        f"vocab {s.model.config.vocab_size}; rows: {len(s.rows)}, {s.n_tokens} tokens "
        f"(min {min(lengths)}, mean {s.n_tokens / len(lengths):.0f}, max {max(lengths)})"
    )
    budget = token_budget(ScoreSpec(max_tokens=args.batch_tokens), s.model)
    print(
        f"ours: ScoreSpec(max_tokens={budget}, max_batch={args.max_batch}, response_level=False); "
        f"timed passes: {args.repeats} (median), warm-up rows: {args.warmup}"
    )
    device_name = torch.cuda.get_device_name() if cuda else None
    peak = args.peak_tflops or gpu_targets.bf16_dense_peak_tflops(device_name or "")
    mem_head = "peak MiB (GPU alloc)" if cuda else "peak MiB (RSS)"
    head = (
        "| method   | seconds | rows/s  | tokens/s  | TFLOP/s (4NT) | "
        f"{'MFU   | ' if cuda else ''}{mem_head} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    measured = {}
    for name in METHODS:
        t = timings[name]
        tflops = 4 * n_params * s.n_tokens / t.median / 1e12
        measured[name] = {
            "seconds": t.median,
            "tokens_per_s": s.n_tokens / t.median,
            "tflops": tflops,
            "peak_mib": t.peak_mib,
        }
        mfu = "" if not cuda else f" {100 * tflops / peak:4.1f}% |" if peak else " n/a   |"
        mem = "n/a" if t.peak_mib is None else f"{t.peak_mib:.0f}"
        print(
            f"| {name:<8} | {t.median:7.2f} | {len(s.rows) / t.median:7.1f} | "
            f"{s.n_tokens / t.median:9.0f} | "
            f"{tflops:13.4f} |{mfu} {mem:>{len(mem_head)}} |"
        )
    print(
        f"max |ours - baseline| of normalised instruction scores: {diff:.2e} "
        f"(tolerance {args.atol:g}, {args.dtype})"
    )
    speedup = timings["baseline"].median / timings["ours"].median
    if args.json:
        record = dict(
            shape=args.shape, dtype=args.dtype, device=args.device, device_name=device_name
        )
        record.update(peak_tflops=peak, n_params=n_params, n_tokens=s.n_tokens, methods=measured)
        args.json.write_text(json.dumps(record))
    print(f"speed-up: {speedup:.1f}x")
    return speedup


if __name__ == "__main__":
    main()
