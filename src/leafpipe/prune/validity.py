"""Counterfactual validity (beyond the paper): keep a pruned span only if the answer does not
need it.

Detection flags tokens the answer needs as often as distractors (on the world, the problem's own
numbers as often as the planted ones), and a counterfactual without a needed number teaches the
student to answer a problem that no longer has that answer. The teacher tells the two apart: a
span it ignores leaves its loss on the response unchanged when removed; a span it needs makes the
tokens that depend on it unpredictable. So a counterfactual is kept when

    rise = loss_cf − loss_orig ≤ margin

where each loss is the teacher's mean negative log-likelihood per token (nats) over the *same*
text: the counterfactual's trained tokens (its response from `train_from` on, and the end-of-turn
token) and the tokens of the original that carry that same text (the whole response at
instruction level; the original response's suffix of the same length at response level, where the
pruned earlier steps are context only). With `student`, the student's rise (with its own
tokenizer) must pass too. Originals are always kept.

Cost: one forward pass per original and per counterfactual, no gradient, batched by a token
budget over length-sorted samples as in scoring; the original's per-token losses serve all of its
counterfactuals. Models run as `stages.load_placed_model` places them (bf16 on a GPU, fp32 on the
CPU); log-likelihoods are taken in fp32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.detect.scoring import ScoreSpec, token_budget, token_budget_batches
from leafpipe.detect.token_kinds import overlaps
from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.text.batching import collate
from leafpipe.text.templates import INSTRUCTION, EncodedSample, encode_sample

log = logging.getLogger("leafpipe")

ORIGINAL, COUNTERFACTUAL = "original", "counterfactual"
# Margins the summary counts kept counterfactuals at, so the report shows what each would keep.
SWEEP_MARGINS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, math.inf)


@dataclass(frozen=True)
class ValiditySpec:
    check: bool = True
    margin: float = 0.1  # nats per token; the schema's description says why
    student: bool = False  # also require the student's rise <= margin
    max_tokens: int | None = None  # token budget of a batch; None: scoring's budget for the device


def compared_start(original_response: str, cf_response: str, train_from: int) -> int:
    """Where, in the original response, the text the counterfactual trains on begins.

    A counterfactual trains on `cf_response[train_from:]`, which is the original response's
    suffix unchanged (instruction level: all of it); anything else would compare different texts.
    """
    trained = cf_response[train_from:]
    if not original_response.endswith(trained):
        raise ValueError(
            "a counterfactual's trained response text (from train_from on) is not the end of its "
            "original's response, so their losses are not on the same text"
        )
    return len(original_response) - len(trained)


def token_nlls(
    model: PreTrainedModel,
    samples: Sequence[EncodedSample],
    pad_id: int,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """Per sample, −log p(token t | tokens before t) of each trained token (`loss_mask`), NaN at
    the others: one float32 array [T_i] per sample, in input order.

    Batches are right-padded and run without an attention mask: causal attention alone keeps real
    tokens from seeing the padding (as in scoring). Logits are kept only at positions that predict
    a trained token, so the vocabulary projection skips the instructions. Batches follow scoring's
    token budget (`max_tokens`; None: by device) and batch-size limit.
    """
    device = next(model.parameters()).device
    batching = ScoreSpec(max_tokens=max_tokens)
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(samples)
    lengths = [len(s) for s in samples]
    for idx in token_budget_batches(
        lengths, token_budget(batching, model, backward=False), batching.max_batch
    ):
        batch = collate([samples[i] for i in idx], pad_id).to(device)
        keep = batch.target_mask.any(0).nonzero().squeeze(-1)
        with torch.inference_mode():
            # The decoder, then the head: a model spread over GPUs returns its hidden states on
            # its last GPU, where `keep` must meet them (`logits_to_keep` would not move it there).
            hidden = response_hidden(model, batch.input_ids, None)
            logits = output_head(model)(hidden[:, keep.to(hidden.device)])  # [B, K, V]
            targets = batch.input_ids[:, 1:][:, keep].to(logits.device)
            nll = (
                torch.nn.functional.cross_entropy(
                    logits.float().flatten(0, 1), targets.flatten(), reduction="none"
                )
                .view_as(targets)
                .to(device)
            )
            full = torch.full(batch.input_ids.shape, float("nan"), device=device)
            full[:, keep + 1] = torch.where(batch.target_mask[:, keep], nll, float("nan"))
        for b, i in enumerate(idx):
            out[i] = full[b, : len(samples[i])].float().cpu().numpy()
    return out


def _mean(nll: np.ndarray, mask: Sequence[bool]) -> float:
    chosen = nll[np.asarray(mask, dtype=bool)]
    return float(np.mean(chosen, dtype=np.float64)) if chosen.size else math.nan


def _pairs(
    rows: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Mapping[str, Any]], list[Mapping[str, Any]]]:
    """Originals by source id, and the counterfactuals (each checked to have its original)."""
    originals = {str(r["source_id"]): r for r in rows if r["kind"] == ORIGINAL}
    cfs = [r for r in rows if r["kind"] == COUNTERFACTUAL]
    for r in cfs:
        if str(r["source_id"]) not in originals:
            raise ValueError(
                f"counterfactual {r['id']!r}: its source {r['source_id']!r} has no original row"
            )
    return originals, cfs


def loss_rises(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Counterfactual id -> the model's loss rise in nats per token (NaN when a loss is not
    finite, which fails every margin). Rows follow docs/data-schemas.md; a missing `train_from`
    is 0."""
    originals, cfs = _pairs(rows)
    sources = list(dict.fromkeys(str(r["source_id"]) for r in cfs))
    encode = [originals[s] for s in sources] + cfs
    # An original is trained from 0; its losses over a counterfactual's text are picked below.
    samples = [
        encode_sample(
            tokenizer,
            r["instruction"],
            r["response"],
            int(r.get("train_from", 0)),
            system=r.get("system"),
        )
        for r in encode
    ]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.eval()
    nlls = token_nlls(model, samples, pad, max_tokens)
    at = {s: i for i, s in enumerate(sources)}
    rises = {}
    for k, cf in enumerate(cfs, start=len(sources)):
        i = at[str(cf["source_id"])]
        same_text = replace(
            samples[i],
            train_from=compared_start(encode[i]["response"], cf["response"], samples[k].train_from),
        )
        rises[str(cf["id"])] = _mean(nlls[k], samples[k].loss_mask()) - _mean(
            nlls[i], same_text.loss_mask()
        )
    bad = [cid for cid, rise in rises.items() if not math.isfinite(rise)]
    if bad:
        log.warning(
            "validity: %d of %d counterfactuals have a non-finite loss and fail the check "
            "(e.g. %s)",
            len(bad),
            len(rises),
            ", ".join(bad[:3]),
        )
    return rises


