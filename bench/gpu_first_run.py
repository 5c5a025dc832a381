"""Benchmark: the first GPU run: each GPU phase's peak memory against the planner's estimate.

Four phases run through the library functions the pipeline's jobs call, on random-init models of
a shape from `src/leafpipe/schema/model_shapes.yaml` (`--shape llama-3.2-1b`, read by
`leafpipe.execution.model_shapes.hub_shape`; no download) or a tiny Llama (`--shape tiny`, for a
CPU smoke run), created directly on `--device`:

1. scoring: `leafpipe.detect.scoring.score_samples` (the paper's response-level scoring, ScoreSpec's
   defaults) with the model in bf16, its batch budget the scorer's own (`scoring.token_budget`:
   80 % of the free GPU memory, 1024 tokens on a CPU);
2. teacher top-k cache: `leafpipe.distill.teacher_cache.build_teacher_cache` with the same model
   as the teacher, k = 64, batches of the config's `distill.micro_batch` samples and
   `kd.chunk_tokens`;
3. attention: `leafpipe.evaluation.attention.attention_shares` on samples of about
   `attention_tokens` tokens (2048 for the real shape), its budget the analysis's own
   (`attention.analysis_token_budget`), batches of at most `attention.batch_size` (as many samples
   as that);
4. distillation: `leafpipe.distill.trainer.distill`, variant kd from the cache of phase 2, one
   epoch over the scored rows: fp32 master weights, bf16 autocast on a GPU, AdamW, then its
   end-of-epoch checkpoint (the `last/` model and the resumable state), as the distill job does.
The bf16 model is freed before phase 4, whose student is a fresh fp32 model.

Rows are `--samples` synthetic chats (bench/score.py's `build_rows`: world sentences as the
instruction, one reasoning step a line as the response) of a few hundred to 2000 tokens (32 to 128
for the tiny shape), tokenised by leafpipe's offline BPE tokenizer; the real shape's vocabulary
(128256) is larger than the tokenizer's, which changes no cost (every logit is computed).

Estimates are the planner's rows for one GPU (`leafpipe.execution.plan`: `score_need`,
`teacher_logits_need`, `attention_need`, `distill_need`, GPU bytes), computed for the default
config (config/config.yaml) with this run's sizes: samples as long as the longest row, the budgets
above, k = 64 and one epoch. They include the weights (bf16; fp32 master weights, gradients and
AdamW states for distillation). The cache's host memory is also compared with
`memory.topk_cache_host_bytes` at the largest batch's trained tokens.

Measured, per phase (after `gc.collect()` and `torch.cuda.empty_cache()`, as before each budget):
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, so the resident
  weights count, as they do in the estimate; `max_memory_reserved()` goes to the JSON.
- host: the resident high-water mark above the phase's start (bench/common.py), with glibc's mmap
  threshold fixed at 64 KiB so that freed blocks leave the resident set. On a CPU this replaces
  the GPU column: weights resident before the phase do not count, so its ratios say nothing about
  the planner (the smoke run checks that every phase runs).
Seconds: the phase's wall time, GPU work synchronised (distillation's includes its checkpoint).

Output: a Markdown table (phase, memory, estimate GiB, measured GiB, ratio = estimate / measured,
seconds, note); ratio >= 1 when the planner's figure bounds the phase. `--out` writes the same
table and the run's versions as JSON (`results`, `environment`).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the table

import torch
import transformers
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402
from score import build_rows, world_pieces  # noqa: E402

from leafpipe.config import validate_config  # noqa: E402
from leafpipe.detect.scoring import CPU_TOKEN_BUDGET, ScoreSpec, score_samples, token_budget  # noqa: E402
from leafpipe.distill.data import DistillGroup, encode_groups, n_trained  # noqa: E402
from leafpipe.distill.spec import DistillSpec  # noqa: E402
from leafpipe.distill.teacher_cache import (  # noqa: E402
    TeacherCache,
    build_teacher_cache,
    every_sample,
    teacher_batches,
)
from leafpipe.distill.trainer import distill  # noqa: E402
from leafpipe.evaluation.attention import AttentionSample, analysis_token_budget, attention_shares  # noqa: E402
from leafpipe.execution import job_needs, memory, model_shapes, training_needs  # noqa: E402
from leafpipe.execution.memory import ModelShape  # noqa: E402
from leafpipe.text.templates import EncodedSample, encode_sample  # noqa: E402
from leafpipe.text.tokenizer import train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
MIB = 2**20
TOP_K = 64
MMAP_THRESHOLD = 65536  # bytes; glibc's M_MMAP_THRESHOLD is mallopt parameter -3


@dataclass(frozen=True)
class Preset:
    model: (
        str | ModelShape
    )  # a name in model_shapes.yaml, or a shape (its vocabulary: the tokenizer's)
    lengths: tuple[int, int]  # chat tokens of the scored and distilled rows, least and most
    attention_tokens: int  # chat tokens of the attention analysis' samples


PRESETS = {
    "llama-3.2-1b": Preset("meta-llama/Llama-3.2-1B-Instruct", (300, 2000), 2048),
    "tiny": Preset(
        memory.model_shape(common.llama_shape(64, 2, 4, 2, 128, vocab_size=0)), (32, 128), 128
    ),
}


@dataclass(frozen=True)
class Setup:
    """What every phase runs with: the tokenizer, the run's validated config, the model's shape
    (what the planner sizes) and its Hugging Face config, and the device."""

    tokenizer: PreTrainedTokenizerBase
    config: Mapping[str, Any]
    shape: ModelShape
    hf_config: LlamaConfig
    device: str


@dataclass
class Measured:
    seconds: float
    host_bytes: float | None  # resident high-water mark above the phase's start (None: not Linux)
    gpu_bytes: int | None  # max_memory_allocated (None on a CPU)
    gpu_reserved_bytes: int | None


@dataclass
class Result:
    phase: str
    memory: str  # what was measured: "GPU allocated" or "host RSS"
    estimate_gib: float
    measured_gib: float | None
    seconds: float
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.estimate_gib / self.measured_gib if self.measured_gib else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--device", default="cuda", help="cuda or cpu (cpu hides every GPU from this process)"
    )
    p.add_argument("--shape", choices=sorted(PRESETS), default="llama-3.2-1b")
    p.add_argument("--samples", type=int, default=64, help="rows scored, cached and distilled")
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    return p.parse_args(argv)


# --- setup ----------------------------------------------------------------------------------------


def release_freed_blocks() -> None:
    """Have glibc serve blocks over `MMAP_THRESHOLD` by mmap, so that freeing them leaves the
    resident set and a phase's high-water mark is its own (glibc only; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def model_config(shape: ModelShape, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A Llama config of `shape` (rotary, gated MLP, grouped key/value heads: what `memory`
    counts)."""
    return LlamaConfig(
        **common.llama_shape(
            shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate
        ),
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied_embeddings,
        max_position_embeddings=4096,
        **common.special_token_ids(tokenizer),
        attn_implementation="sdpa",
    )


def build_model(config: LlamaConfig, dtype: torch.dtype, device: str) -> PreTrainedModel:
    """Random init directly on `device` in `dtype` (a 1B model is never materialised on the
    host)."""
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def run_config(samples: int) -> dict[str, Any]:
    """The default config, validated, with a top-k cache (k = 64) and one epoch; `samples` caps
    the micro-batch so that a smoke run still takes a whole step."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    distill_settings = config.setdefault("distill", {})
    micro = min(distill_settings.get("micro_batch", 16), samples)
    distill_settings.update(
        teacher_topk=TOP_K,
        epochs=1,
        micro_batch=micro,
        global_batch=micro,
        val_fraction=0.0,
        checkpoint_every=10**6,
    )
    return validate_config(config)


