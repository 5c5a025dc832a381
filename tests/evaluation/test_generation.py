import dataclasses
import logging

import pytest
import torch

from leafpipe.evaluation.generation import end_of_turn_ids, generate
from leafpipe.evaluation.sampling import SamplingSpec
from leafpipe.text.templates import encode_prompt

INSTRUCTIONS = [
    "Hi",
    "Tom has 3 apples. Mia owns 9 red cars. Tom buys 4 more apples. How many apples now?",
    "What is 2 + 3?",
    "A box holds 12 pens. Sam gives away 5 pens. The sky was blue on day 8. How many are left?",
    "x",
    "Tom has 3 apples",
    "How many pens?",
]
MAX_NEW = 12


@pytest.fixture
def rows():
    return [{"id": f"r{i}", "instruction": t, "answer": str(i)} for i, t in enumerate(INSTRUCTIONS)]


def _eos_prone(model, eos_id: int):
    """Scale the output layer's eos row so that, for seed 0, some prompts stop and some don't."""
    with torch.no_grad():
        model.lm_head.weight[eos_id] *= 3.0
    return model


def _greedy_by_hand(model, prompt: list[int], eos_id: int) -> list[int]:
    """Reference decoding without `generate`, padding or cache: argmax of a full forward pass."""
    ids, new = list(prompt), []
    with torch.no_grad():
        for _ in range(MAX_NEW):
            token = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            new.append(token)
            ids.append(token)
            if token == eos_id:
                break
    return new


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_batched_equals_one_at_a_time(request, family, tokenizer, rows):
    model = _eos_prone(request.getfixturevalue(family)(0), tokenizer.eos_token_id)
    batched = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=3)
    single = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=1)
    assert batched == single


def test_order_fields_and_finish_reason(tiny_llama, tokenizer, rows):
    model = _eos_prone(tiny_llama(0), tokenizer.eos_token_id)
    side = tokenizer.padding_side
    out = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=4, threads=1)
    assert tokenizer.padding_side == side
    assert [o["id"] for o in out] == [r["id"] for r in rows]
    assert {o["finish_reason"] for o in out} == {"stop", "length"}, "test needs both kinds of rows"
    for row, o in zip(rows, out):
        prompt = encode_prompt(tokenizer, row["instruction"])
        expected = _greedy_by_hand(model, prompt, tokenizer.eos_token_id)
        assert o["prompt"] == row["instruction"]
        assert o["reference"] == row["answer"]
        assert o["prompt_tokens"] == len(prompt)
        assert o["completion_tokens"] == len(expected)
        assert o["completion"] == tokenizer.decode(expected, skip_special_tokens=True)
        stopped = expected[-1] == tokenizer.eos_token_id
        assert o["finish_reason"] == ("stop" if stopped else "length")
        if not stopped:
            assert o["completion_tokens"] == MAX_NEW
        assert "<|im_end|>" not in o["completion"]


def test_threads_are_restored(tiny_llama, tokenizer, rows):
    before = torch.get_num_threads()
    generate(tiny_llama(0), tokenizer, rows[:1], max_new_tokens=2, batch_size=1, threads=1)
    assert torch.get_num_threads() == before


def test_a_tokenizer_without_a_pad_token_pads_with_its_eos(tiny_llama, tokenizer, rows):
    """Padding is masked out, so which token pads does not change a completion."""
    model = tiny_llama(0)
    options = {"max_new_tokens": 1, "batch_size": 3}
    padded = generate(model, tokenizer, rows[:3], **options)
    pad, tokenizer.pad_token = tokenizer.pad_token, None  # the tokenizer is shared: restored
    try:
        assert tokenizer.pad_token_id is None
        assert generate(model, tokenizer, rows[:3], **options) == padded
    finally:
        tokenizer.pad_token = pad


def test_batches_run_longest_prompts_first(tiny_llama, tokenizer, rows, monkeypatch):
    """In batches of two, each batch is as wide as its first prompt: the 1st, 3rd, 5th and 7th
    longest."""
    model = tiny_llama(0)
    batches = _Batches(monkeypatch, model)
    generate(model, tokenizer, rows, max_new_tokens=1, batch_size=2)
    lengths = sorted((len(encode_prompt(tokenizer, r["instruction"])) for r in rows), reverse=True)
    assert batches.widths == lengths[::2]


def test_sampling_gives_n_records_per_row_reproducibly(tiny_llama, tokenizer, rows):
    model = tiny_llama(0)
    spec = SamplingSpec(n=3, temperature=1.0, seed=1)
    a = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=3, sampling=spec)
    b = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=3, sampling=spec)
    other = generate(
        model,
        tokenizer,
        rows,
        max_new_tokens=MAX_NEW,
        batch_size=3,
        sampling=SamplingSpec(n=3, temperature=1.0, seed=2),
    )
    assert a == b and a != other
    assert [(o["id"], o["sample"]) for o in a] == [(r["id"], s) for r in rows for s in range(3)]
    # A random-init model samples different completions for the same prompt.
    assert any(len({o["completion"] for o in a if o["id"] == r["id"]}) > 1 for r in rows)


def test_sampling_settings_are_checked():
    with pytest.raises(ValueError, match="need sampling"):
        SamplingSpec(n=2, temperature=0.0)