def annotate(
    rows: Sequence[Mapping[str, Any]],
    teacher: Mapping[str, float] | None,
    student: Mapping[str, float] | None,
) -> list[dict[str, Any]]:
    """Every row with `teacher_rise` and `student_rise`: null for originals, where not measured,
    and where a loss was not finite (JSON has no NaN)."""

    def rise(table: Mapping[str, float] | None, row: Mapping[str, Any]) -> float | None:
        value = None if table is None or row["kind"] == ORIGINAL else table[str(row["id"])]
        return None if value is None or not math.isfinite(value) else value

    return [{**r, "teacher_rise": rise(teacher, r), "student_rise": rise(student, r)} for r in rows]


def select(rows: Sequence[Mapping[str, Any]], margin: float, student: bool) -> list[bool]:
    """Per annotated row, whether it is kept at this margin: originals always; a counterfactual
    when its teacher rise (and with `student` its student rise) is at most the margin. A null
    rise of a counterfactual (its loss was not finite) never passes."""
    names = ("teacher_rise", "student_rise") if student else ("teacher_rise",)
    return [
        r["kind"] == ORIGINAL or all(r[n] is not None and r[n] <= margin for n in names)
        for r in rows
    ]


def span_counts(
    cfs: Sequence[Mapping[str, Any]],
    planted: Mapping[str, Sequence[Sequence[int]]] | None,
) -> dict[str, int | None]:
    """Removed spans of these counterfactuals: all, in the instruction, and overlapping a planted
    distractor (None without planted labels)."""
    removed = [(str(r["source_id"]), s) for r in cfs for s in r["removed"]]
    instr = [(src, s) for src, s in removed if s["field"] == INSTRUCTION]
    hits = (
        None
        if planted is None
        else sum(overlaps(s["start"], s["end"], planted.get(src, ())) for src, s in instr)
    )
    return {"spans": len(removed), "instruction": len(instr), "planted": hits}