def longest(tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict]) -> int:
    return max(len(encode_sample(tokenizer, r["instruction"], r["response"])) for r in rows)


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


# --- measurement ----------------------------------------------------------------------------------


def settle(device: str) -> None:
    """Free what earlier phases left: unreachable objects, and on a GPU the allocator's cached
    blocks, so that the free memory a budget reads is what a fresh job would see."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def measure(device: str, run: Callable[[], object]) -> Measured:
    """Wall time and peak memory of `run()` (module docstring)."""
    cuda = device.startswith("cuda")
    settle(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    common.sync(device)
    before = common.reset_peak()
    start = time.perf_counter()
    run()
    common.sync(device)
    seconds = time.perf_counter() - start
    host = common.peak_mib_since(before)
    return Measured(
        seconds,
        None if host is None else host * MIB,
        torch.cuda.max_memory_allocated() if cuda else None,
        torch.cuda.max_memory_reserved() if cuda else None,
    )


def planned_gpu_bytes(
    setup: Setup,
    need: Callable[[job_needs.Run, str, int], job_needs.Need | None],
    key: str,
    tokens: int,
    **sections: Any,
) -> int:
    """A planner row's GPU bytes for one GPU, every sample `tokens` long, `sections` replacing the
    config's (the run's budgets)."""
    shapes = {"teacher": setup.shape, "student": setup.shape}
    run = job_needs.Run({**setup.config, **sections}, shapes, samples=1, tokens=tokens)
    return need(run, key, 1).gpu_bytes


def device_row(phase: str, got: Measured, estimate: int, note: str = "") -> Result:
    """The phase's GPU row, or on a CPU its host row."""
    if got.gpu_bytes is not None:
        return Result(
            phase,
            "GPU allocated",
            estimate / GIB,
            got.gpu_bytes / GIB,
            got.seconds,
            f"{note}; reserved {got.gpu_reserved_bytes / GIB:.1f} GiB".lstrip("; "),
        )
    return Result(
        phase,
        "host RSS",
        estimate / GIB,
        None if got.host_bytes is None else got.host_bytes / GIB,
        got.seconds,
        note,
    )


