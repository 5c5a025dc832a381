"""Benchmark: the chunked distillation loss (leafpipe.distill.kd_loss) against the full-logit path.

What is compared, for each vocabulary size (`--vocab`, default 32000, 128256 and 152064), on the
same random hidden states and LM heads, the same dtype and the same torch threads, in one run:

- naive: what the trainer did before `kd_loss`: the student's full logits [B, T, V] with grad, the
  teacher's full logits [B, T, V] under no_grad, `leafpipe.distill.reference_loss.token_kl` on
  `logits[:, :-1]` (forward KL at temperature tau), turned into the mean over the batch's trained
  tokens (the per-row means times the rows' token counts, over the total count), then `backward()`.
- chunked: `leafpipe.distill.kd_loss.kd_loss_sum` with `KDSpec(chunk_tokens=--chunk-tokens)` on the
  same hidden states and heads, divided by the trained-token count as the trainer does, then
  `backward()`.

Both produce the gradient of the same loss w.r.t. the student's final hidden states and its head
weight; the loss and both gradient norms must agree (relative 1e-4 in fp32, 2e-2 in bf16) or the
script stops with `UNEQUAL RESULTS` and reports nothing. Only the head and the loss are measured:
the transformer below the final hidden states is identical for both and left out.

Shapes: `--batch` rows of `--seq` tokens, every position trained (`--trained-frac 1`; a smaller
fraction trains only the last part of each row, which the chunked loss exploits and the naive path
cannot), student hidden `--hidden`, teacher hidden `--teacher-hidden` (default: the same). Heads
are bias-free `nn.Linear` layers with N(0, 0.02²) weights (teacher 0.03) and N(0, 1) hidden states.

Measurements (one pass of each method per `--repeats`; the median wall-clock time counts; on CPU
the table also shows the process's CPU time, user + system of all its threads, which other load
on the machine disturbs less than wall-clock time):
- CPU: each (vocab, method) runs in a fresh subprocess, because glibc keeps freed heap pages and a
  second method in the same process would reuse (and hide) the first one's peak. There, after
  setup (heads, hidden states), the kernel's resident high-water mark is reset (5 written to
  /proc/self/clear_refs) and read after the first pass: peak memory = VmHWM - RSS before the pass.
  The process is warmed up on a miniature problem (16 tokens, vocab 64) first; the measured pass
  itself is not repeated beforehand, for both methods alike: its page faults are real costs
  (allocations this large are fresh mmaps at every step). Linux only.
- CUDA: in one process, one warm-up pass each, then `--repeats` passes alternating which method
  goes first; peak memory = torch.cuda.max_memory_allocated() after reset_peak_memory_stats(),
  minus what was allocated before the pass (heads, hidden states).
The weight gradient [V, H] is part of both peaks.

Output: a table, then for each vocabulary exactly one line
`vocab V: memory saving N.Nx, time ratio N.Nx`, where memory saving = naive peak / chunked peak
(> 1: chunked uses less) and time ratio = naive time / chunked time (> 1: chunked is faster).
The issue's target (vocab 128256, seq 2048): memory saving >= 4 at a time ratio >= 1/1.2 = 0.83
(chunked no slower than 1.2x naive).

`--gpu-step` (only meaningful with `--device cuda`; UNTESTED on a GPU when this was written) times
whole training steps instead: a random-init Llama-3.2-1B-shaped student (tied head) forward and
backward through `kd_loss_sum`, and a Llama-3.1-8B-shaped teacher forward under
`torch.inference_mode`, both bf16, and reports tokens/s and
MFU = (6 N_student T + 2 N_teacher T) / step time / `--peak-flops` (default: the GPU's bf16 dense
peak from its name, bench/gpu_targets.py; 989e12 on an H100 SXM or H200), T the tokens of the step
and N the parameters that take part in matmuls (all but the input embedding; a tied head counts
once, as the head). Attention's own FLOPs are not counted.

`--json PATH` also writes the measurements (either mode) for bench/gpu_targets.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402
import gpu_targets  # noqa: E402

from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.distill.kd_loss import kd_loss_sum
from leafpipe.distill.reference_loss import token_kl
from leafpipe.distill.spec import KDSpec

VOCABS = (32000, 128256, 152064)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}
METHODS = ("naive", "chunked")
TARGET_VOCAB, TARGET_MEMORY, TARGET_TIME = 128256, 4.0, 1.2

# Real shapes for --gpu-step (random weights).
STEP_SHAPES = {
    **common.REAL_SHAPES,
    # CPU-sized stand-ins, so the step code can be exercised without a GPU
    # (tests/bench/test_distill_bench.py).
    "tiny-student": common.llama_shape(64, 2, 4, 2, 128, vocab_size=512, tie_word_embeddings=True),
    "tiny-teacher": common.llama_shape(96, 2, 4, 2, 192, vocab_size=512, tie_word_embeddings=False),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    p.add_argument("--vocab", type=int, nargs="+", default=list(VOCABS), help="vocabulary sizes")
    p.add_argument("--seq", type=int, default=2048, help="tokens per row")
    p.add_argument("--batch", type=int, default=1, help="rows")
    p.add_argument("--hidden", type=int, default=2048, help="student hidden size")
    p.add_argument("--teacher-hidden", type=int, help="teacher hidden size (default: --hidden)")
    p.add_argument(
        "--trained-frac", type=float, default=1.0, help="share of each row's positions trained"
    )
    p.add_argument(
        "--chunk-tokens",
        type=int,
        default=KDSpec().chunk_tokens,
        help="chunked: KDSpec.chunk_tokens",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: fp32 on cpu, bf16 on cuda")
    p.add_argument(
        "--repeats", type=int, default=1, help="timed passes per method; the median counts"
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gpu-step", action="store_true", help="time whole 1B-student/8B-teacher training steps"
    )
    p.add_argument(
        "--student-shape",
        default="llama-3.2-1b",
        choices=sorted(STEP_SHAPES),
        help="--gpu-step student",
    )
    p.add_argument(
        "--teacher-shape",
        default="llama-3.1-8b",
        choices=sorted(STEP_SHAPES),
        help="--gpu-step teacher",
    )
    p.add_argument(
        "--steps", type=int, default=5, help="--gpu-step: timed steps (after 2 warm-up steps)"
    )
    p.add_argument(
        "--peak-flops",
        type=float,
        help="--gpu-step: peak FLOP/s for MFU (default: the GPU's bf16 dense peak, gpu_targets.py)",
    )
    p.add_argument("--json", type=Path, help="also write the measurements here (gpu_targets.py)")
    p.add_argument(
        "--probe", choices=METHODS, help=argparse.SUPPRESS
    )  # internal: the CPU subprocess
    args = p.parse_args(argv)
    args.teacher_hidden = args.teacher_hidden or args.hidden
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if not 0 < args.trained_frac <= 1 or args.seq < 2 or args.repeats < 1 or args.chunk_tokens < 0:
        p.error("need 0 < --trained-frac <= 1, --seq >= 2, --repeats >= 1, --chunk-tokens >= 0")
    return args


# --- setup and the two methods --------------------------------------------------------------------


@dataclass
class Setup:
    student_hidden: torch.Tensor  # [B, T, H] leaf, requires grad
    teacher_hidden: torch.Tensor  # [B, T, Ht]
    student_head: nn.Linear  # [V, H]
    teacher_head: nn.Linear  # [V, Ht]
    target_mask: torch.Tensor  # [B, T-1]


def setup(args: argparse.Namespace, vocab: int) -> Setup:
    torch.set_num_threads(args.threads)
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    kw = dict(generator=g, device=device, dtype=dtype)
    b, t = args.batch, args.seq
    sh = torch.randn(b, t, args.hidden, **kw).requires_grad_()
    th = torch.randn(b, t, args.teacher_hidden, **kw)
    heads = []
    for width, std in ((args.hidden, 0.02), (args.teacher_hidden, 0.03)):
        head = nn.Linear(width, vocab, bias=False, device="meta")
        head.weight = nn.Parameter(torch.randn(vocab, width, **kw) * std)
        heads.append(head)
    heads[1].requires_grad_(False)
    mask = torch.zeros(b, t - 1, dtype=torch.bool, device=device)
    mask[:, t - 1 - max(1, round(args.trained_frac * (t - 1))) :] = True
    return Setup(sh, th, heads[0], heads[1], mask)


def naive(s: Setup, args: argparse.Namespace) -> torch.Tensor:
    student_logits = s.student_head(s.student_hidden)  # [B, T, V], with grad
    with torch.no_grad():
        teacher_logits = s.teacher_head(s.teacher_hidden)
    per_row = token_kl(
        teacher_logits[:, :-1], student_logits[:, :-1], s.target_mask, args.temperature
    )  # [B] means
    counts = s.target_mask.sum(-1)
    loss = (
        per_row * counts
    ).sum() / counts.sum()  # the per-token mean over the batch, as the trainer takes it
    loss.backward()
    return loss.detach()


def chunked(s: Setup, args: argparse.Namespace) -> torch.Tensor:
    spec = KDSpec(temperature=args.temperature, chunk_tokens=args.chunk_tokens)
    loss = kd_loss_sum(
        s.student_hidden, s.student_head, s.teacher_hidden, s.teacher_head, s.target_mask, spec
    )
    loss = loss / s.target_mask.sum()  # the trainer divides the sum by its trained tokens
    loss.backward()
    return loss.detach()


RUN: dict[str, Callable[[Setup, argparse.Namespace], torch.Tensor]] = {
    "naive": naive,
    "chunked": chunked,
}


def _reset(s: Setup) -> None:
    s.student_hidden.grad = None
    s.student_head.weight.grad = None


def _checks(loss: torch.Tensor, s: Setup) -> dict[str, float]:
    return {
        "loss": loss.double().item(),
        "grad_hidden_norm": s.student_hidden.grad.double().norm().item(),
        "grad_weight_norm": s.student_head.weight.grad.double().norm().item(),
    }


# --- measurement ----------------------------------------------------------------------------------


def probe(args: argparse.Namespace) -> dict:
    """Subprocess side on CPU: peak RSS of the first pass above the setup's RSS, and pass times."""
    (vocab,) = args.vocab
    run = RUN[args.probe]
    # Warm up on a miniature problem (kernels' one-off initialisation, thread pools), not the real
    # one: the real one's pages must be faulted in during the measured pass, as they are at every
    # step.
    mini = argparse.Namespace(**{**vars(args), "seq": 16, "batch": 1})
    run(setup(mini, 64), mini)
    s = setup(args, vocab)
    gc.collect()
    before = common.reset_peak()
    seconds, cpu_seconds = [], []
    for r in range(args.repeats):
        if r:
            _reset(s)
            gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = run(s, args)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        if r == 0:
            peak = common.peak_mib_since(before)
    return {"peak_mib": peak, "seconds": seconds, "cpu_seconds": cpu_seconds, **_checks(loss, s)}


