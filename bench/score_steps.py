"""Benchmark: response-level scoring with its per-scope backward passes batched, against one full
backward pass per scope.

What is compared (same process, same model object, same rows, same batches, same dtype and
threads): `leafpipe.detect.scoring.score_samples` with `ScoreSpec(response_scopes="steps")`, so a
row of S reasoning steps has S scopes (its instruction and its first S - 1 reasoning steps, each
scored by the loss of what follows), run three ways by swapping the batch function it calls
(`embedding_grad_norms`):

- per-step: the reference, what leafpipe did before (`per_step_grad_norms` below): one forward
  pass, then one `torch.autograd.grad` per scope, each a full backward pass through the loss, the
  LM head and the decoder;
- one-per-pass: leafpipe's `embedding_grad_norms` with `SCOPES_PER_BACKWARD = 1`
  (leafpipe.detect.input_gradients): the loss's and the head's backward pass once for all scopes,
  then one backward pass through the decoder per scope;
- batched: leafpipe's `embedding_grad_norms` as it is: the head once, then the decoder's backward
  passes of up to `SCOPES_PER_BACKWARD` scopes in one (`is_grads_batched`).

Equal results: `grad_norm` and `grad_x_input` of every method must agree with the reference to
`--rtol` (default 1e-4, fp32) of the column's largest score, NaN where the reference has NaN;
otherwise the script stops with a message and prints no ratio.

Timing: one untimed warm-up pass of each method on `--warmup` rows, then `--repeats` timed passes
over all rows, rotating which method goes first; the median pass counts. Rows are built from
confounder-world text (`leafpipe.data.world`, as in bench/score.py): an instruction of
`--instruction` world sentences and a response of `--steps` solution lines, one reasoning step
each. The model is a random-init Llama of one of bench/score.py's shapes (`--shape tiny` by
default: hidden 256, 4 layers).

The last line of the output is exactly `batched / per-step: N.NNx` (the time ratio; below 1 is
faster).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault(
    "TQDM_DISABLE", "1"
)  # score_samples' progress bar would interleave with the table

import numpy as np
import pandas as pd
import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/*.py, however this is loaded
import common  # noqa: E402
from score import add_model_arguments, build_model, world_pieces  # noqa: E402

import leafpipe.detect.input_gradients as input_gradients
import leafpipe.detect.scoring as scoring
from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.text.templates import encode_sample
from leafpipe.text.tokenizer import train_tokenizer

METHODS = ("per-step", "one-per-pass", "batched")
COLUMNS = ("grad_norm", "grad_x_input")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = common.argument_parser(__doc__)
    add_model_arguments(p)
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--samples", type=int, default=16, help="rows scored per timed pass")
    p.add_argument("--steps", type=int, default=8, help="reasoning steps (lines) per response")
    p.add_argument("--instruction", type=int, default=6, help="world sentences per instruction")
    p.add_argument(
        "--vocab", type=int, default=1024, help="BPE vocabulary of the offline tokenizer (at most)"
    )
    p.add_argument(
        "--batch-tokens", type=int, default=scoring.CPU_TOKEN_BUDGET, help="ScoreSpec.max_tokens"
    )
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads"
    )
    p.add_argument("--warmup", type=int, default=2, help="rows of the untimed warm-up pass")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed passes per method; the median counts"
    )
    p.add_argument(
        "--rtol", type=float, default=1e-4, help="equality tolerance against the reference"
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_rows(
    pieces: dict[str, list[str]], n: int, n_instruction: int, n_steps: int, seed: int
) -> list[dict]:
    """`n` chats: `n_instruction` random world sentences, and `n_steps` random solution lines."""
    rng = random.Random(seed)
    return [
        {
            "id": f"bench-{i:05d}",
            "instruction": " ".join(rng.choices(pieces["instruction"], k=n_instruction)),
            "response": "\n".join(rng.choices(pieces["response"], k=n_steps)),
        }
        for i in range(n)
    ]


def per_step_grad_norms(
    model: PreTrainedModel, items: Sequence[Any], pad_id: int, spec: ScoreSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: `embedding_grad_norms`' contract (scores [2, B, T], losses [B], status [B])
    the way leafpipe computed it before: logits where a target is predicted, the mean loss of each
    scope, and one full backward pass per scope. The rows here are finite: all are scored."""
    device = next(model.parameters()).device
    batch, steps, is_instr = input_gradients.prepared_batch(items, pad_id, device)
    width = batch.input_ids.shape[1]
    keep = batch.target_mask.any(0).nonzero().squeeze(-1)
    embeds = model.get_input_embeddings()(batch.input_ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeds, logits_to_keep=keep).logits.float()  # [B, K, V]
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), batch.input_ids[:, 1:][:, keep], reduction="none"
    )
    targets, target_steps = batch.target_mask[:, keep], steps[:, 1:][:, keep]
    scopes = [(targets, is_instr)] + [
        (targets & (target_steps > k), steps == k)
        for k in range(max(it.last_reasoning_step for it in items))
    ]
    scores = torch.full((2, len(items), width), float("nan"), device=device)
    losses = []
    for n, (mask, at) in enumerate(scopes):
        has_targets = mask.any(-1)
        if not bool(has_targets.any()):
            continue
        loss = (nll * mask).sum(-1) / mask.sum(-1).clamp_min(1)
        losses.append(loss.detach())
        (grad,) = torch.autograd.grad(loss.sum(), embeds, retain_graph=n + 1 < len(scopes))
        at = at & has_targets[:, None]
        scores[0, at] = grad.norm(dim=-1)[at]
        scores[1, at] = (grad * embeds.detach()).sum(-1).abs()[at]
    return scores.cpu().numpy(), losses[0].cpu().numpy(), np.zeros(len(items), np.int8)


