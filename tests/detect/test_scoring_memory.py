"""Scoring within memory: out-of-memory recovery that frees the failed attempt and remembers the
budget that worked, a starting budget from the model's size and the free memory, and the response
scopes' backward passes batched with results equal to one pass per scope."""

import importlib.util
import math
import re
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from numerical import InfGradient
from scoring_reference import LONG, reference_scores, scoring_rows

import leafpipe.detect.input_gradients as input_gradients
import leafpipe.detect.scoring as scoring
from leafpipe.detect.scoring import (
    ScoreSpec,
    score_samples,
    token_budget,
    token_budget_batches,
)
from leafpipe.execution import memory
from leafpipe.text.templates import RESPONSE, encode_sample

BENCH = Path(__file__).resolve().parents[2] / "bench" / "score_steps.py"

# Five reasoning steps (lines): response scopes "steps" gives five scopes, the instruction's and
# those of steps 0 to 3 (the last step is never scored).
FIVE_STEPS = (
    "Mia has 9 red cars. She sells 2 and buys 5. How many cars does Mia have?",
    "Step 1: Mia has 9.\nStep 2: She sells 2.\nStep 3: 9 - 2 = 7.\nStep 4: She buys 5.\n"
    "Step 5: 7 + 5 = 12 @ so the answer is 12.",
)  # "@": in no other sample


class SmallMemory:
    """Stands in for `embedding_grad_norms` on a device that holds at most `limit` tokens: a larger
    batch allocates its "activations" and raises `torch.OutOfMemoryError` while they are live.
    Records every attempt: its samples and longest length, and whether any earlier failed
    attempt's activations were still alive when it started."""

    def __init__(self, monkeypatch, limit: int):
        self.limit, self.real = limit, scoring.embedding_grad_norms
        self.attempts: list[dict] = []
        self.failed: list[weakref.ref] = []
        monkeypatch.setattr(scoring, "embedding_grad_norms", self)

    def __call__(self, model, items, pad_id, spec):
        width = max(len(it.enc) for it in items)
        ok = len(items) * width <= self.limit
        self.attempts.append(
            {
                "samples": len(items),
                "width": width,
                "ok": ok,
                "failed_alive": sum(ref() is not None for ref in self.failed),
            }
        )
        if not ok:
            activations = torch.empty(1 << 18)  # the failed attempt's tensors, held by this frame
            self.failed.append(weakref.ref(activations))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.real(model, items, pad_id, spec)


def _many_rows(samples):
    """Eight rows of different lengths: the samples, LONG, and shortened copies."""
    pairs = [*samples, LONG] + [
        (a[: 40 + 9 * i], b) for i, (a, b) in enumerate([*samples, LONG] * 2)
    ][:5]
    return scoring_rows(pairs)


def test_out_of_memory_frees_the_failed_attempt_before_retrying_and_remembers_the_budget(
    tokenizer, samples, tiny_llama, monkeypatch, caplog
):
    model = tiny_llama(0)
    rows = _many_rows(samples)
    lengths = [len(encode_sample(tokenizer, r["instruction"], r["response"])) for r in rows]
    reference = score_samples(model, tokenizer, rows, ScoreSpec(max_batch=1))
    small = SmallMemory(monkeypatch, limit=2 * max(lengths))  # two of the longest fit
    with caplog.at_level("WARNING", logger="leafpipe"):
        frame = score_samples(model, tokenizer, rows, ScoreSpec(max_tokens=10**6))

    # Each retry starts only after every failed attempt's tensors are gone.
    assert [a["failed_alive"] for a in small.attempts] == [0] * len(small.attempts)
    assert len(small.failed) >= 2 and all(ref() is None for ref in small.failed)
    # Every failure comes first: once a budget worked, later batches are planned within it.
    n_failed = len(small.failed)
    assert [a["ok"] for a in small.attempts] == [False] * n_failed + [True] * (
        len(small.attempts) - n_failed
    )
    last = small.attempts[n_failed - 1]
    budget = last["samples"] // 2 * last["width"]
    assert all(a["samples"] * a["width"] <= budget for a in small.attempts[n_failed:])
    assert len(small.attempts) - n_failed == len(token_budget_batches(lengths, budget, 64))
    assert f"token budget now {budget}" in caplog.text
    # And the scores are those of a run that never ran out of memory.
    for column in ("grad_norm", "grad_x_input", "loss"):
        np.testing.assert_allclose(frame[column], reference[column], rtol=1e-5, atol=1e-7)
    assert frame["grad_norm"].isna().tolist() == reference["grad_norm"].isna().tolist()


def test_a_single_sample_that_does_not_fit_raises(tokenizer, samples, tiny_llama, monkeypatch):
    SmallMemory(monkeypatch, limit=8)
    with pytest.raises(torch.OutOfMemoryError):
        score_samples(tiny_llama(0), tokenizer, scoring_rows(samples), ScoreSpec(max_batch=1))


def _on_cuda(model):
    """A stand-in for `model` whose parameters say they live on a GPU (for the budget only)."""
    param = SimpleNamespace(device=torch.device("cuda", 0), element_size=lambda: 2)
    return SimpleNamespace(config=model.config, parameters=lambda: iter([param]))