def test_stop_strings_cut_the_completion(tiny_llama, tokenizer, rows):
    model = tiny_llama(0)
    greedy = generate(model, tokenizer, rows, max_new_tokens=MAX_NEW, batch_size=2)
    long = next(o for o in greedy if len(o["completion"]) >= 6)
    stop = long["completion"][3:6]
    cut = generate(
        model,
        tokenizer,
        rows,
        max_new_tokens=MAX_NEW,
        batch_size=2,
        sampling=SamplingSpec(stop=(stop,)),
    )
    for g, c in zip(greedy, cut):
        if stop in g["completion"]:
            assert c["completion"] == g["completion"][: g["completion"].index(stop)]
            assert c["finish_reason"] == "stop" and c["completion_tokens"] <= g["completion_tokens"]
        else:
            assert c == g
    assert any(stop in g["completion"] for g in greedy)


class _Killed(Exception):
    pass


SAMPLED = SamplingSpec(n=2, temperature=1.0, seed=3)
BATCHES = 4  # the 7 rows in batches of 2
RESUME_NEW = 4  # new tokens: enough to tell sampled completions apart, few to keep the tests cheap


class _Batches:
    """Counts the batches generated (calls of the model's `generate`): a resume must be told
    from a redo by its work, since both write the same output. The `die_at`-th call raises
    `_Killed`, as a kill would stop the job there."""

    def __init__(self, monkeypatch, model, die_at: int | None = None):
        self.count, self.die_at, real = 0, die_at, model.generate
        self.widths: list[int] = []  # each batch's padded prompt length

        def counted(*args, **kwargs):
            self.count += 1
            self.widths.append(kwargs["input_ids"].shape[1])
            if self.count == self.die_at:
                raise _Killed
            return real(*args, **kwargs)

        monkeypatch.setattr(model, "generate", counted)


def _sampled(model, tokenizer, rows, max_new_tokens=RESUME_NEW, sampling=SAMPLED, **options):
    return generate(
        model,
        tokenizer,
        rows,
        max_new_tokens=max_new_tokens,
        batch_size=2,
        sampling=sampling,
        **options,
    )


@pytest.fixture
def killed(tiny_llama, tokenizer, rows, tmp_path, monkeypatch):
    """A sampled generation killed in its third batch of four: its partial file (in folders
    made for it) holds two batches and a line torn by the kill. Returns the model, the file and
    the batch counter (reset)."""
    model = tiny_llama(0)
    partial = tmp_path / "work" / "gen" / "gen.partial.jsonl"
    batches = _Batches(monkeypatch, model, die_at=3)
    with pytest.raises(_Killed):
        _sampled(model, tokenizer, rows, partial_path=partial)
    with open(partial, "a", encoding="utf-8") as fh:
        fh.write('{"batch": 2, "recor')
    batches.count, batches.die_at = 0, None
    return model, partial, batches


def test_killed_generation_resumes_from_its_partial_file(killed, tokenizer, rows, caplog, capsys):
    """The resume generates the two batches left, not four, and writes what an uninterrupted
    run writes; its progress bar starts at the 4 of 7 prompts done."""
    model, partial, batches = killed
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="leafpipe.evaluation.generation"):
        resumed = _sampled(model, tokenizer, rows, partial_path=partial)
    assert batches.count == BATCHES - 2
    assert "2 of 4 batches done" in caplog.text
    bar = capsys.readouterr().err
    assert "generate:  57%|" in bar and " 4/7 [" in bar and "prompt/s]" in bar
    assert resumed == _sampled(model, tokenizer, rows)


def _changed_prompt(rows):
    """Rows with the longest prompt changed: one of the first batch, which the killed run
    finished."""
    changed = [dict(row) for row in rows]
    changed[3]["instruction"] = changed[3]["instruction"].replace("12 pens", "13 pens")
    return changed


@pytest.mark.parametrize(
    ("change", "part"),
    [
        ("weights", "weights"),  # a retrained model: same architecture, one tensor changed
        ("prompts", "prompts"),
        ("max_new_tokens", "settings"),
        ("seed", "settings"),
    ],
)
def test_partial_file_of_other_weights_prompts_or_settings_is_not_resumed(
    killed, tokenizer, rows, change, part, caplog
):
    """Every batch is generated afresh, and the warning names what changed."""
    model, partial, batches = killed
    options = {}
    if change == "weights":
        with torch.no_grad():
            model.model.norm.weight.mul_(1.5)
    elif change == "prompts":
        rows = _changed_prompt(rows)
    elif change == "max_new_tokens":
        options["max_new_tokens"] = RESUME_NEW - 1
    else:
        options["sampling"] = dataclasses.replace(SAMPLED, seed=SAMPLED.seed + 1)
    with caplog.at_level(logging.INFO, logger="leafpipe.evaluation.generation"):
        _sampled(model, tokenizer, rows, partial_path=partial, **options)
    assert batches.count == BATCHES
    assert f"was written with other {part}; generating afresh" in caplog.text
    assert "resuming" not in caplog.text


def test_generation_stops_at_an_eos_the_generation_config_adds(tiny_llama, tokenizer, rows):
    """A model whose generation_config names another end-of-turn token than the tokenizer's
    (as Qwen2.5 chat models do) stops there too: at its first token, made an eos here."""
    model = tiny_llama(0)
    first = generate(model, tokenizer, rows[:3], max_new_tokens=MAX_NEW, batch_size=3)
    assert all(o["finish_reason"] == "length" for o in first), "the test needs long completions"
    prompt = encode_prompt(tokenizer, rows[0]["instruction"])
    token = _greedy_by_hand(model, prompt, tokenizer.eos_token_id)[0]
    assert token != tokenizer.eos_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, token]
    assert end_of_turn_ids(tokenizer, model.generation_config) == (tokenizer.eos_token_id, token)
    out = generate(model, tokenizer, rows[:1], max_new_tokens=MAX_NEW, batch_size=1)[0]
    assert (out["finish_reason"], out["completion_tokens"]) == ("stop", 1)
