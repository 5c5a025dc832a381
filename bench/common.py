"""What the benchmarks share: model shapes and random-init models, argument parsing, GPU sync,
and peak resident memory.

Peak memory on CPU: torch's CPU allocations are invisible to tracemalloc, and glibc keeps freed
pages, so a peak is read from the kernel: the resident high-water mark (VmHWM) is reset just
before the pass and read after it. Exact rather than sampled; Linux only (elsewhere the peak is
unknown: None).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def llama_shape(
    hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, /, **config: Any
) -> dict[str, Any]:
    """LlamaConfig's arguments for a decoder of these sizes (hidden size, layers, attention heads,
    key/value heads, MLP width), plus any other `config` arguments (vocabulary, tied head, RoPE
    base): the benchmarks' tables of shapes then read as rows of sizes in this order.
    LlamaConfig's head is untied unless `tie_word_embeddings=True`."""
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        **config,
    )


LLAMA_3 = dict(rope_theta=500000.0, rms_norm_eps=1e-5)  # its RoPE base and RMSNorm epsilon
# Real Llama shapes (random weights in the benchmarks).
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": llama_shape(
        2048, 16, 32, 8, 8192, vocab_size=128256, tie_word_embeddings=True, **LLAMA_3
    ),
    "llama-3.1-8b": llama_shape(
        4096, 32, 32, 8, 14336, vocab_size=128256, tie_word_embeddings=False, **LLAMA_3
    ),
}
# Decoders whose vocabulary each benchmark adds: a CPU-sized one, and SmolLM2-135M's.
TINY = llama_shape(256, 4, 8, 8, 1024)
SMOLLM2_135M_DECODER = llama_shape(576, 30, 9, 3, 1536)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    """A model config's padding, start and end token ids: the tokenizer's."""
    return dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def random_llama(
    config: LlamaConfig, dtype: torch.dtype, device: str, seed: int
) -> LlamaForCausalLM:
    """A random-init Llama created directly on `device` in `dtype` (an 8B model is never
    materialised in fp32 on the host)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in its help, except where it has none: there the default is
    worked out from other options, and the help says how."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def argument_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: the first line of its docstring `doc` as the description, and each
    option's default in its help (`DefaultsHelp`)."""
    return argparse.ArgumentParser(description=doc.split("\n")[0], formatter_class=DefaultsHelp)


def sync(device: str) -> None:
    """Wait for queued GPU work, so a timer stops when the work does."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak() -> int | None:
    """Reset the high-water mark; returns the resident KiB now, or None where that is impossible."""
    try:
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0
    except OSError:
        return None
    return before


def peak_mib_since(before: int | None) -> float | None:
    """Peak resident MiB above `before` (from `reset_peak`) since the reset."""
    return None if before is None else (_status_kib("VmHWM") - before) / 1024


def add_ways_argument(p: argparse.ArgumentParser, ways: Sequence[str], old_way: str) -> None:
    """`--ways`: which of a memory benchmark's `ways` (an old and a new one) to measure, all by
    default; `old_way` says in the help what makes the old one too large for some sizes."""
    p.add_argument(
        "--ways",
        nargs="+",
        choices=ways,
        default=list(ways),
        help=f"leave out old where {old_way} does not fit",
    )


def add_probe_arguments(p: argparse.ArgumentParser, ways: Sequence[str]) -> None:
    """The options `parse_or_probe` and `run_probe` rely on, for a memory benchmark measuring
    `ways`: threads, seed, glibc's mmap threshold, and the internal ones of a probe process."""
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--mmap-threshold", type=int, default=65536, help="bytes; 0: glibc's dynamic default"
    )
    p.add_argument("--probe", choices=ways, help=argparse.SUPPRESS)  # internal: the subprocess
    p.add_argument("--fingerprint", help=argparse.SUPPRESS)


def parse_or_probe(
    argv: Sequence[str] | None, parse_args: Callable[[list[str]], Any], probe: Callable[[Any], None]
) -> tuple[list[str], Any]:
    """A memory benchmark's arguments and its parsed options, or None for the options once this
    process was a probe (`--probe WAY`: one way measured in a fresh process) and has run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe:
        probe(args)
        return argv, None
    return argv, args


def run_probe(
    script: str, argv: Sequence[str], way: str, *extra: str, mmap_threshold: int = 0
) -> dict[str, Any]:
    """Run the benchmark `script` again as the probe of one way, in a fresh process, and return
    the JSON of its last line. `mmap_threshold` > 0 fixes glibc's MALLOC_MMAP_THRESHOLD_ there,
    so that freed blocks leave the resident set and the peak is the live set."""
    cmd = [sys.executable, os.path.abspath(script), *argv, "--probe", way, *extra]
    env = {
        **os.environ,
        **({"MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)} if mmap_threshold else {}),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"probe of the {way} way failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
