"""Benchmark: peak host memory of building the teacher top-k cache, preallocated against plain.

What is compared (same tiny random-init teacher, same samples, same batches, same file):

- new: `leafpipe.distill.teacher_cache.build_teacher_cache`: int32 indices and fp32
  log-probabilities [N, k] preallocated from the samples' trained-token counts and filled batch by
  batch, the digest read from them in place, `save_file` writing from them.
- old: what it did before (written out below in `plain_cache`, also the reference of
  tests/distill/test_teacher_cache.py): each sample's rows kept apart, concatenated at the end, the
  digest computed over byte copies of the whole tensors, then saved.

Both files must hold the same header and tensor bytes, or the script stops without a table.

The cache's shape is realistic (k = 64; hundreds of thousands of trained tokens); the teacher is
tiny (its activations would live on a GPU in a real job), so the host peak is the cache's own.
Samples are random token ids, half instruction, half response, then an end-of-turn token.

Peak memory, as in bench/attention_memory.py: each way runs in a fresh subprocess that rebuilds
the same teacher and samples (checked by a fingerprint) and builds a cache of one batch (thread
pools and kernel workspaces are then resident), with the resident high-water mark reset after that
and read after the file is written; glibc's mmap threshold is fixed in the probes
(`--mmap-threshold`) so that freed blocks leave the resident set. Two estimates from the planner:
the cache's own host memory, `memory.topk_cache_host_bytes` with the largest batch's trained tokens
as its transient (a GPU job: the teacher's activations are on the GPU), and that plus the teacher's
forward on one batch, `memory.inference_bytes_per_token` × its tokens (this CPU run, where they are
in host memory too).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402

from leafpipe.distill.data import n_trained
from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.distill.teacher_cache import (
    CACHE_FORMAT,
    build_teacher_cache,
    sample_key,
    teacher_batches,
)
from leafpipe.distill.topk import teacher_topk
from leafpipe.execution.memory import inference_bytes_per_token, model_shape, topk_cache_host_bytes
from leafpipe.text.batching import collate
from leafpipe.text.templates import INSTRUCTION, RESPONSE, TEMPLATE, EncodedSample

WAYS = ("old", "new")


def plain_cache(
    teacher: torch.nn.Module,
    samples: Sequence[EncodedSample],
    path: str | os.PathLike[str],
    *,
    k: int,
    temperature: float,
    vocab_size: int,
    pad_id: int,
    batch_size: int,
    chunk_tokens: int,
) -> None:
    """The plain way, arguments as `build_teacher_cache`'s (CPU only): each sample's rows kept
    apart, concatenated at the end, hashed from byte copies of the whole tensors, saved."""
    parts = {}
    with torch.no_grad():
        for idx in teacher_batches(samples, batch_size):
            batch = collate([samples[i] for i in idx], pad_id)
            hidden = response_hidden(teacher, batch.input_ids, batch.attention_mask)
            top = teacher_topk(
                hidden,
                output_head(teacher),
                batch.target_mask,
                k,
                temperature,
                chunk_tokens,
                vocab_size=vocab_size,
            )
            counts = batch.target_mask.sum(1).tolist()
            parts.update(zip(idx, zip(top.indices.split(counts), top.logprobs.split(counts))))
    lengths = torch.tensor([0] + [len(parts[i][0]) for i in range(len(samples))])
    tensors = {
        "keys": torch.tensor([list(sample_key(s)) for s in samples], dtype=torch.uint8).reshape(
            len(samples), 32
        ),
        "offsets": lengths.cumsum(0),
        "indices": torch.cat([parts[i][0] for i in range(len(samples))] or [torch.empty(0, k)]).to(
            torch.int32
        ),
        "logprobs": torch.cat(
            [parts[i][1] for i in range(len(samples))] or [torch.empty(0, k)]
        ).float(),
    }
    digest = hashlib.sha256()
    for name in ("keys", "offsets", "indices", "logprobs"):
        digest.update(tensors[name].numpy().tobytes())
    metadata = {
        "format": CACHE_FORMAT,
        "k": str(k),
        "temperature": repr(float(temperature)),
        "vocab_size": str(vocab_size),
        "digest": digest.hexdigest(),
    }
    save_file(tensors, str(path), metadata=metadata)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument(
        "--tokens", type=int, default=1000, help="tokens of every sample, half of them trained"
    )
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-tokens", type=int, default=1024)
    p.add_argument(
        "--vocab", type=int, default=512, help="the tiny teacher's vocabulary (at least k)"
    )
    common.add_ways_argument(p, WAYS, old_way="the plain way")
    common.add_probe_arguments(p, WAYS)
    p.add_argument("--out", help=argparse.SUPPRESS)  # internal: where a probe writes
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[LlamaForCausalLM, list[EncodedSample], str]:
    """The tiny teacher, the samples, and a fingerprint of both."""
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        **common.llama_shape(64, 2, 2, 2, 128),
        vocab_size=args.vocab,
        max_position_embeddings=args.tokens,
    )
    teacher = LlamaForCausalLM(config).eval().requires_grad_(False)
    rng = np.random.default_rng(args.seed)
    half = (args.tokens - 1) // 2
    fields = [INSTRUCTION] * half + [RESPONSE] * (args.tokens - 1 - half) + [TEMPLATE]
    offsets = [(i, i + 1) for i in range(args.tokens - 1)] + [(-1, -1)]
    samples = [
        EncodedSample(rng.integers(1, args.vocab, args.tokens).tolist(), fields, offsets)
        for _ in range(args.samples)
    ]
    digest = hashlib.sha256(json.dumps([s.input_ids for s in samples]).encode())
    for p in teacher.parameters():
        digest.update(f"{p.sum(dtype=torch.float64).item():.10e}".encode())
    return teacher, samples, digest.hexdigest()[:16]


def probe(args: argparse.Namespace) -> None:
    """Subprocess side: one cache built one way into `--out`, its peak RSS above the setup's."""
    teacher, samples, fingerprint = build(args)
    if fingerprint != args.fingerprint:
        raise SystemExit(
            f"probe built a different teacher or samples ({fingerprint} != {args.fingerprint})"
        )
    build_cache = plain_cache if args.probe == "old" else build_teacher_cache
    settings = dict(
        k=args.k,
        temperature=1.0,
        vocab_size=args.vocab,
        pad_id=0,
        batch_size=args.batch_size,
        chunk_tokens=args.chunk_tokens,
    )
    build_cache(
        teacher, samples[: args.batch_size], args.out, **settings
    )  # warm-up: one-off buffers
    gc.collect()
    before = common.reset_peak()
    build_cache(teacher, samples, args.out, **settings)
    print(json.dumps({"peak_mib": common.peak_mib_since(before)}))


