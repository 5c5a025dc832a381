"""Benchmark: how well a cached top-k teacher approximates the full-vocabulary distillation loss.

For each `--kinds` divergence, each k of `--k` and each top-k mode (`KDSpec.topk_mode`:
"renormalised", the teacher renormalised over its k tokens; "tail", k + 1 categories with a bucket
for the mass outside them), `leafpipe.distill.kd_loss.kd_loss_sum` against a cache built by
`leafpipe.distill.topk.teacher_topk` is compared with the same call against the full teacher:
- loss ratio: the top-k loss over the full loss, summed over the tokens (1 is exact);
- gradient cosine: the cosine between the two gradients with respect to the student's logits,
  all tokens' flattened together (1: the same direction).
Both models' "hidden states" are logits [N, V] and their heads `nn.Identity`, so the gradient is
the logits' own and no LM head is involved.

Two kinds of logits, for `--tokens` tokens over a `--vocab` vocabulary:
- random: teacher and student logits independent N(0, 1): nearly uniform distributions (entropy
  close to log V), where any k holds a small share of the mass;
- peaked: a shared z ~ N(0, 1) per token; the teacher's logits are c z, the student's
  c (0.8 z + 0.6 z'), z' independent, c chosen by bisection so that the teacher's mean entropy is
  `--entropy` nats (the student's is similar): a student that agrees with the teacher on which
  tokens are likely, at an entropy like a language model's next-token distribution.
Each figure is the mean over `--seeds` (one draw of logits per seed), with its sd. The table also
gives the teacher's mean top-k mass. Nothing is tuned: the measurement only says how far each mode
is from the full loss.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, however this is loaded
import common  # noqa: E402

from leafpipe.distill.kd_loss import kd_loss_sum
from leafpipe.distill.spec import KD_KINDS, TOPK_MODES, KDSpec
from leafpipe.distill.topk import teacher_topk
from leafpipe.report.tables import markdown_table

SETTINGS = ("random", "peaked")
SHARED = 0.8  # the student's share of the teacher's z in the peaked setting


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of softmax(logits) over rows [N, V]."""
    log_p = torch.log_softmax(logits, -1)
    return -(log_p.exp() * log_p).sum(-1).mean()


def scale_for_entropy(z: torch.Tensor, target: float) -> float:
    """c such that softmax(c z) has mean entropy `target` (entropy falls as c grows)."""
    low, high = 0.0, 1.0
    while entropy(high * z) > target:
        low, high = high, 2 * high
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if entropy(middle * z) > target else (low, middle)
    return (low + high) / 2


def draw_logits(
    setting: str, tokens: int, vocab: int, seed: int, target_entropy: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) logits [tokens, vocab], fp32, as the module docstring describes."""
    g = torch.Generator().manual_seed(seed)
    z, other = (torch.randn(tokens, vocab, generator=g) for _ in range(2))
    if setting == "random":
        return z, other
    c = scale_for_entropy(z, target_entropy)
    return c * z, c * (SHARED * z + (1 - SHARED**2) ** 0.5 * other)


def as_rows(logits: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] as hidden states [N, 2, V] whose first position is trained (mask [N, 1])."""
    return torch.cat([logits, torch.zeros_like(logits)], 1).view(logits.shape[0], 2, -1)


def loss_and_grad(
    teacher: torch.Tensor, student: torch.Tensor, spec: KDSpec, k: int | None
) -> tuple[float, torch.Tensor]:
    """`kd_loss_sum` with logits as hidden states: against the full teacher (k None) or its top-k
    cache; the loss and its gradient w.r.t. the student's logits."""
    mask = torch.ones(student.shape[0], 1, dtype=torch.bool)
    head = nn.Identity()
    hidden = as_rows(student).requires_grad_()
    if k is None:
        loss = kd_loss_sum(hidden, head, as_rows(teacher), head, mask, spec)
    else:
        cache = teacher_topk(as_rows(teacher), head, mask, k, spec.temperature, spec.chunk_tokens)
        loss = kd_loss_sum(hidden, head, None, None, mask, spec, teacher_topk=cache)
    (grad,) = torch.autograd.grad(loss, hidden)
    return loss.item(), grad[:, 0]


def compare(
    teacher: torch.Tensor, student: torch.Tensor, kind: str, k: int, chunk: int
) -> dict[str, tuple[float, float]]:
    """Per top-k mode: (loss ratio, gradient cosine) to the full loss of `kind`."""
    full_loss, full_grad = loss_and_grad(teacher, student, KDSpec(kind, chunk_tokens=chunk), None)
    found = {}
    for mode in TOPK_MODES:
        spec = KDSpec(kind, chunk_tokens=chunk, topk_mode=mode)
        loss, grad = loss_and_grad(teacher, student, spec, k)
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), full_grad.flatten(), dim=0)
        found[mode] = (loss / full_loss, cosine.item())
    return found


def parse_args(argv: Sequence[str] | None = None):
    p = common.argument_parser(__doc__)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokens", type=int, default=64, help="tokens (rows of logits) per seed")
    p.add_argument("--k", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--kinds", nargs="+", choices=KD_KINDS, default=list(KD_KINDS))
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--entropy", type=float, default=2.0, help="the peaked teacher's mean entropy")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args(argv)


def _spread(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main(argv: Sequence[str] | None = None) -> dict[tuple[str, str, int, str], list[tuple]]:
    """Print the table; return (setting, kind, k, mode) -> per seed (loss ratio, cosine)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[tuple[str, str, int, str], list[tuple]] = {}
    mass: dict[tuple[str, int], list[float]] = {}
    for setting in args.settings:
        for seed in args.seeds:
            teacher, student = draw_logits(setting, args.tokens, args.vocab, seed, args.entropy)
            top = torch.log_softmax(teacher, -1).topk(max(args.k), -1).values.exp()
            for k in args.k:
                mass.setdefault((setting, k), []).append(top[:, :k].sum(-1).mean().item())
                for kind in args.kinds:
                    for mode, got in compare(teacher, student, kind, k, args.chunk_tokens).items():
                        results.setdefault((setting, kind, k, mode), []).append(got)
    print(
        f"vocab {args.vocab}, {args.tokens} tokens per seed, seeds {args.seeds}, "
        f"peaked entropy {args.entropy} nats; mean ± sd over the seeds"
    )
    header = ["setting", "kind", "k", "teacher top-k mass", "mode", "loss ratio", "grad cosine"]
    rows = [
        [setting, kind, str(k), _spread(mass[(setting, k)]), mode]
        + [_spread([seed[i] for seed in per_seed]) for i in (0, 1)]
        for (setting, kind, k, mode), per_seed in results.items()
    ]
    print("\n".join(markdown_table(header, rows)))
    return results


if __name__ == "__main__":
    main()
