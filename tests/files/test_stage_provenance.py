"""Every stage that writes Parquet, JSON or JSON Lines records exactly the files its rule gives
it, and every stage that reads such a file refuses it once one of those files has changed. (The
report's outputs are left out: the report is the last rule, and nothing reads them.)

One module-scoped chain of tiny outputs (corpus, score, gather_scores, detect, counterfactuals,
validate_counterfactuals without its check) serves the whole table: a row names a writer's
output, the rule's inputs (checked against its `input:` block in workflow/rules) with the paths
the chain gave for each, and the stages that read the output. A reader may refuse an earlier
file it reads that was made from the same changed input, or the changed input itself when it is
a JSON Lines output its record no longer describes: any refusal that names it will do.
The evaluation stages, which need no chain, have a test of their own at the end.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_models import save_tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from leafpipe import stages
from leafpipe.config import validate_config
from leafpipe.data.accounting import corpus_accounting
from leafpipe.files.atomic import write_jsonl
from leafpipe.files.fingerprints import StaleInputError, fingerprint
from leafpipe.files.provenance import recorded
from leafpipe.report.validity import validity_section
from leafpipe.stages.specs import stage_config

RULES = Path(__file__).resolve().parents[2] / "workflow" / "rules"


def rule_inputs(rule: str) -> set[str]:
    """The input names of `rule`'s `input:` block in workflow/rules/*.smk."""
    for smk in RULES.glob("*.smk"):
        found = re.search(
            rf"^rule {rule}:\n(?:    #.*\n)*    input:\n(.*?)^    \w+:",
            smk.read_text(),
            re.S | re.M,
        )
        if found:
            return set(re.findall(r"^        (\w+)=", found.group(1), re.M))
    raise LookupError(f"no rule {rule} in {RULES}")


class Chain:
    """The tiny run: its files under `root`, and each stage called as its rule calls it."""

    def __init__(self, root: Path, tokenizer, samples) -> None:
        self.root = root
        self.models = {role: root / "models" / role for role in ("teacher", "student")}
        for seed, folder in enumerate(self.models.values()):
            save_tiny_model(LlamaConfig, LlamaForCausalLM, tokenizer, folder, seed)
        rows = [
            {"id": f"r{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(samples * 2)
        ]
        write_jsonl(rows, root / "source.jsonl")
        write_jsonl([{"id": "held", "instruction": "x", "response": "y"}], root / "held.jsonl")
        self.config = validate_config(
            {
                "models": {"teacher": {}, "student": {}},
                "corpus": {"path": str(root / "source.jsonl"), "max_tokens": 512},
                "scoring": {"shards": 1},
                "validity": {"check": False},
                "attention": {"samples": 1},
            }
        )

    def path(self, name: str) -> Path:
        return self.root / "out" / name

    def cut(self, stage: str, **wildcards: str) -> dict:
        return stage_config(stage, self.config, wildcards)

    def corpus(self) -> None:
        stages.corpus(
            self.cut("corpus"),
            self.path("train.jsonl"),
            self.path("info.json"),
            self.path("skipped.parquet"),
            held_out=[self.root / "held.jsonl"],
            corpus_file=self.root / "source.jsonl",
            tokenizer_dir=self.models["student"],
        )

    def score(self, model: str) -> None:
        stages.score(
            self.cut("score", model=model),
            model,
            self.models[model],
            self.path("train.jsonl"),
            self.path(f"{model}-shard-0.parquet"),
            shard="0",
        )

    def gather_scores(self, model: str) -> None:
        stages.gather_scores([self.path(f"{model}-shard-0.parquet")], self.path(f"{model}.parquet"))

    def gather_teacher_scores(self) -> None:
        self.gather_scores("teacher")

    def score_teacher(self) -> None:
        self.score("teacher")

    def corpus_accounting(self) -> None:  # the report's data accounting
        corpus_accounting(
            self.path("info.json"), self.path("train.jsonl"), self.path("skipped.parquet")
        )

    def detect(self) -> None:
        stages.detect(
            self.cut("detect"),
            self.path("teacher.parquet"),
            self.path("student.parquet"),
            self.path("train.jsonl"),
            self.path("tokens.parquet"),
            self.path("metrics.json"),
        )

    def counterfactuals(self) -> None:
        stages.counterfactuals(
            self.cut("counterfactuals", level="instr"),
            self.path("train.jsonl"),
            self.path("tokens.parquet"),
            "instr",
            self.path("instr.jsonl"),
        )

    def inspect(self) -> None:
        stages.inspect(
            self.cut("inspect"),
            self.path("tokens.parquet"),
            self.path("metrics.json"),
            *(self.path(f"inspect-{name}") for name in ("html", "hist", "csv", "png", "v", "k")),
        )

    def validate_counterfactuals(self) -> None:
        stages.validate_counterfactuals(
            self.cut("validate_counterfactuals", level="instr"),
            self.models["teacher"],
            self.models["student"],
            self.path("instr.jsonl"),
            self.path("instr.valid.jsonl"),
            self.path("instr.validity.json"),
            self.path("train.jsonl"),
            self.path("tokens.parquet"),
            "instr",
        )

    def validity_section(self) -> None:  # the report's
        validity_section([self.path("instr.validity.json")])

    def distill(self) -> None:  # refused before it loads a model, or it would train
        stages.distill(
            self.cut("distill", variant="leaf_instr"),
            "leaf_instr",
            self.models["teacher"],
            self.models["student"],
            self.path("instr.valid.jsonl"),
            self.path("leaf_instr"),
        )

    def attention(self) -> None:
        stages.attention(
            self.cut("attention", model="student"),
            "student",
            self.models["student"],
            self.path("train.jsonl"),
            self.path("tokens.parquet"),
            self.path("attention.csv"),
        )


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tokenizer, samples) -> Chain:
    run = Chain(tmp_path_factory.mktemp("chain"), tokenizer, samples)
    run.corpus()
    for model in ("teacher", "student"):
        run.score(model)
        run.gather_scores(model)
    run.detect()
    run.counterfactuals()
    run.validate_counterfactuals()
    return run


