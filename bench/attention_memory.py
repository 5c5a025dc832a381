"""Benchmark: peak memory of the attention analysis, hooked reduction against keeping every layer.

What is compared (same random-init model, same token ids and key masks, same batches):

- new: `leafpipe.evaluation.attention.layer_masses`, what `attention_shares` runs: a forward hook
  on each layer's attention module reduces its weights [B, H, T, T] to per-category masses and
  drops them before the rest of the layer runs; the decoder runs without its head.
- old: what `attention_shares` did before (written out below in `old_masses`): the whole model with
  `output_attentions=True`, every layer's weights kept, then their float64 mean over heads stacked
  [L, B, T, T] and copied to NumPy.

Both must give the same masses (within `--rtol`), or the script stops without a table.

The shape is Llama-3.2-3B's attention (24 query heads of 128, 8 key/value heads) with few layers and
a small hidden size, so that T in the low thousands fits a CPU; the vocabulary is the real one (the
old way computes logits at every position; the new way, and the planner, none). Samples are random
token ids, the first `--instruction-frac` of each an instruction, the rest its response.

Peak memory, as in bench/score.py: each way runs in a fresh subprocess that rebuilds the same model
and batch (checked by a fingerprint); there the kernel's resident high-water mark is reset after
setup (bench/common.py) and read after the pass: the peak above what the model and inputs hold. The
estimate is the planner's `memory.attention_analysis_bytes` at the batch's shape and dtype.

glibc's malloc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after
which blocks of that size (a layer's queries, keys and values at these shapes) come from the heap,
whose freed pages stay resident: the high-water mark then grows with the number of layers although
no tensor outlives its layer. The probes therefore fix the threshold (`--mmap-threshold`, glibc's
MALLOC_MMAP_THRESHOLD_), so that the peak is the live set; 0 keeps glibc's dynamic default.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402

from leafpipe.evaluation.attention import layer_masses
from leafpipe.execution.memory import attention_analysis_bytes, model_shape
from leafpipe.text.batching import collate
from leafpipe.text.templates import INSTRUCTION, RESPONSE, EncodedSample

WAYS = ("old", "new")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Llama-3.2-3B's attention: the [B, H, T, T] weights depend on the heads alone.
ATTENTION_3B = dict(num_attention_heads=24, num_key_value_heads=8, head_dim=128)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    p.add_argument("--tokens", type=int, default=2048, help="T: tokens of every sample")
    p.add_argument("--batch", type=int, default=1, help="B: samples in the one batch")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument(
        "--hidden",
        type=int,
        default=768,
        help="hidden size, a multiple of the 24 heads (each keeps its real width)",
    )
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=common.REAL_SHAPES["llama-3.2-1b"]["vocab_size"])
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--instruction-frac", type=float, default=0.5)
    common.add_ways_argument(p, WAYS, old_way="keeping every layer")
    p.add_argument("--rtol", type=float, default=1e-6, help="equality tolerance of the masses")
    common.add_probe_arguments(p, WAYS)
    return p.parse_args(argv)


def build(
    args: argparse.Namespace,
) -> tuple[LlamaForCausalLM, list[EncodedSample], list[dict[str, np.ndarray]], str]:
    """The model, `--batch` samples of `--tokens` random ids, two random key categories per sample
    ("a": 10 % of the instruction, "b": the rest of it), and a fingerprint of all three."""
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        vocab_size=args.vocab,
        max_position_embeddings=args.tokens,
        tie_word_embeddings=True,
        **ATTENTION_3B,
    )
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[args.dtype])
    try:
        model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    rng = np.random.default_rng(args.seed)
    cut = round(args.tokens * args.instruction_frac)
    fields = [INSTRUCTION] * cut + [RESPONSE] * (args.tokens - cut)
    encoded, masks = [], []
    for _ in range(args.batch):
        encoded.append(
            EncodedSample(
                rng.integers(0, args.vocab, args.tokens).tolist(), fields, [(0, 0)] * args.tokens
            )
        )
        instruction = np.arange(args.tokens) < cut
        a = instruction & (rng.random(args.tokens) < 0.1)
        masks.append({"a": a, "b": instruction & ~a})
    digest = hashlib.sha256(json.dumps([e.input_ids for e in encoded]).encode())
    with torch.no_grad():
        for p in model.parameters():
            digest.update(f"{p.sum(dtype=torch.float64).item():.10e}".encode())
    return model, encoded, masks, digest.hexdigest()[:16]


def old_masses(
    model: LlamaForCausalLM,
    encoded: Sequence[EncodedSample],
    masks: Sequence[dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    """The old way, one batch: every layer's weights kept, their float64 head mean stacked."""
    model.set_attn_implementation("eager")
    batch = collate(encoded, 0)
    with torch.inference_mode():
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_attentions=True,
            use_cache=False,
        )
        weights = (
            torch.stack([a.double().mean(dim=1) for a in out.attentions]).cpu().numpy()
        )  # [L, B, T, T]
    mass = []
    for row, (enc, cats) in enumerate(zip(encoded, masks)):
        per_query = weights[:, row, : len(enc), : len(enc)][:, [f == RESPONSE for f in enc.fields]]
        mass.append({c: per_query[:, :, m].sum(-1).mean(-1) for c, m in cats.items()})
    return mass


