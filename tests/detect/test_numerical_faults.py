"""Numerical faults are handled and counted, never propagated: a NaN or inf loss or gradient leaves
one sample unscored (its batch mates untouched), a scope with undefined min-max gets no
confounders, and a non-finite distillation step updates nothing."""

import csv
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from distill_groups import TWO_ITEM_STEPS, many_groups
from distill_runs import stage_inputs
from numerical import InfGradient
from safetensors.torch import load_file, save_file

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.detect.confounders import DetectSpec, detect
from leafpipe.detect.metrics import detection_metrics
from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.trainer import _Trainer, distill
from leafpipe.files.atomic import write_jsonl
from leafpipe.text.templates import encode_sample

# The third sample is the longest (row 0 of its batch) and the only one with an "@" token.
POISONED = (
    "Zoe @ has 6 eggs and a very long list of things to do in the garden and in the house today. "
    "She eats 2 eggs for breakfast with her brother and her two old friends. "
    "How many eggs are left?",
    "Step 1: Zoe starts with 6 eggs.\nStep 2: She eats 2, so 6 - 2 = 4.\nThe answer is 4.",
)


def _rows(samples):
    return [
        {"id": f"s{i}", "instruction": a, "response": b}
        for i, (a, b) in enumerate([*samples, POISONED])
    ]


def _only_in_poisoned(tokenizer, rows) -> int:
    ids = [set(encode_sample(tokenizer, r["instruction"], r["response"]).input_ids) for r in rows]
    unique = ids[-1] - set().union(*ids[:-1])
    assert tokenizer.convert_tokens_to_ids("@") in unique
    return tokenizer.convert_tokens_to_ids("@")


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_a_non_finite_sample_is_unscored_and_its_batch_mates_keep_their_scores(
    tokenizer, samples, tiny_llama, fault, caplog
):
    model = tiny_llama(0)
    rows = _rows(samples)
    spec = ScoreSpec(max_tokens=10**6)  # one batch: the poisoned sample's mates share it
    clean = score_samples(model, tokenizer, rows, spec)
    if fault == "loss":  # an inf weight only the poisoned sample reads
        with torch.no_grad():
            model.get_input_embeddings().weight[_only_in_poisoned(tokenizer, rows)] = math.inf
    else:  # finite loss, inf gradient from the last layer back
        model.model.norm.register_forward_hook(lambda module, args, out: InfGradient.apply(out))
    with caplog.at_level(logging.WARNING, logger="leafpipe"):
        faulty = score_samples(model, tokenizer, rows, spec)

    bad = faulty["sample_id"] == "s2"
    assert (
        faulty[bad]["grad_norm"].isna().all() and faulty[bad]["grad_norm_normalized"].isna().all()
    )
    assert np.isfinite(faulty[bad]["loss"]).all() == (fault == "gradient")
    for column in ("grad_norm", "grad_norm_normalized", "loss"):  # bit for bit
        np.testing.assert_array_equal(
            faulty[~bad][column].to_numpy(), clean[~bad][column].to_numpy()
        )
    assert np.isfinite(clean[bad & (clean["part"] == "instruction")]["grad_norm"]).all()
    reason = {"loss": "non-finite loss", "gradient": "non-finite gradient"}[fault]
    assert (
        "1 of 3 samples left unscored" in caplog.text
        and f"1 with a {reason} (e.g. s2)" in caplog.text
    )

    # Downstream, detection leaves both scopes of the unscored sample without confounders.
    teacher = score_samples(tiny_llama(1), tokenizer, rows, spec)
    tokens = detect(teacher, faulty, rows, DetectSpec(percentile=20))
    row = tokens.set_index("id").loc["s2"]
    assert not any(row["is_confounder"]) and json.loads(row["unscored"]) == {
        "instruction": "non_finite",
        "steps": "non_finite",
    }
    assert all(any(tokens.set_index("id").loc[s]["is_confounder"]) for s in ("s0", "s1"))
    metrics = detection_metrics(tokens, DetectSpec(percentile=20))
    assert metrics["unscored"]["instruction"] == {
        "non_finite": 1,
        "all_equal": 0,
        "equal_difference": 0,
    }


def _frame(samples: dict[str, list[tuple[str, int, float]]]) -> pd.DataFrame:
    """Scores in the scorer's long schema from (part, step, grad_norm) per token."""
    records = []
    for sample_id, tokens in samples.items():
        for pos, (part, step, value) in enumerate(tokens):
            records.append(
                {
                    "sample_id": sample_id,
                    "part": part,
                    "step": step,
                    "position": pos,
                    "token_id": pos,
                    "token": "abcdefghijkl"[pos],
                    "char_start": pos,
                    "char_end": pos + 1,
                    "grad_norm": value,
                }
            )
    return pd.DataFrame.from_records(records)


def _instruction(values):
    return [("instruction", -1, v) for v in values]


def _steps(values):  # two reasoning steps; the last is never scored
    return [("response", 0, v) for v in values] + [("response", 1, math.nan)] * 2


