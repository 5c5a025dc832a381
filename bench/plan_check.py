"""Benchmark: the planner's host-memory figures (leafpipe.execution.plan) against measured peak
memory.

What is compared: a scoring job and a distillation job (variant sft: the student's training step,
no teacher) run on the CPU through the stage functions the rules call (`leafpipe.stages.score`,
`leafpipe.stages.distill`), on a random-init model of Llama-3.2-1B's shape scaled down to fit two
cores in about a minute: its vocabulary (128256, the logits dominate a scoring pass as they do at
full size), head size (64) and grouped key/value heads (4 query heads per key/value head) kept,
fewer and narrower layers (`--layers`, `--hidden`). The corpus is `--samples` synthetic rows of
about `--tokens` tokens (the config's `corpus.max_tokens`), the scoring batch `--batch` of them
(`scoring.max_tokens` = batch × tokens), the distillation micro-batch the same.

Each job runs in a fresh subprocess. There, after the imports, the resident memory is the
process's baseline and the kernel's resident high-water mark is reset (bench/common.py:
`resource.getrusage`'s ru_maxrss cannot be reset, and an import's transient peak would hide part
of the job's); after the stage the high-water mark is the job's peak. Compared with the
planner's row for the same config (`leafpipe.execution.plan.plan`):
- process: the peak of the imports (ru_maxrss then) and the resident memory after them, against
  `leafpipe.execution.job_needs.PROCESS_BYTES`;
- job: peak − baseline against the row's host bytes − PROCESS_BYTES (weights, training state,
  activations).
The ratio estimate / measured is ≥ 1 when the planner's figure bounds the job from above.

Output: one line per job: `JOB: estimate X MiB, measured Y MiB, ratio R` (and the baselines).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import common  # noqa: E402

MIB = 2**20
WORDS = ("apples", "pens", "cars", "sum", "total", "each", "more", "left", "then", "so")
JOBS = {"score": "score (student)", "distill": "distill (sft)"}


def model_config(args: argparse.Namespace) -> dict:
    """Llama-3.2-1B's config with `args.layers` layers of width `args.hidden` (head size 64 and
    the 4:1 grouping of query to key/value heads kept; MLP 4 × hidden as in the 1B)."""
    heads = args.hidden // 64
    return {
        **common.REAL_SHAPES["llama-3.2-1b"],
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "intermediate_size": 4 * args.hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 4),
        "head_dim": 64,
    }


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(f"{rng.choice(WORDS)} {rng.randint(10, 99)}" for _ in range(words // 2))


def save_model(args: argparse.Namespace, tokenizer: Any, folder: Path) -> None:
    """A random-init Llama of the benchmark's shape (seed 0) with `tokenizer`, saved in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from leafpipe.text.tokenizer import save_tokenizer

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(**model_config(args), **common.special_token_ids(tokenizer))
    )
    save_tokenizer(tokenizer, folder)  # first: it writes the folder anew
    model.save_pretrained(folder)


def prepare(args: argparse.Namespace, work: Path) -> dict:
    """The model folder, the corpus and the validated config of the run (what the rules pass)."""
    from leafpipe.config import validate_config
    from leafpipe.files.atomic import write_jsonl
    from leafpipe.text.templates import encode_sample
    from leafpipe.text.tokenizer import train_tokenizer

    rng = random.Random(0)
    rows = [
        {
            "id": f"r{i}",
            "instruction": sentence(rng, args.tokens // 8),
            "response": sentence(rng, args.tokens // 8),
        }
        for i in range(args.samples)
    ]
    tokenizer = train_tokenizer(
        [r[f] for r in rows for f in ("instruction", "response")], vocab_size=400
    )
    save_model(args, tokenizer, work / "model")
    write_jsonl(rows, work / "corpus.jsonl")
    longest = max(
        len(encode_sample(tokenizer, r["instruction"], r["response"]).input_ids) for r in rows
    )
    config = validate_config(
        {
            "results": str(work / "results"),
            "models": {
                "teacher": {"path": str(work / "model")},
                "student": {"path": str(work / "model")},
            },
            "corpus": {
                "path": str(work / "corpus.jsonl"),
                "limit": args.samples,
                "max_tokens": longest,
            },
            "scoring": {"max_tokens": args.batch * longest, "max_batch": args.batch},
            "distill": {
                "variants": ["sft"],
                "epochs": 1,
                "micro_batch": args.batch,
                "global_batch": args.batch,
                "val_fraction": 0.0001,
                "checkpoint_every": 1000,
            },
            "resources": {"score": {"threads": args.threads}, "distill": {"threads": args.threads}},
        }
    )
    (work / "config.json").write_text(json.dumps(config))
    return config


def run_job(job: str, work: Path, threads: int) -> None:
    """In a subprocess: the stage of `job`, printing the resident bytes before it and its peak
    above them."""
    import torch

    from leafpipe import stages

    torch.set_num_threads(threads)
    config = json.loads((work / "config.json").read_text())
    imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    baseline = common.reset_peak()
    model = str(work / "model")
    if job == "score":
        stages.score(
            config,
            "student",
            model,
            work / "corpus.jsonl",
            work / "scores.parquet",
            threads=threads,
        )
    else:
        stages.distill(
            config,
            "sft",
            model,
            model,
            work / "corpus.jsonl",
            work / "distilled",
            checkpoint_dir=work / "checkpoints",
            threads=threads,
        )
    print(
        json.dumps(
            {
                "imports": imports,
                "baseline": baseline * 1024,
                "job": common.peak_mib_since(baseline) * MIB,
            }
        )
    )


def measure(job: str, work: Path, threads: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, __file__, "--job", job, "--work", str(work), "--threads", str(threads)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=256, help="about this many tokens a sample")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", choices=sorted(JOBS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        run_job(args.job, args.work, args.threads)
        return
    from leafpipe.execution import job_needs, plan

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = prepare(args, work)
        rows = {row.job: row for row in plan.plan(config)}
        print(
            f"shape: {model_config(args)}; tokens a sample <= {config['corpus']['max_tokens']}, "
            f"batch {args.batch}"
        )
        for job, name in JOBS.items():
            got = measure(job, work, args.threads)
            estimate = rows[name].need.host_bytes - job_needs.PROCESS_BYTES
            measured = got["job"]
            print(
                f"{name}: process estimate {job_needs.PROCESS_BYTES / MIB:.0f} MiB, "
                f"measured import peak {got['imports'] / MIB:.0f} MiB, "
                f"resident after imports {got['baseline'] / MIB:.0f} MiB; job "
                f"estimate {estimate / MIB:.0f} MiB, measured {measured / MIB:.0f} MiB, "
                f"ratio {estimate / measured:.2f}"
            )


if __name__ == "__main__":
    main()