@dataclass(frozen=True)
class Writer:
    """A stage's output: the rule's inputs (name -> the chain's paths for it) and the stages that
    read the output (methods of `Chain`)."""

    rule: str
    output: str
    inputs: Callable[[Chain], dict[str, list[Path]]]
    readers: tuple[str, ...]


def corpus_inputs(c: Chain) -> dict[str, list[Path]]:
    return {
        "corpus_file": [c.root / "source.jsonl"],
        "local_data": [],  # no corpus.dataset
        "held_out": [c.root / "held.jsonl"],
        "tokenizer": [c.models["student"]],  # corpus.max_tokens counts its tokens
    }


def detect_inputs(c: Chain) -> dict[str, list[Path]]:
    return {
        "teacher_scores": [c.path("teacher.parquet")],
        "student_scores": [c.path("student.parquet")],
        "corpus_path": [c.path("train.jsonl")],
    }


def validity_inputs(c: Chain) -> dict[str, list[Path]]:
    return {
        "teacher": [],  # validity.check off: no model loaded, none tracked
        "student": [],
        "data_path": [c.path("instr.jsonl")],
        "corpus_path": [c.path("train.jsonl")],
        "tokens_path": [c.path("tokens.parquet")],
    }


WRITERS = [
    Writer(
        "corpus",
        "skipped.parquet",
        corpus_inputs,
        (),  # the report counts its rows from the Parquet footer (data.accounting) alone
    ),
    Writer("corpus", "train.jsonl", corpus_inputs, ("score_teacher", "counterfactuals")),
    Writer("corpus", "info.json", corpus_inputs, ("corpus_accounting",)),
    Writer(
        "score",
        "teacher-shard-0.parquet",
        lambda c: {"weights": [c.models["teacher"]], "corpus_path": [c.path("train.jsonl")]},
        ("gather_teacher_scores",),
    ),
    Writer(
        "gather_scores",
        "student.parquet",
        lambda c: {"shard_paths": [c.path("student-shard-0.parquet")]},
        ("detect",),
    ),
    Writer(
        "detect",
        "tokens.parquet",
        detect_inputs,
        ("counterfactuals", "inspect", "validate_counterfactuals", "attention"),
    ),
    Writer("detect", "metrics.json", detect_inputs, ("inspect",)),
    Writer(
        "counterfactuals",
        "instr.jsonl",
        lambda c: {
            "corpus_path": [c.path("train.jsonl")],
            "tokens_path": [c.path("tokens.parquet")],
        },
        ("validate_counterfactuals",),
    ),
    Writer("validate_counterfactuals", "instr.valid.jsonl", validity_inputs, ("distill",)),
    Writer(
        "validate_counterfactuals", "instr.validity.json", validity_inputs, ("validity_section",)
    ),
]
IDS = [w.output for w in WRITERS]


