"""The counterfactual validity check: a pruned span is kept only if the teacher does not need it."""

from __future__ import annotations

import copy
import json
import math
import re

import pandas as pd
import pytest
import torch

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.files.atomic import read_jsonl, write_jsonl
from leafpipe.prune.validity import (
    ValiditySpec,
    compared_start,
    loss_rises,
    select,
    summarize,
)
from leafpipe.report.validity import validity_section
from leafpipe.text.templates import encode_sample

INSTRUCTION = (
    "Tom has 3 apples. Mia owns 9 red cars. Tom buys 4 more apples. "
    "How many apples does Tom have now?"
)
RESPONSE = (
    "Step 1: Tom starts with 3 apples.\nStep 2: He buys 4 more, so 3 + 4 = 7.\nThe answer is 7."
)
SUFFIX_AT = RESPONSE.index("Step 2")


def _original(source: str = "s0") -> dict:
    return {
        "id": source,
        "source_id": source,
        "kind": "original",
        "instruction": INSTRUCTION,
        "response": RESPONSE,
        "removed": [],
    }


def _instr_cf() -> dict:
    start = INSTRUCTION.index("Mia")
    end = INSTRUCTION.index("Tom buys")
    return {
        "id": "s0#cf1",
        "source_id": "s0",
        "kind": "counterfactual",
        "instruction": INSTRUCTION[:start] + INSTRUCTION[end:],
        "response": RESPONSE,
        "removed": [
            {"field": "instruction", "start": start, "end": end, "text": INSTRUCTION[start:end]}
        ],
    }


def _resp_cf() -> dict:
    """Step 1 with its number pruned as context, the later steps unchanged and trained."""
    head = "Step 1: Tom starts with apples.\n"
    start = RESPONSE.index("3")
    return {
        "id": "s0#cf2",
        "source_id": "s0",
        "kind": "counterfactual",
        "instruction": INSTRUCTION,
        "response": head + RESPONSE[SUFFIX_AT:],
        "train_from": len(head),
        "removed": [{"field": "response", "start": start, "end": start + 2, "text": "3 "}],
    }


def _hand_mean_nll(model, tokenizer, instruction, response, from_char):
    """Mean −log p over response tokens starting at `from_char` and the end-of-turn token,
    straight from one unbatched forward pass."""
    enc = encode_sample(tokenizer, instruction, response)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([enc.input_ids])).logits[0].float(), -1)
    last = max(i for i, f in enumerate(enc.fields) if f == "response")
    chosen = [
        t
        for t, (f, (lo, _)) in enumerate(zip(enc.fields, enc.offsets))
        if (f == "response" and lo >= from_char) or t == last + 1
    ]
    tokens = [enc.input_ids[t] for t in chosen if t != last + 1]
    return -sum(float(logp[t - 1, enc.input_ids[t]]) for t in chosen) / len(chosen), tokens


def test_instruction_rise_is_the_mean_nll_difference_over_the_whole_response(tokenizer, tiny_llama):
    model = tiny_llama(0)
    cf = _instr_cf()
    rise = loss_rises(model, tokenizer, [_original(), cf])["s0#cf1"]
    orig, orig_tokens = _hand_mean_nll(model, tokenizer, INSTRUCTION, RESPONSE, 0)
    pruned, cf_tokens = _hand_mean_nll(model, tokenizer, cf["instruction"], RESPONSE, 0)
    assert orig_tokens == cf_tokens  # the same response tokens in both
    assert rise == pytest.approx(pruned - orig, abs=1e-5)
    assert abs(rise) > 1e-4  # the pruned instruction changed the loss: not a trivial zero