def cpu_measure(argv: Sequence[str], method: str, vocab: int) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        *argv,
        "--probe",
        method,
        "--vocab",
        str(vocab),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{method} (vocab {vocab}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cuda_measure(args: argparse.Namespace, vocab: int) -> dict[str, dict]:
    s = setup(args, vocab)
    out: dict[str, dict] = {m: {"seconds": [], "peak_mib": 0.0} for m in METHODS}
    for m in METHODS:  # warm-up: kernels, cuBLAS workspaces, the caching allocator's pools
        RUN[m](s, args)
        _reset(s)
    for r in range(args.repeats):
        for m in METHODS if r % 2 == 0 else METHODS[::-1]:
            _reset(s)
            gc.collect()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            common.sync(args.device)
            t0 = time.perf_counter()
            loss = RUN[m](s, args)
            common.sync(args.device)
            out[m]["seconds"].append(time.perf_counter() - t0)
            out[m]["peak_mib"] = max(
                out[m]["peak_mib"], (torch.cuda.max_memory_allocated() - base) / 2**20
            )
            out[m].update(_checks(loss, s))
    del s
    torch.cuda.empty_cache()
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-30)


def main(argv: Sequence[str] | None = None) -> dict[int, tuple[float | None, float]]:
    """Run the benchmark and print it; returns {vocab: (memory saving or None, time ratio)}."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args)))
        return {}
    if args.gpu_step:
        write_record(args, step=gpu_step(args))
        return {}
    cuda = args.device.startswith("cuda")
    results = _measure(args, argv, cuda)
    vocabs = {
        str(vocab): {
            m: {"seconds": statistics.median(res[m]["seconds"]), "peak_mib": res[m]["peak_mib"]}
            for m in METHODS
        }
        for vocab, (res, _) in results.items()
    }
    write_record(args, hidden=args.hidden, teacher_hidden=args.teacher_hidden, vocabs=vocabs)
    _print_header(args, cuda)
    ratios = _print_table(results, cuda)
    _print_targets(args, ratios)
    return ratios


def _measure(
    args: argparse.Namespace, argv: list[str], cuda: bool
) -> dict[int, tuple[dict[str, Any], float]]:
    """Both methods at each vocabulary, checked to agree: {vocab: (measurements, max rel diff)}."""
    results = {}
    for vocab in args.vocab:
        res = (
            cuda_measure(args, vocab) if cuda else {m: cpu_measure(argv, m, vocab) for m in METHODS}
        )
        diff = max(
            _rel(res["naive"][k], res["chunked"][k])
            for k in ("loss", "grad_hidden_norm", "grad_weight_norm")
        )
        if not diff <= TOLERANCE[args.dtype]:
            raise SystemExit(
                f"UNEQUAL RESULTS at vocab {vocab}: loss or gradient norms differ by {diff:.3g} "
                f"(relative) > {TOLERANCE[args.dtype]:g}; nothing is reported"
            )
        results[vocab] = (res, diff)
    return results


def _print_header(args: argparse.Namespace, cuda: bool) -> None:
    n_trained = int(setup_mask_count(args))
    print(
        f"leafpipe distillation-loss benchmark: torch {torch.__version__}, device {args.device}, "
        f"dtype {args.dtype}, "
        f"threads {args.threads}, seed {args.seed}"
    )
    print(
        f"shape: batch {args.batch} x seq {args.seq} ({n_trained} trained tokens), student hidden "
        f"{args.hidden}, "
        f"teacher hidden {args.teacher_hidden}; forward KL at tau {args.temperature}; "
        f"chunked: KDSpec(chunk_tokens={args.chunk_tokens}); passes per method: {args.repeats} "
        "(median time)"
    )


def _print_table(
    results: dict[int, tuple[dict[str, Any], float]], cuda: bool
) -> dict[int, tuple[float | None, float]]:
    """The results table; returns {vocab: (memory saving or None, time ratio)}."""
    mem = "GPU alloc" if cuda else "RSS"
    head = (
        f"| vocab  | naive s | chunked s | naive peak MiB ({mem}) | chunked peak MiB ({mem}) "
        f"| max rel diff (loss, grad norms) |{'' if cuda else ' CPU s naive / chunked |'}"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    ratios: dict[int, tuple[float | None, float]] = {}
    for vocab, (res, diff) in results.items():
        n, c = res["naive"], res["chunked"]
        tn, tc = statistics.median(n["seconds"]), statistics.median(c["seconds"])
        saving = (
            None
            if n["peak_mib"] is None or c["peak_mib"] is None
            else n["peak_mib"] / c["peak_mib"]
        )
        ratios[vocab] = (saving, tn / tc)
        pn, pc = ("n/a" if x["peak_mib"] is None else f"{x['peak_mib']:.0f}" for x in (n, c))
        cpu = (
            ""
            if cuda
            else (
                f" {statistics.median(n['cpu_seconds']):11.2f} / "
                f"{statistics.median(c['cpu_seconds']):7.2f} |"
            )
        )
        print(
            f"| {vocab:<6} | {tn:7.2f} | {tc:9.2f} | {pn:>{len(mem) + 17}} | {pc:>{len(mem) + 19}} "
            f"| {diff:31.1e} |{cpu}"
        )
    return ratios


def _print_targets(args: argparse.Namespace, ratios: dict[int, tuple[float | None, float]]) -> None:
    if TARGET_VOCAB in ratios and args.seq == 2048:
        saving, ratio = ratios[TARGET_VOCAB]
        mem_ok = "n/a" if saving is None else ("met" if saving >= TARGET_MEMORY else "NOT met")
        time_ok = "met" if ratio >= 1 / TARGET_TIME else "NOT met"
        print(
            f"target at vocab {TARGET_VOCAB}: chunked peak <= 1/{TARGET_MEMORY:g} of naive: "
            f"{mem_ok}; "
            f"chunked time <= {TARGET_TIME:g}x naive: {time_ok}"
        )
    for vocab, (saving, ratio) in ratios.items():
        shown = "n/a" if saving is None else f"{saving:.1f}x"
        print(f"vocab {vocab}: memory saving {shown}, time ratio {ratio:.1f}x")


def device_name(args: argparse.Namespace) -> str | None:
    return torch.cuda.get_device_name() if args.device.startswith("cuda") else None


def write_record(args: argparse.Namespace, **measured: Any) -> None:
    """With `--json`, the run's measurements and what they were measured on (bench/gpu_targets.py
    reads them)."""
    if args.json:
        record = {k: vars(args)[k] for k in ("device", "dtype", "batch", "seq")}
        args.json.write_text(json.dumps({**record, "device_name": device_name(args), **measured}))


def setup_mask_count(args: argparse.Namespace) -> int:
    t = args.seq
    return args.batch * max(1, round(args.trained_frac * (t - 1)))


# --- --gpu-step: whole training steps with real shapes --------------------------------------------


def _gpu_batch(
    args: argparse.Namespace, vocab: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random token ids, their attention mask and the target mask of the trained tail."""
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g, device=args.device)
    attention = torch.ones_like(ids)
    mask = torch.zeros(args.batch, args.seq - 1, dtype=torch.bool, device=args.device)
    mask[:, args.seq - 1 - max(1, round(args.trained_frac * (args.seq - 1))) :] = True
    return ids, attention, mask