# --- the phases -----------------------------------------------------------------------------------


def scoring_phase(setup: Setup, model: PreTrainedModel, rows: Sequence[dict]) -> Result:
    spec = ScoreSpec(max_tokens=token_budget(ScoreSpec(), model))
    got = measure(setup.device, lambda: score_samples(model, setup.tokenizer, rows, spec))
    estimate = planned_gpu_bytes(
        setup,
        job_needs.score_need,
        "student",
        longest(setup.tokenizer, rows),
        scoring={**setup.config["scoring"], "max_tokens": spec.max_tokens},
    )
    return device_row("scoring", got, estimate, f"budget {spec.max_tokens} tokens")


def largest_batch_rows(samples: Sequence[EncodedSample], batch_size: int) -> int:
    """Trained tokens of the largest of `build_teacher_cache`'s batches."""
    return max(
        sum(n_trained(samples[i]) for i in idx) for idx in teacher_batches(samples, batch_size)
    )


def cache_phase(
    setup: Setup, model: PreTrainedModel, groups: Sequence[DistillGroup], path: Path
) -> list[Result]:
    settings = setup.config["distill"]
    samples = every_sample(encode_groups(setup.tokenizer, groups))
    got = measure(
        setup.device,
        lambda: build_teacher_cache(
            model,
            samples,
            path,
            k=TOP_K,
            temperature=settings["kd"]["temperature"],
            vocab_size=setup.shape.vocab,
            pad_id=pad_id(setup.tokenizer),
            batch_size=settings["micro_batch"],
            chunk_tokens=settings["kd"]["chunk_tokens"],
        ),
    )
    tokens = max(len(s) for s in samples)
    estimate = planned_gpu_bytes(setup, job_needs.teacher_logits_need, "corpus", tokens)
    trained = sum(n_trained(s) for s in samples)  # the cache's rows
    batch_rows = largest_batch_rows(samples, settings["micro_batch"])
    host = memory.topk_cache_host_bytes(trained, TOP_K, batch_rows=batch_rows)
    out = [
        device_row(
            "teacher top-k cache", got, estimate, f"batches of {settings['micro_batch']} samples"
        )
    ]
    if got.gpu_bytes is not None:  # on a CPU the device row is the host row already
        out.append(
            Result(
                "teacher top-k cache",
                "host RSS",
                host / GIB,
                None if got.host_bytes is None else got.host_bytes / GIB,
                got.seconds,
                f"{trained} trained tokens, largest batch {batch_rows}",
            )
        )
    return out


def attention_phase(setup: Setup, model: PreTrainedModel, rows: Sequence[dict]) -> Result:
    tokens = longest(setup.tokenizer, rows)
    settle(setup.device)
    if setup.device.startswith("cuda"):
        budget = analysis_token_budget(
            setup.shape, torch.cuda.mem_get_info()[0], model.dtype.itemsize, tokens
        )
    else:
        budget = CPU_TOKEN_BUDGET
    # Any instruction span will do as the "confounder": the cost does not depend on which tokens it
    # marks.
    samples = [AttentionSample(r["instruction"], r["response"], [(0, 8)]) for r in rows]
    settings = {**setup.config["attention"], "max_tokens": budget}
    got = measure(
        setup.device,
        lambda: attention_shares(
            model, setup.tokenizer, samples, batch_size=settings["batch_size"], max_tokens=budget
        ),
    )
    estimate = planned_gpu_bytes(
        setup, job_needs.attention_need, "student", tokens, attention=settings
    )
    return device_row(
        "attention", got, estimate, f"{len(rows)} samples of <= {tokens} tokens, budget {budget}"
    )