def kept_token_metrics(tokens: pd.DataFrame, cfs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Detection's token-level precision, recall and F1 against planted labels, counting as
    flagged only confounders that lie inside an instruction span some of `cfs` removes.

    Scored exactly as `detection.detection_metrics` scores detection (instruction tokens,
    whitespace left out), so the two are comparable: this is detection "after pruning".
    """
    from leafpipe.detect.confounders import DetectSpec, detection_metrics

    spans: dict[str, list[tuple[int, int]]] = {}
    for r in cfs:
        for s in r["removed"]:
            if s["field"] == INSTRUCTION:
                spans.setdefault(str(r["source_id"]), []).append((s["start"], s["end"]))

    def inside(row: Any) -> list[bool]:
        own = spans.get(str(row.id), [])
        return [
            bool(c) and f == INSTRUCTION and any(a <= lo and hi <= b for a, b in own)
            for c, f, lo, hi in zip(row.is_confounder, row.field, row.char_start, row.char_end)
        ]

    masked = tokens.assign(is_confounder=[inside(r) for r in tokens.itertuples(index=False)])
    m = detection_metrics(masked, DetectSpec())
    return {
        k: m[k] for k in ("precision", "recall", "f1", "base_rate", "n_tokens", "n_planted")
    } | {"n_flagged": m["n_confounders"]}


def mean_rises(
    cfs: Sequence[Mapping[str, Any]], planted: Mapping[str, Sequence[Sequence[int]]]
) -> dict[str, Any]:
    """The teacher's mean rise over instruction-span counterfactuals whose span overlaps a planted
    distractor and over the others (None where there is none): how far apart the margin must
    separate them."""
    groups: dict[str, list[float]] = {"planted": [], "other": []}
    for r in cfs:
        for s in r["removed"]:
            if s["field"] == INSTRUCTION and r["teacher_rise"] is not None:
                hit = overlaps(s["start"], s["end"], planted.get(str(r["source_id"]), ()))
                groups["planted" if hit else "other"].append(r["teacher_rise"])
    return {k: float(np.mean(v)) if v else None for k, v in groups.items()}


def _margin_key(margin: float) -> str:
    return f"{margin:g}"


def summarize(
    rows: Sequence[Mapping[str, Any]],
    kept: Sequence[bool],
    spec: ValiditySpec,
    level: str,
    corpus: Sequence[Mapping[str, Any]],
    tokens: pd.DataFrame,
) -> dict[str, Any]:
    """The validity summary (docs/data-schemas.md): counts, kept counts at `SWEEP_MARGINS`, and on
    a corpus with planted labels, planted spans among kept and dropped and detection precision
    counting only kept spans."""
    labelled = any(r.get("distractor_spans") is not None for r in corpus)
    planted = {str(r["id"]): r.get("distractor_spans") or [] for r in corpus} if labelled else None
    cfs = [(r, k) for r, k in zip(rows, kept) if r["kind"] == COUNTERFACTUAL]
    kept_cfs = [r for r, k in cfs if k]
    dropped_cfs = [r for r, k in cfs if not k]
    sweep = None
    if spec.check:
        sweep = {}
        for m in sorted({*SWEEP_MARGINS, float(spec.margin)}):
            at_m = [
                r
                for r, k in zip(rows, select(rows, m, spec.student))
                if k and r["kind"] == COUNTERFACTUAL
            ]
            sweep[_margin_key(m)] = {"kept": len(at_m), **span_counts(at_m, planted)}
    summary: dict[str, Any] = {
        "level": level,
        "check": spec.check,
        "margin": spec.margin,
        "student": spec.student,
        "originals": sum(r["kind"] == ORIGINAL for r in rows),
        "counterfactuals": len(cfs),
        "kept": len(kept_cfs),
        "dropped": len(dropped_cfs),
        "non_finite": sum(
            r["teacher_rise"] is None or (spec.student and r["student_rise"] is None)
            for r, _ in cfs
        )
        if spec.check
        else None,
        "kept_at_margin": sweep,
        "spans": {
            "kept": span_counts(kept_cfs, planted),
            "dropped": span_counts(dropped_cfs, planted),
        },
        "tokens": None,
        "mean_teacher_rise": None,
    }
    if labelled and spec.check:
        summary["mean_teacher_rise"] = mean_rises([r for r, _ in cfs], planted)
    if labelled:
        summary["tokens"] = {
            "all": kept_token_metrics(tokens, [r for r, _ in cfs]),
            "kept": kept_token_metrics(tokens, kept_cfs),
        }
    return summary