def _time_steps(
    step: Callable[[], float], args: argparse.Namespace, cuda: bool
) -> tuple[float, float]:
    """(median seconds of a step after two warm-up steps, the last step's loss)."""
    for _ in range(2):  # warm-up
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.steps):
        common.sync(args.device)
        t0 = time.perf_counter()
        loss = step()  # .item() synchronises
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds), loss


def build_llama(shape: str, dtype: torch.dtype, device: str, max_len: int, seed: int) -> nn.Module:
    """A random-init Llama of one of `STEP_SHAPES` (`common.random_llama`), with positions for
    `max_len` tokens at least."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        **STEP_SHAPES[shape], max_position_embeddings=max(2048, max_len), attn_implementation="sdpa"
    )
    return common.random_llama(config, dtype, device, seed)


def matmul_params(model: nn.Module) -> int:
    """Parameters used in matmuls: all but the input embedding (a lookup); a tied head counts once,
    as the head."""
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters() if p is not emb)
    return n + (head.numel() if head is emb else 0)


def gpu_step(args: argparse.Namespace) -> dict[str, Any]:
    """Time whole distillation steps; prints and returns tokens/s, MFU and peak memory."""
    if not args.device.startswith("cuda"):
        print(
            "note: --gpu-step is meant for --device cuda; on this device the figures mean little",
            file=sys.stderr,
        )
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    student = build_llama(args.student_shape, dtype, args.device, args.seq, args.seed).train()
    teacher = (
        build_llama(args.teacher_shape, dtype, args.device, args.seq, args.seed + 1)
        .eval()
        .requires_grad_(False)
    )
    ids, attention, mask = _gpu_batch(args, student.config.vocab_size)
    n_trained = int(mask.sum())
    spec = KDSpec(temperature=args.temperature, chunk_tokens=args.chunk_tokens)
    s_head, t_head = output_head(student), output_head(teacher)

    def step() -> float:
        student.zero_grad(set_to_none=True)
        with torch.inference_mode():
            t_hidden = response_hidden(teacher, ids, attention)
        # An inference tensor may be read outside inference mode as long as autograd never saves it;
        # kd_loss_sum only reads the teacher under no_grad. The clone (B x T x 4096, small) keeps
        # that true whatever the loss does internally.
        t_hidden = t_hidden.clone()
        s_hidden = response_hidden(student, ids, attention)
        loss = kd_loss_sum(s_hidden, s_head, t_hidden, t_head, mask, spec) / n_trained
        loss.backward()
        return loss.item()

    cuda = args.device.startswith("cuda")
    t, loss = _time_steps(step, args, cuda)
    tokens = args.batch * args.seq
    n_s, n_t = matmul_params(student), matmul_params(teacher)
    flops = 6 * n_s * tokens + 2 * n_t * tokens
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    known = gpu_targets.bf16_dense_peak_tflops(device_name(args) or "")
    peak_flops = args.peak_flops or (float("nan") if known is None else known * 1e12)
    result = {
        "student": args.student_shape,
        "teacher": args.teacher_shape,
        "seconds": t,
        "tokens_per_s": tokens / t,
        "mfu": flops / t / peak_flops,
        "peak_flops": peak_flops,
        "peak_gib": peak,
        "loss": loss,
    }
    print(
        f"gpu step: student {args.student_shape} ({n_s / 1e9:.3f}B matmul params), "
        f"teacher {args.teacher_shape} ({n_t / 1e9:.3f}B), {args.dtype}, batch {args.batch} x seq "
        f"{args.seq}, "
        f"{n_trained} trained tokens, "
        f"KDSpec(chunk_tokens={args.chunk_tokens}), device {args.device}, torch {torch.__version__}"
    )
    print(
        f"step {t:.3f} s (median of {args.steps}), {tokens / t:,.0f} tokens/s, "
        f"MFU {100 * result['mfu']:.1f}% of {peak_flops:.3g} FLOP/s (6*N_s*T + 2*N_t*T), "
        f"peak allocated {peak:.1f} GiB, loss {loss:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