def distill_phase(setup: Setup, groups: Sequence[DistillGroup], cache: Path, work: Path) -> Result:
    student = build_model(setup.hf_config, torch.float32, setup.device)
    spec = DistillSpec.from_config(setup.config["distill"], objective="kd", seed=0)
    steps: list[float] = []
    got = measure(
        setup.device,
        lambda: distill(
            None,
            student,
            setup.tokenizer,
            groups,
            spec,
            work_dir=work,
            teacher_cache=TeacherCache(cache),
            on_step=lambda step, row: steps.append(row["elapsed_s"]),
        ),
    )
    encoded = encode_groups(setup.tokenizer, groups)
    tokens = max(len(s) for g in encoded for s in (g.original, *g.counterfactuals))
    estimate = planned_gpu_bytes(setup, training_needs.distill_need, "kd", tokens)
    return device_row(
        "distillation (kd, top-k cache)",
        got,
        estimate,
        f"optimiser steps: {len(steps)} of {spec.micro_batch} samples, {steps[-1]:.1f} s; "
        "then the end-of-epoch checkpoint",
    )


# --- the run --------------------------------------------------------------------------------------


def run_phases(args: argparse.Namespace, work: Path) -> list[Result]:
    preset = PRESETS[args.shape]
    pieces = world_pieces(0)
    tokenizer = train_tokenizer([t for p in pieces.values() for t in p], 1024)
    rows = build_rows(
        tokenizer, pieces, args.samples, *preset.lengths, instruction_frac=0.5, seed=0
    )
    config = run_config(args.samples)
    attention_rows = build_rows(
        tokenizer,
        pieces,
        config["attention"]["batch_size"],
        preset.attention_tokens,
        preset.attention_tokens,
        instruction_frac=0.5,
        seed=1,
    )
    shape = (
        model_shapes.hub_shape(preset.model)
        if isinstance(preset.model, str)
        else replace(preset.model, vocab=len(tokenizer))
    )
    setup = Setup(tokenizer, config, shape, model_config(shape, tokenizer), args.device)
    groups = [DistillGroup((r["instruction"], r["response"]), source_id=r["id"]) for r in rows]
    model = build_model(setup.hf_config, torch.bfloat16, args.device).eval()
    if memory.model_shape(model.config) != shape:  # the estimates are about this model
        raise SystemExit(f"built {memory.model_shape(model.config)}, planned {shape}")
    cache = work / "teacher_topk.safetensors"
    out = [
        scoring_phase(setup, model, rows),
        *cache_phase(setup, model, groups, cache),
        attention_phase(setup, model, attention_rows),
    ]
    del model  # distillation's student is a fresh fp32 model: the bf16 one must not count there
    out.append(distill_phase(setup, groups, cache, work / "distill"))
    return out


def environment(args: argparse.Namespace) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": args.device,
        "gpu": gpu,
        "shape": args.shape,
        "samples": args.samples,
        "k": TOP_K,
    }


def table(results: Sequence[Result]) -> str:
    lines = [
        "| phase | memory | estimate GiB | measured GiB | ratio | seconds | note |",
        "|---" * 7 + "|",
    ]
    for r in results:
        measured = "n/a" if r.measured_gib is None else f"{r.measured_gib:.3f}"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(
            f"| {r.phase} | {r.memory} | {r.estimate_gib:.3f} | {measured} | {ratio} | "
            f"{r.seconds:.1f} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer picks its device itself: the CPU too
    release_freed_blocks()
    with tempfile.TemporaryDirectory(prefix="leafpipe-gpu-first-run-") as tmp:
        results = run_phases(args, Path(tmp))
    env = environment(args)
    print("leafpipe first GPU run: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print(table(results))
    if args.out:
        args.out.write_text(
            json.dumps(
                {"environment": env, "results": [{**asdict(r), "ratio": r.ratio} for r in results]},
                indent=1,
            )
        )
    return results


if __name__ == "__main__":
    main()