def test_response_level_rise_compares_the_trained_suffix_only(tokenizer, tiny_llama):
    model = tiny_llama(0)
    cf = _resp_cf()
    rise = loss_rises(model, tokenizer, [_original(), cf])["s0#cf2"]
    orig, orig_tokens = _hand_mean_nll(model, tokenizer, INSTRUCTION, RESPONSE, SUFFIX_AT)
    pruned, cf_tokens = _hand_mean_nll(
        model, tokenizer, INSTRUCTION, cf["response"], cf["train_from"]
    )
    assert orig_tokens == cf_tokens and tokenizer.decode(cf_tokens) == RESPONSE[SUFFIX_AT:]
    assert rise == pytest.approx(pruned - orig, abs=1e-5)
    whole_orig, _ = _hand_mean_nll(model, tokenizer, INSTRUCTION, RESPONSE, 0)
    assert rise != pytest.approx(pruned - whole_orig, abs=1e-4)  # not the whole original response


def test_a_trained_text_that_is_not_the_original_suffix_is_an_error():
    assert compared_start(RESPONSE, "pruned\n" + RESPONSE[SUFFIX_AT:], len("pruned\n")) == SUFFIX_AT
    with pytest.raises(ValueError, match="not the end of its original"):
        compared_start(RESPONSE, "Step 1: Tom starts with apples.\n" + RESPONSE[SUFFIX_AT:], 0)


def test_rises_do_not_depend_on_batching_or_on_a_pad_token(tokenizer, tiny_llama):
    model = tiny_llama(0)
    rows = [_original(), _instr_cf(), _resp_cf()]
    batched = loss_rises(model, tokenizer, rows)
    one_by_one = loss_rises(model, tokenizer, rows, max_tokens=1)
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None
    padded_with_eos = loss_rises(model, no_pad, rows)
    for key, value in batched.items():
        assert one_by_one[key] == pytest.approx(value, abs=1e-5)
        assert padded_with_eos[key] == pytest.approx(value, abs=1e-5)


def _annotated(teacher: list[float | None], student: list[float | None]) -> list[dict]:
    rows = [{**_original(), "teacher_rise": None, "student_rise": None}]
    for k, (t, s) in enumerate(zip(teacher, student), start=1):
        rows.append({**_instr_cf(), "id": f"s0#cf{k}", "teacher_rise": t, "student_rise": s})
    return rows


def test_the_margin_filters_counterfactuals_and_never_originals():
    rows = _annotated([0.05, 0.2, None, -1.0, 0.1], [None] * 5)
    assert select(rows, 0.1, student=False) == [True, True, False, False, True, True]
    assert select(rows, 0.0, student=False) == [True, False, False, False, True, False]
    assert select(rows, -math.inf, student=False) == [True] + [False] * 5


def test_with_student_both_rises_must_pass():
    rows = _annotated([0.05, 0.05, 0.3, 0.05], [0.05, 0.3, 0.05, None])
    assert select(rows, 0.1, student=False) == [True, True, True, False, True]
    assert select(rows, 0.1, student=True) == [True, True, False, False, False]


def _tokens(
    sample_id: str, instruction: str, planted: list[int], flagged: set[str]
) -> pd.DataFrame:
    """detection/tokens.parquet by hand: one token per word and per run of whitespace."""
    pieces = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+|\s+", instruction)]
    return pd.DataFrame(
        [
            {
                "id": sample_id,
                "field": ["instruction"] * len(pieces),
                "step": [-1] * len(pieces),
                "char_start": [a for a, _, _ in pieces],
                "char_end": [b for _, b, _ in pieces],
                "text": [t for _, _, t in pieces],
                "is_confounder": [t in flagged for _, _, t in pieces],
                "is_planted": [a < planted[1] and b > planted[0] for a, b, _ in pieces],
                "teacher_norm": [0.5] * len(pieces),
                "student_norm": [0.5] * len(pieces),
                "diff": [0.5] * len(pieces),
                "spans": "[]",
                "unscored": "{}",
            }
        ]
    )


