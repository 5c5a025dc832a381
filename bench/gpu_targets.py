"""The GPU targets of the first GPU run (bench/gpu_first_run.sh), as PASS/FAIL lines computed from
that run's measurements, and the bf16 dense peak of the GPU they are measured against.

Targets:
- scoring: leafpipe's input-gradient scoring (`score_samples`, bench/score.py's method "ours") on
  the Llama-3.1-8B shape reaches at least `SCORING_SHARE` of the GPU's bf16 dense peak, counting
  4·N·T useful FLOPs as bench/score.py does (N non-embedding parameters, T tokens);
- KD loss memory: the chunked distillation loss (`kd_loss_sum`, bench/distill.py's "chunked") over
  `KD_TOKENS` tokens and a `KD_VOCAB` vocabulary peaks at most `KD_BYTES` (2 GB, 10^9-byte GB) of
  GPU memory above its inputs (the hidden states and heads); its weight gradient counts.
A target whose measurement is missing (its step failed or ran out of time), was taken on another
shape or off a GPU, or whose GPU's peak is unknown prints MISSING or UNKNOWN, never PASS.

The peaks are NVIDIA's datasheet bf16 Tensor Core figures without sparsity (the datasheets print
twice these, "with sparsity"). A GPU not in `BF16_DENSE_PEAK_TFLOPS` has no known peak: pass
`--peak-tflops` to bench/score.py (`--peak-flops` to bench/distill.py) there.

Torch-free: it reads only the JSON that `bench/score.py --json` and `bench/distill.py --json` write.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Substrings of `torch.cuda.get_device_name()`, most specific first: "NVIDIA H100 80GB HBM3" is the
# SXM card, "NVIDIA H100 PCIe" and "NVIDIA H100 NVL" the others; "NVIDIA H200", "NVIDIA H200 NVL".
BF16_DENSE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("NVL", 835.0),  # H100 NVL and H200 NVL
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("A100", 312.0),
)
SCORING_SHAPE = "llama-3.1-8b"
SCORING_SHARE = 0.40
KD_TOKENS, KD_VOCAB = 8192, 128256
KD_BYTES = 2e9
MIB = 2**20


def bf16_dense_peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of the GPU `torch.cuda.get_device_name()` calls `device_name`, or None
    for a GPU not in `BF16_DENSE_PEAK_TFLOPS`."""
    return next((tflops for key, tflops in BF16_DENSE_PEAK_TFLOPS if key in device_name), None)


def scoring_target(record: dict[str, Any] | None) -> str:
    """The scoring target's line from `bench/score.py --json`'s record (None: no record)."""
    name = f"scoring >= {SCORING_SHARE:.0%} of bf16 peak ({SCORING_SHAPE})"
    if record is None or not record["device"].startswith("cuda"):
        return f"MISSING {name}: no GPU measurement"
    if record["shape"] != SCORING_SHAPE or record["dtype"] != "bf16":
        return f"MISSING {name}: measured {record['shape']} in {record['dtype']}"
    peak = record["peak_tflops"]
    if peak is None:
        return f"UNKNOWN {name}: the bf16 peak of {record['device_name']} is not known"
    achieved = record["methods"]["ours"]["tflops"]
    verdict = "PASS" if achieved >= SCORING_SHARE * peak else "FAIL"
    return (
        f"{verdict} {name}: {achieved:.1f} TFLOP/s = {achieved / peak:.1%} of {peak:g} "
        f"({record['device_name']})"
    )


def kd_memory_target(record: dict[str, Any] | None) -> str:
    """The KD-loss memory target's line from `bench/distill.py --json`'s record (None: none)."""
    name = f"chunked KD loss <= {KD_BYTES / 1e9:g} GB at {KD_TOKENS} tokens x {KD_VOCAB} vocab"
    if record is None or not record["device"].startswith("cuda"):
        return f"MISSING {name}: no GPU measurement"
    tokens = record["batch"] * record["seq"]
    chunked = record["vocabs"].get(str(KD_VOCAB), {}).get("chunked")
    if tokens != KD_TOKENS or chunked is None:
        return f"MISSING {name}: measured {tokens} tokens, vocabularies {sorted(record['vocabs'])}"
    peak = chunked["peak_mib"] * MIB
    verdict = "PASS" if peak <= KD_BYTES else "FAIL"
    return (
        f"{verdict} {name}: peak {peak / 1e9:.2f} GB above its inputs "
        f"({record['dtype']}, student hidden {record['hidden']}, {record['device_name']})"
    )


def read(path: Path | None) -> dict[str, Any] | None:
    """A benchmark's JSON record; None when its step wrote none (it failed or ran out of time)."""
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def main(argv: Sequence[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--score", type=Path, help="bench/score.py --json of the 8B shape")
    p.add_argument("--kd", type=Path, help="bench/distill.py --json at 8192 tokens")
    args = p.parse_args(argv)
    lines = [scoring_target(read(args.score)), kd_memory_target(read(args.kd))]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