def test_scopes_with_no_finite_or_only_equal_scores_flag_nothing_and_are_counted(caplog):
    ramp, flat, nan = [0.0, 1.0, 2.0, 3.0, 4.0], [2.0] * 5, [math.nan] * 5
    teacher = {
        "ok": ramp[::-1],
        "nan": ramp[::-1],
        "inf": ramp[::-1],
        "flat": flat,
        "same": ramp,
        "one": ramp,
    }
    student = {
        "ok": ramp,
        "nan": nan,
        "inf": [math.inf] * 5,
        "flat": ramp,
        "same": ramp,
        "one": [math.nan] * 4 + [1.0],
    }
    t = _frame({k: _instruction(v) + _steps(v) for k, v in teacher.items()})
    s = _frame(
        {k: _instruction(v) + _steps(ramp if k == "ok" else flat) for k, v in student.items()}
    )
    corpus = [{"id": k, "instruction": "abcde", "response": "fghijkl"} for k in teacher]
    spec = DetectSpec(percentile=20)
    with caplog.at_level(logging.WARNING, logger="leafpipe"):
        tokens = detect(t, s, corpus, spec).set_index("id")
    assert (
        any(tokens.loc["ok"]["is_confounder"][:5])
        and json.loads(tokens.loc["ok"]["unscored"]) == {}
    )
    for sample in ("nan", "inf", "flat", "same", "one"):
        assert not any(tokens.loc[sample]["is_confounder"]), sample  # never every token
    assert json.loads(tokens.loc["inf"]["unscored"]) == {
        "instruction": "non_finite",
        "steps": "all_equal",
    }
    assert json.loads(tokens.loc["same"]["unscored"])["instruction"] == "equal_difference"
    metrics = detection_metrics(tokens.reset_index(), spec)
    assert metrics["unscored"] == {
        "instruction": {
            "non_finite": 3,
            "all_equal": 1,
            "equal_difference": 1,
        },  # nan, inf, one; flat; same
        "steps": {
            "non_finite": 0,
            "all_equal": 5,
            "equal_difference": 0,
        },  # every student step is flat but ok's
    }
    assert (
        "instruction: 3 non_finite, 1 all_equal, 1 equal_difference; steps: 5 all_equal"
        in caplog.text
    )


# --- distillation -----------------------------------------------------------------------------

# 4 groups, 2 per step: 2 steps per epoch, 4 epochs = 8 steps; checkpoints every 2 steps.
# draw_one: the step layout the tests below spell out (two steps an epoch, a group's original and
# counterfactual in one step); skipping a non-finite step works the same in both schemes.
SPEC = DistillSpec(
    **TWO_ITEM_STEPS, epochs=4, checkpoint_every=2, seed=3, counterfactuals="draw_one"
)
LOSS_SUM = _Trainer._loss_sum  # unpatched


class Killed(Exception):
    pass


class Poison:
    """Makes the loss (or only its gradient) of chosen optimiser steps non-finite."""

    def __init__(self, monkeypatch, steps, fault="loss", kill_at=None, start=1):
        self.steps, self.fault, self.kill_at, self.current = set(steps), fault, kill_at, start
        self.weights: dict[int, list[torch.Tensor]] = {}
        self.student = None

        def poisoned(trainer, samples):
            loss = LOSS_SUM(trainer, samples)
            if self.current not in self.steps:
                return loss
            return loss * math.nan if self.fault == "loss" else InfGradient.apply(loss.view(1))[0]

        monkeypatch.setattr(_Trainer, "_loss_sum", poisoned)

    def on_step(self, step, row):
        self.current = step + 1
        self.weights[step] = [p.detach().clone() for p in self.student.parameters()]
        if step == self.kill_at:
            raise Killed(step)


def _run(tiny_llama, tokenizer, samples, work, poison):
    poison.student = tiny_llama(1, attention_dropout=0.2)  # dropout: the RNG must stay in step
    return distill(
        tiny_llama(0),
        poison.student,
        tokenizer,
        many_groups(samples, 4),
        SPEC,
        1,
        work_dir=work,
        on_step=poison.on_step,
    )


def _metric_rows(work):
    with open(work / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(fh)]