def test_the_gpu_budget_follows_the_free_memory_and_the_models_size(tiny_llama, monkeypatch):
    free = {"bytes": 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 * 2**30))
    small, large = (
        _on_cuda(tiny_llama(0)),
        _on_cuda(tiny_llama(0, hidden_size=64, intermediate_size=256)),
    )
    budget = token_budget(ScoreSpec(), small)
    assert budget == memory.token_budget(memory.model_shape(small.config), 2**30, 2, backward=True)
    assert token_budget(ScoreSpec(), large) < budget, (
        "a larger model's activations take more per token"
    )
    assert token_budget(ScoreSpec(), small, backward=False) > budget, (
        "no backward pass: more tokens fit"
    )
    free["bytes"] = 2**31
    assert token_budget(ScoreSpec(), small) > budget
    assert token_budget(ScoreSpec(max_tokens=300), small) == 300, "a set budget wins"
    assert token_budget(ScoreSpec(), tiny_llama(0)) == scoring.CPU_TOKEN_BUDGET


# --- response scopes: batched backward passes ----------------------------------------------


@pytest.fixture(params=[2, input_gradients.SCOPES_PER_BACKWARD], ids=lambda n: f"{n}_per_backward")
def per_backward(request, monkeypatch):
    """Groups of 2 (five scopes: two batched passes and a plain one) and the default (one pass)."""
    monkeypatch.setattr(input_gradients, "SCOPES_PER_BACKWARD", request.param)
    return request.param


def test_batched_scopes_equal_one_backward_pass_per_step(
    tokenizer, samples, tiny_llama, per_backward
):
    model = tiny_llama(0)
    rows = scoring_rows(
        [FIVE_STEPS, *samples]
    )  # batch mates with three steps: some scopes are theirs alone
    frame = score_samples(
        model, tokenizer, rows, ScoreSpec(max_tokens=10**6, response_scopes="steps")
    )
    for row in rows:
        scored = frame[frame["sample_id"] == row["id"]]
        response = scored[scored["part"] == RESPONSE]
        last = response["step"].max()
        assert response[response["step"] == last]["grad_norm"].isna().all()
        for k in range(last):
            norms, products, _, _ = reference_scores(model, tokenizer, row, later_than=k)
            step = response[response["step"] == k]
            positions = step["position"].tolist()
            torch.testing.assert_close(
                torch.tensor(step["grad_norm"].to_numpy()), norms[positions], rtol=1e-4, atol=1e-7
            )
            torch.testing.assert_close(
                torch.tensor(step["grad_x_input"].to_numpy()),
                products[positions],
                rtol=1e-4,
                atol=1e-8,
            )
    assert frame[frame["sample_id"] == "s0"]["step"].max() == 4


@pytest.mark.parametrize("fault", ["loss", "gradient"])
def test_a_non_finite_sample_in_batched_scopes_leaves_its_batch_mates_bit_for_bit(
    tokenizer, samples, tiny_llama, per_backward, fault
):
    model = tiny_llama(0)
    rows = scoring_rows([FIVE_STEPS, *samples])  # the five-step sample is the longest: batch row 0
    spec = ScoreSpec(max_tokens=10**6, response_scopes="steps")
    clean = score_samples(model, tokenizer, rows, spec)
    if fault == "loss":  # an inf weight at a token of the last step of row 0 only
        token = tokenizer.convert_tokens_to_ids("@")
        assert token in encode_sample(tokenizer, *FIVE_STEPS).input_ids
        assert all(token not in encode_sample(tokenizer, a, b).input_ids for a, b in samples)
        with torch.no_grad():
            model.get_input_embeddings().weight[token] = math.inf
    else:  # finite losses, an inf gradient in row 0 from the last layer back
        model.model.norm.register_forward_hook(lambda module, args, out: InfGradient.apply(out))
    faulty = score_samples(model, tokenizer, rows, spec)
    bad = faulty["sample_id"] == "s0"
    assert faulty[bad]["grad_norm"].isna().all() and faulty[bad]["grad_x_input"].isna().all()
    assert np.isfinite(faulty[bad]["loss"]).all() == (fault == "gradient")
    for column in ("grad_norm", "grad_x_input", "loss"):
        np.testing.assert_array_equal(
            faulty[~bad][column].to_numpy(), clean[~bad][column].to_numpy()
        )
    assert clean[~bad]["grad_norm"].notna().any()


# --- bench/score_steps.py, at toy sizes ---------------------------------------------------

TOY = [
    "--shape",
    "world-teacher",
    "--samples",
    "3",
    "--steps",
    "3",
    "--vocab",
    "300",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def bench():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TQDM_DISABLE", "1")  # the script sets it for itself; keep it out of other tests
        spec = importlib.util.spec_from_file_location("bench_score_steps", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


def test_the_steps_benchmark_checks_equal_scores_and_ends_with_the_ratio(bench, capsys):
    ours, per_backward = scoring.embedding_grad_norms, input_gradients.SCOPES_PER_BACKWARD
    ratio = bench.main(TOY)
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"batched / per-step: \d+\.\d\dx", lines[-1])
    assert lines[-1] == f"batched / per-step: {ratio:.2f}x"
    assert (
        float(re.search(r"largest score \(grad_norm, grad_x_input\): (\S+)", lines[-2]).group(1))
        <= 1e-4
    )
    assert (scoring.embedding_grad_norms, input_gradients.SCOPES_PER_BACKWARD) == (
        ours,
        per_backward,
    ), "restored"


def test_the_steps_benchmark_stops_on_unequal_scores(bench, monkeypatch, capsys):
    real = bench.per_step_grad_norms
    monkeypatch.setattr(
        bench, "per_step_grad_norms", lambda *a: (real(*a)[0] * 1.01, *real(*a)[1:])
    )
    with pytest.raises(SystemExit, match="UNEQUAL RESULTS"):
        bench.main(TOY)
    assert "per-step:" not in capsys.readouterr().out