def methods(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ScoreSpec
) -> dict[str, Callable[[Sequence[dict]], pd.DataFrame]]:
    """Each method: rows -> score_samples' frame, with scoring's batch function
    (`leafpipe.detect.scoring.embedding_grad_norms`) or group size
    (`leafpipe.detect.input_gradients.SCOPES_PER_BACKWARD`) swapped."""
    ours, per_backward = scoring.embedding_grad_norms, input_gradients.SCOPES_PER_BACKWARD

    def run(batch_function: Callable, group: int) -> Callable[[Sequence[dict]], pd.DataFrame]:
        def score(rows: Sequence[dict]) -> pd.DataFrame:
            scoring.embedding_grad_norms, input_gradients.SCOPES_PER_BACKWARD = (
                batch_function,
                group,
            )
            try:
                return score_samples(model, tokenizer, rows, spec)
            finally:
                scoring.embedding_grad_norms = ours
                input_gradients.SCOPES_PER_BACKWARD = per_backward

        return score

    return {
        "per-step": run(per_step_grad_norms, per_backward),
        "one-per-pass": run(ours, 1),
        "batched": run(ours, per_backward),
    }


def check_equal(frames: dict[str, pd.DataFrame], rtol: float) -> float:
    """The largest difference of any method's scores from the reference's, relative to the largest
    reference score of its column (a |∂L/∂e · e| near 0 is a cancellation, with no relative digits
    to compare); stops the script if it exceeds `rtol` or the NaN patterns differ."""
    reference = frames["per-step"]
    worst = 0.0
    for name, frame in frames.items():
        for column in COLUMNS:
            a, b = frame[column].to_numpy(np.float64), reference[column].to_numpy(np.float64)
            if not np.array_equal(np.isnan(a), np.isnan(b)):
                raise SystemExit(
                    f"UNEQUAL RESULTS: {name} scores other tokens than per-step; "
                    "no ratio is reported"
                )
            finite = np.isfinite(b)
            worst = max(
                worst, float(np.max(np.abs(a[finite] - b[finite])) / np.max(np.abs(b[finite])))
            )
    if not worst <= rtol:
        raise SystemExit(
            f"UNEQUAL RESULTS: scores differ from per-step by {worst:.3g} > {rtol:g} (relative to "
            "the largest score); no ratio is reported"
        )
    return worst


def timed(
    run: Callable[[Sequence[dict]], pd.DataFrame], rows: Sequence[dict], device: str
) -> tuple[pd.DataFrame, float]:
    common.sync(device)
    t0 = time.perf_counter()
    frame = run(rows)
    common.sync(device)
    return frame, time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> float:
    """Run the benchmark, print the table; returns the time ratio batched / per-step."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    torch.set_num_threads(args.threads)
    pieces = world_pieces(args.seed)
    tokenizer = train_tokenizer([t for p in pieces.values() for t in p], args.vocab)
    rows = build_rows(pieces, args.samples, args.instruction, args.steps, args.seed)
    lengths = [len(encode_sample(tokenizer, r["instruction"], r["response"])) for r in rows]
    model = build_model(args, tokenizer, max(lengths))
    spec = ScoreSpec(
        max_tokens=args.batch_tokens, response_scopes="steps"
    )  # mean loss, as the reference
    run = methods(model, tokenizer, spec)

    for name in METHODS:  # warm-up: kernels, allocator pools, lazy imports
        run[name](rows[: args.warmup])
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    frames: dict[str, pd.DataFrame] = {}
    for r in range(args.repeats):
        for name in METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]:
            frames[name], t = timed(run[name], rows, args.device)
            seconds[name].append(t)
    worst = check_equal(frames, args.rtol)

    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(
        f"leafpipe response-scope scoring benchmark: torch {torch.__version__}, transformers "
        f"{transformers.__version__}, device {args.device}, dtype {args.dtype}, "
        f"threads {torch.get_num_threads()}, seed {args.seed}"
    )
    print(
        f"model: {args.shape} random-init Llama; rows: {len(rows)} of {args.steps} steps, "
        f"{sum(lengths)} tokens (min {min(lengths)}, max {max(lengths)}); "
        f"ScoreSpec(max_tokens={args.batch_tokens}, response_scopes='steps'); "
        f"SCOPES_PER_BACKWARD = {input_gradients.SCOPES_PER_BACKWARD}; "
        f"timed passes: {args.repeats} (median)"
    )
    head = "| method       | seconds | / per-step |"
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for name in METHODS:
        print(f"| {name:<12} | {median[name]:7.2f} | {median[name] / median['per-step']:9.2f}x |")
    print(
        f"max |difference| from per-step / largest score (grad_norm, grad_x_input): {worst:.2e} "
        f"(tolerance {args.rtol:g})"
    )
    ratio = median["batched"] / median["per-step"]
    print(f"batched / per-step: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