def _labelled_world():
    """One planted sentence, "Eva sees 3 boats.", and the problem's own "8"; detection flagged
    "Eva", "3" and "8". Counterfactuals: cf1 prunes "Eva" (kept), cf2 prunes "3 boats"
    (dropped), cf3 prunes "8" (kept)."""
    instruction = "Eva sees 3 boats. Omar has 8 coins. How many coins does Omar have?"
    planted = [0, 17]
    corpus = [
        {
            "id": "w0",
            "instruction": instruction,
            "response": "The answer is 8.",
            "distractor_spans": [planted],
        }
    ]
    tokens = _tokens("w0", instruction, planted, {"Eva", "3", "8"})

    def cf(k, word, rise):
        start = instruction.index(word)
        return {
            "id": f"w0#cf{k}",
            "source_id": "w0",
            "kind": "counterfactual",
            "instruction": instruction,
            "response": "The answer is 8.",
            "teacher_rise": rise,
            "student_rise": None,
            "removed": [
                {"field": "instruction", "start": start, "end": start + len(word), "text": word}
            ],
        }

    rows = [
        {
            "id": "w0",
            "source_id": "w0",
            "kind": "original",
            "instruction": instruction,
            "response": "The answer is 8.",
            "removed": [],
            "teacher_rise": None,
            "student_rise": None,
        },
        cf(1, "Eva", 0.02),
        cf(2, "3 boats", 0.5),
        cf(3, "8", 0.05),
    ]
    return corpus, tokens, rows


def test_summary_counts_planted_spans_and_kept_span_precision_by_hand(tmp_path):
    corpus, tokens, rows = _labelled_world()
    spec = ValiditySpec(margin=0.1)
    summary = summarize(
        rows, select(rows, spec.margin, spec.student), spec, "instr", corpus, tokens
    )
    assert (summary["counterfactuals"], summary["kept"], summary["dropped"]) == (3, 2, 1)
    assert summary["spans"]["kept"] == {"spans": 2, "instruction": 2, "planted": 1}
    assert summary["spans"]["dropped"] == {"spans": 1, "instruction": 1, "planted": 1}
    # Non-whitespace instruction tokens: 14, of which 4 planted ("Eva", "sees", "3", "boats.").
    kept = summary["tokens"]["kept"]  # flagged and kept: "Eva" (planted), "8" (own number)
    assert kept["precision"] == pytest.approx(1 / 2) and kept["recall"] == pytest.approx(1 / 4)
    assert kept["f1"] == pytest.approx(2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4))
    assert kept["n_flagged"] == 2 and kept["base_rate"] == pytest.approx(4 / 14)
    every = summary["tokens"]["all"]  # before the check: "Eva", "3", "8"
    assert every["precision"] == pytest.approx(2 / 3) and every["recall"] == pytest.approx(2 / 4)
    sweep = summary["kept_at_margin"]
    assert list(sweep) == ["0", "0.05", "0.1", "0.25", "0.5", "1", "2", "inf"]
    assert [sweep[m]["kept"] for m in sweep] == [0, 2, 2, 2, 3, 3, 3, 3]
    assert sweep["0.05"]["planted"] == 1 and sweep["inf"]["planted"] == 2
    assert summary["mean_teacher_rise"] == {
        "planted": pytest.approx(0.26),
        "other": pytest.approx(0.05),
    }
    (tmp_path / "instr.validity.json").write_text(json.dumps(summary))
    section = validity_section([tmp_path / "instr.validity.json"])
    assert "| instr | on | 0.1 | 3 | 2 | 1 | 1 (50.0%) | 1 (100.0%) |" in section
    assert (
        "| instr | 0 (0 planted) | 2 (1 planted) | 2 (1 planted) | 2 (1 planted) | 3 (2 planted) |"
        in section
    )
    assert "| instr | kept by the check | 50.0% | 25.0% | 33.3% | 2 | 28.6% |" in section


def test_summary_without_planted_labels_has_no_planted_counts():
    corpus, tokens, rows = _labelled_world()
    corpus = [{k: v for k, v in corpus[0].items() if k != "distractor_spans"}]
    summary = summarize(
        rows, [True] * len(rows), ValiditySpec(check=False), "instr", corpus, tokens
    )
    assert summary["tokens"] is None and summary["spans"]["kept"]["planted"] is None
    assert summary["kept_at_margin"] is None and summary["kept"] == 3