def header_and_data(path: str | os.PathLike[str]) -> tuple[dict, bytes]:
    """A safetensors file's JSON header, parsed (its metadata's order is random), and the bytes
    after it."""
    raw = Path(path).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def main(argv: Sequence[str] | None = None) -> dict[str, float | None]:
    """Print the table; returns the measured peak MiB of each way run."""
    argv, args = common.parse_or_probe(argv, parse_args, probe)
    if args is None:
        return {}
    teacher, samples, fingerprint = build(args)
    rows = sum(n_trained(s) for s in samples)
    batch_rows = max(
        sum(n_trained(samples[i]) for i in idx) for idx in teacher_batches(samples, args.batch_size)
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {way: Path(tmp) / f"{way}.safetensors" for way in args.ways}
        peaks = {
            way: common.run_probe(
                __file__,
                argv,
                way,
                "--fingerprint",
                fingerprint,
                "--out",
                str(files[way]),
                mmap_threshold=args.mmap_threshold,
            )["peak_mib"]
            for way in args.ways
        }
        if len(files) == 2 and header_and_data(files["old"]) != header_and_data(files["new"]):
            raise SystemExit("UNEQUAL RESULTS: the two ways wrote different caches")
        file_mib = next(iter(files.values())).stat().st_size / 2**20
    cache = topk_cache_host_bytes(rows, args.k, batch_rows=batch_rows) / 2**20
    forward = (
        inference_bytes_per_token(model_shape(teacher.config), 4)
        * args.batch_size
        * args.tokens
        / 2**20
    )
    print(
        f"leafpipe teacher top-k cache memory: torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, "
        f"seed {args.seed}, mmap threshold {args.mmap_threshold or 'dynamic'}"
    )
    print(
        f"cache: {len(samples)} samples × {args.tokens} tokens, {rows} trained tokens, k {args.k}, "
        f"file {file_mib:.0f} MiB; batches of {args.batch_size} ({batch_rows} rows)"
    )
    print(
        f"planner: cache {cache:.0f} MiB; cache + teacher forward of a batch on the CPU "
        f"{cache + forward:.0f} MiB"
    )
    print("| way | peak MiB (RSS) | peak / cache estimate | peak / (cache + forward) estimate |")
    print("|-----|----------------|-----------------------|-----------------------------------|")
    for way, peak in peaks.items():
        ratios = (
            ("n/a", "n/a")
            if peak is None
            else (f"{peak / cache:.2f}", f"{peak / (cache + forward):.2f}")
        )
        print(f"| {way} | {'n/a' if peak is None else f'{peak:.0f}'} | {ratios[0]} | {ratios[1]} |")
    if len(files) == 2:
        print("files equal: same header and tensor bytes")
    return peaks


if __name__ == "__main__":
    main()