def _equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_non_finite_step_updates_nothing_and_is_counted(
    tiny_llama, tokenizer, samples, tmp_path, monkeypatch, caplog
):
    finals = {}
    for fault in ("loss", "gradient"):
        poison = Poison(monkeypatch, steps={3}, fault=fault)
        with caplog.at_level(logging.WARNING, logger="leafpipe.distill.trainer"):
            finals[fault] = [
                p.detach().clone()
                for p in _run(tiny_llama, tokenizer, samples, tmp_path / fault, poison).parameters()
            ]
        assert _equal(poison.weights[3], poison.weights[2])  # step 3 changed nothing
        assert not _equal(poison.weights[4], poison.weights[3]) and not _equal(
            poison.weights[2], poison.weights[1]
        )
        assert all(torch.isfinite(p).all() for p in finals[fault])
        assert json.loads((tmp_path / fault / "training.json").read_text())["non_finite_steps"] == 1
        rows = _metric_rows(tmp_path / fault)
        assert [r["non_finite"] for r in rows if r["kind"] == "step"] == [
            "0",
            "0",
            "1",
            "0",
            "0",
            "0",
            "0",
            "0",
        ]
        epochs = [r for r in rows if r["kind"] == "epoch"]
        assert [r["non_finite"] for r in epochs] == ["0", "1", "0", "0"]
        # Epoch 2's totals are those of its one applied step (step 4).
        step4 = next(r for r in rows if r["step"] == "4")
        assert epochs[1]["tokens_orig"] == step4["tokens_orig"] and float(
            epochs[1]["loss"]
        ) == pytest.approx(float(step4["loss"]))
    assert "step 3/8 epoch 2: non-finite loss or gradient" in caplog.text
    assert "1 of 3 steps so far skipped" in caplog.text
    # A NaN loss and a finite loss with an inf gradient skip the same update.
    assert _equal(finals["loss"], finals["gradient"])
    clean = Poison(monkeypatch, steps=set())
    reference = [
        p.detach().clone()
        for p in _run(tiny_llama, tokenizer, samples, tmp_path / "clean", clean).parameters()
    ]
    assert _equal(clean.weights[2], poison.weights[2]) and not _equal(reference, finals["loss"])


def test_a_resumed_run_keeps_its_count_and_ends_bitwise(
    tiny_llama, tokenizer, samples, tmp_path, monkeypatch
):
    uninterrupted = Poison(monkeypatch, steps={3})
    reference = list(
        _run(tiny_llama, tokenizer, samples, tmp_path / "ref", uninterrupted).parameters()
    )
    work = tmp_path / "killed"
    with pytest.raises(Killed):  # killed after step 5; the state of step 4 holds the skipped step 3
        _run(tiny_llama, tokenizer, samples, work, Poison(monkeypatch, steps={3}, kill_at=5))
    model = _run(tiny_llama, tokenizer, samples, work, Poison(monkeypatch, steps={3}, start=5))
    training = json.loads((work / "training.json").read_text())
    assert training["resumed_at_steps"] == [4] and training["non_finite_steps"] == 1
    assert _equal(list(model.parameters()), reference)
    assert _metric_rows(work) == _metric_rows(tmp_path / "ref")


def test_a_run_with_most_steps_non_finite_stops_with_a_clear_error(
    tiny_llama, tokenizer, samples, tmp_path, monkeypatch
):
    poison = Poison(monkeypatch, steps={1, 2, 3})  # judged from step 4 on: 3 of 4 skipped
    with pytest.raises(
        RuntimeError, match=r"3 of the 4 optimiser steps so far had a non-finite .* has not trained"
    ):
        _run(tiny_llama, tokenizer, samples, tmp_path, poison)
    assert sorted(poison.weights) == [1, 2, 3]  # no failure before step 4
    assert not (tmp_path / "training.json").exists()


def test_two_processes_skip_the_same_steps_as_one(tiny_llama, tokenizer, samples, tmp_path):
    """A group whose token has an inf embedding in the student poisons the steps it is in, on one
    process only: both processes skip them, and end with the weights of one process."""
    # draw_one keeps g5's original and counterfactual in one step: one poisoned step per epoch.
    distill_settings = {
        "epochs": 2,
        "global_batch": 4,
        "micro_batch": 1,
        "lr": 0.003,
        "val_fraction": 0.0,
        "checkpoint_every": 100,
        "counterfactuals": "draw_one",
    }
    raw, args = stage_inputs(
        tiny_llama, tokenizer, samples, tmp_path, 12, distill_settings, dropout=0.0
    )
    rows = [json.loads(line) for line in args["data_path"].read_text().splitlines()]
    for r in rows:
        if r["source_id"] == "g5":
            r["instruction"] = "@ " + r["instruction"]
    write_jsonl(rows, args["data_path"])
    weights_path = args["student_dir"] / "model.safetensors"
    weights = load_file(weights_path)
    weights["model.embed_tokens.weight"][tokenizer.convert_tokens_to_ids("@")] = math.inf
    save_file(weights, weights_path, metadata={"format": "pt"})

    one, two = tmp_path / "one", tmp_path / "two"
    stages.distill(
        validate_config(raw), **args, out_dir=one, checkpoint_dir=tmp_path / "w1", threads=1
    )
    parallel = validate_config({**raw, "distill": {**distill_settings, "gpus": 2}})
    stages.distill(parallel, **args, out_dir=two, checkpoint_dir=tmp_path / "w2", threads=2)
    info = [json.loads((d / "training.json").read_text()) for d in (one, two)]
    assert info[1]["processes"] == 2
    assert (
        info[0]["non_finite_steps"] == info[1]["non_finite_steps"] == 2
    )  # g5's step, once per epoch
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=2e-6)
    assert all(torch.isfinite(t).all() for n, t in a.items() if n != "model.embed_tokens.weight")