def _files(tmp_path) -> None:
    """The stage's inputs: the corpus ("Mia owns 9 red cars." planted), the instr_resp
    counterfactual file and detection's tokens ("Mia" and "9" flagged)."""
    planted = [INSTRUCTION.index("Mia"), INSTRUCTION.index("Tom buys") - 1]
    write_jsonl(
        [
            {
                "id": "s0",
                "instruction": INSTRUCTION,
                "response": RESPONSE,
                "distractor_spans": [planted],
            }
        ],
        tmp_path / "corpus.jsonl",
    )
    write_jsonl([_original(), _instr_cf(), _resp_cf()], tmp_path / "instr_resp.jsonl")
    _tokens("s0", INSTRUCTION, planted, {"Mia", "9"}).to_parquet(
        tmp_path / "tokens.parquet", index=False
    )


def _run(tmp_path, validity, teacher="teacher", student="student"):
    corpus, data, tokens = (
        tmp_path / "corpus.jsonl",
        tmp_path / "instr_resp.jsonl",
        tmp_path / "tokens.parquet",
    )
    config = validate_config({"models": {"teacher": {}, "student": {}}, "validity": validity})
    out, summary = tmp_path / "valid.jsonl", tmp_path / "validity.json"
    stages.validate_counterfactuals(
        config,
        tmp_path / teacher,
        tmp_path / student,
        data,
        out,
        summary,
        corpus,
        tokens,
        "instr_resp",
    )
    return read_jsonl(out), json.loads(summary.read_text())


def test_stage_keeps_originals_and_the_counterfactuals_within_the_margin(
    tokenizer, tiny_llama, tmp_path
):
    from leafpipe.models.pretrain import save_model

    save_model(tiny_llama(0), tokenizer, tmp_path / "teacher")
    save_model(tiny_llama(1), tokenizer, tmp_path / "student")
    _files(tmp_path)
    every, summary = _run(tmp_path, {"margin": 1e9, "student": True})
    assert [r["id"] for r in every] == ["s0", "s0#cf1", "s0#cf2"] and summary["kept"] == 2
    assert summary["spans"]["kept"] == {"spans": 2, "instruction": 1, "planted": 1}
    assert summary["tokens"]["kept"]["precision"] == pytest.approx(
        1.0
    )  # "Mia" and "9", both planted
    assert every[0]["teacher_rise"] is None and every[0]["student_rise"] is None
    rises = {r["id"]: r["teacher_rise"] for r in every[1:]}
    assert (
        all(r["student_rise"] is not None for r in every[1:]) and rises["s0#cf1"] != rises["s0#cf2"]
    )
    between = (rises["s0#cf1"] + rises["s0#cf2"]) / 2
    kept, summary = _run(tmp_path, {"margin": between})
    assert [r["id"] for r in kept] == ["s0", min(rises, key=rises.get)]
    assert summary["dropped"] == 1 and summary["check"] is True and summary["level"] == "instr_resp"
    assert kept[-1]["student_rise"] is None  # the student was not asked
    none, _ = _run(tmp_path, {"margin": -1e9})
    assert [r["id"] for r in none] == ["s0"]


def test_check_off_keeps_every_row_and_loads_no_model(tmp_path):
    _files(tmp_path)
    rows, summary = _run(
        tmp_path, {"check": False}, teacher="no-such-teacher", student="no-such-student"
    )
    assert [r["id"] for r in rows] == ["s0", "s0#cf1", "s0#cf2"]
    assert all(r["teacher_rise"] is None for r in rows)
    assert summary["check"] is False and summary["kept"] == 2 and summary["dropped"] == 0
    assert summary["kept_at_margin"] is None and summary["mean_teacher_rise"] is None
    section = validity_section([tmp_path / "validity.json"])
    assert "| instr_resp | off | 0.1 | 2 | 2 | 0 | 1 (100.0%) | — |" in section