def run(
    way: str,
    model: LlamaForCausalLM,
    encoded: Sequence[EncodedSample],
    masks: Sequence[dict[str, np.ndarray]],
) -> list[dict[str, np.ndarray]]:
    if way == "old":
        return old_masses(model, encoded, masks)
    return layer_masses(
        model, encoded, masks, 0, batch_size=len(encoded), max_tokens=len(encoded) * len(encoded[0])
    )


def probe(args: argparse.Namespace) -> None:
    """Subprocess side: one pass of one way, its peak RSS above the setup's, and its masses."""
    model, encoded, masks, fingerprint = build(args)
    if fingerprint != args.fingerprint:
        raise SystemExit(
            f"probe built a different model or batch ({fingerprint} != {args.fingerprint})"
        )
    gc.collect()
    before = common.reset_peak()
    mass = run(args.probe, model, encoded, masks)
    peak = common.peak_mib_since(before)
    print(
        json.dumps(
            {"peak_mib": peak, "mass": [{c: v.tolist() for c, v in m.items()} for m in mass]}
        )
    )


def main(argv: Sequence[str] | None = None) -> dict[str, float | None]:
    """Print the table; returns the measured peak MiB of each way run."""
    argv, args = common.parse_or_probe(argv, parse_args, probe)
    if args is None:
        return {}
    model, encoded, masks, fingerprint = build(args)
    results = {
        way: common.run_probe(
            __file__, argv, way, "--fingerprint", fingerprint, mmap_threshold=args.mmap_threshold
        )
        for way in args.ways
    }
    if len(results) == 2:
        for old, new in zip(results["old"]["mass"], results["new"]["mass"]):
            for cat in old:
                if not np.allclose(new[cat], old[cat], rtol=args.rtol, atol=0):
                    raise SystemExit(f"UNEQUAL RESULTS: category {cat}: {new[cat]} != {old[cat]}")
    estimate = (
        attention_analysis_bytes(
            model_shape(model.config), args.batch, args.tokens, DTYPES[args.dtype].itemsize
        )
        / 2**20
    )
    print(
        f"leafpipe attention analysis memory: torch {torch.__version__}, dtype {args.dtype}, "
        f"threads {torch.get_num_threads()}, seed {args.seed}, "
        f"mmap threshold {args.mmap_threshold or 'dynamic'}"
    )
    print(
        f"model: random-init Llama, {args.layers} layers, hidden {args.hidden}, "
        f"heads {ATTENTION_3B}, vocab {args.vocab}; batch {args.batch} × {args.tokens} tokens"
    )
    print("| way | peak MiB (RSS) | planner's estimate MiB | peak / estimate |")
    print("|-----|----------------|------------------------|-----------------|")
    peaks = {}
    for way, result in results.items():
        peaks[way] = result["peak_mib"]
        shown = "n/a" if peaks[way] is None else f"{peaks[way]:.0f}"
        ratio = "n/a" if peaks[way] is None else f"{peaks[way] / estimate:.2f}"
        print(f"| {way} | {shown} | {estimate:.0f} | {ratio} |")
    if len(results) == 2:
        print(f"masses equal within rtol {args.rtol:g}")
    return peaks


if __name__ == "__main__":
    main()