@pytest.mark.parametrize("writer", WRITERS, ids=IDS)
def test_a_stage_records_every_file_its_rule_gives_it(chain: Chain, writer: Writer) -> None:
    inputs = writer.inputs(chain)
    assert set(inputs) == rule_inputs(writer.rule), "the table lags the rule's inputs"
    files = [path for paths in inputs.values() for path in paths]
    assert recorded(chain.path(writer.output))["inputs"] == {
        str(path): fingerprint(path) for path in files
    }


@contextlib.contextmanager
def changed(path: Path) -> Iterator[Path]:
    """`path` with one byte more (a folder: its config.json), restored afterwards."""
    file = path / "config.json" if path.is_dir() else path
    before = file.read_bytes()
    file.write_bytes(before + b" ")
    try:
        yield path
    finally:
        file.write_bytes(before)


@pytest.mark.parametrize(
    ("writer", "reader"),
    [(w, r) for w in WRITERS for r in w.readers],
    ids=[f"{w.output}-read-by-{r}" for w in WRITERS for r in w.readers],
)
def test_every_reader_refuses_an_output_whose_input_changed(
    chain: Chain, writer: Writer, reader: str
) -> None:
    for path in (p for paths in writer.inputs(chain).values() for p in paths):
        with changed(path), pytest.raises(StaleInputError) as refused:
            getattr(chain, reader)()
        assert re.search(
            rf" was made from a different {re.escape(str(path))} |"
            rf"^{re.escape(str(path))} is not the file its record",
            str(refused.value),
        ), refused.value


def test_benchmark_rows_record_their_source_and_evaluation_refuses_them_once_it_changed(
    tmp_path: Path,
) -> None:
    """Off the chain, as it needs no model: benchmark_data records the rule's inputs (the entry's
    file; no local data), generate (its shard empty, so no model loaded) the rows and not the hub
    id it names, and a changed source is refused by generate and by grade."""
    source, out = tmp_path / "test.jsonl", tmp_path / "out"
    source.write_text('{"question": "1 + 1?", "answer": "1 + 1 = 2\\n#### 2"}\n')
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "evaluation": {"benchmarks": {"g": {"kind": "gsm8k", "shards": 2}}},
        }
    )
    rows, info = out / "g.jsonl", out / "g.info.json"
    cut = stage_config("benchmark_data", config, {"benchmark": "g"})
    stages.benchmark_data(cut, "g", rows, info, source)
    assert rule_inputs("benchmark_data") == {"input_path", "local_data"}
    for made in (rows, info):
        assert recorded(made)["inputs"] == {str(source): fingerprint(source)}

    wildcards = {"benchmark": "g", "model": "teacher"}
    generate = stage_config("generate", config, wildcards)
    shard, shard_info = out / "gen-0.jsonl", out / "gen-0.info.json"
    stages.generate(generate, "teacher", "g", "Org/hub-model", rows, shard, shard_info, shard=0)
    assert rule_inputs("generate") == {"weights", "bench_path"}
    for made in (shard, shard_info):
        assert recorded(made)["inputs"] == {str(rows): fingerprint(rows)}
    assert recorded(shard)["rows"] == 0
    with changed(source):
        with pytest.raises(StaleInputError, match=f"{rows} was made from a different {source} "):
            stages.generate(generate, "teacher", "g", "Org/hub-model", rows, shard, shard_info)
        with pytest.raises(StaleInputError, match=f"{info} was made from a different {source} "):
            stages.grade(
                stage_config("grade", config, wildcards),
                "teacher",
                "g",
                [shard],
                rows,
                info,
                out / "g.scores.json",
                out / "g.graded.jsonl",
                generation_infos=[shard_info],
            )
