"""The report's distillation-loss section (`leafpipe.report.kd_settings`), from fake training.json
records."""

import json

from report_text import section

from leafpipe.distill.checkpoints import TrainingState
from leafpipe.distill.spec import DistillSpec, KDSpec
from leafpipe.distill.summary import training_summary
from leafpipe.report.build import build_report
from leafpipe.report.kd_settings import kd_settings_cells, kd_settings_section
from leafpipe.report.pooled import _seed_parts

LABELS = {"sft": "SFT", "kd": "KD w/o mask", "leaf_instr": "LeaF (instr)"}
KD = {"kind": "forward_kl", "temperature": 1.0, "beta": 0.5, "chunk_tokens": 1024}


def _training(objective="kd", cache_k=None, seed=0, **kd):
    """A training.json as far as the section reads it."""
    return {
        "objective": objective,
        "settings": {"objective": objective, "seed": seed, "kd": {**KD, **kd}},
        "teacher_cache": None if cache_k is None else {"path": "c.safetensors", "k": cache_k},
        "non_finite_steps": 0,
    }


def test_a_top_k_run_is_labelled_an_approximation_with_its_k_and_mode():
    cells = kd_settings_cells(_training(cache_k=64, backend="chunked", topk_mode="renormalised"))
    assert cells == [
        "forward_kl",
        "1",
        "chunked",
        "top-k (k=64, renormalised): an approximation of the full-vocabulary KL",
    ]
    tail = kd_settings_cells(_training(cache_k=16, kind="jsd", beta=0.25, topk_mode="tail"))
    assert tail[0] == "jsd (β = 0.25)"
    assert tail[3] == "top-k (k=16, tail): an approximation of the full-vocabulary JSD"


def test_a_full_teacher_run_names_its_backend_and_older_records_read_as_chunked():
    liger = kd_settings_cells(_training(temperature=2.0, backend="liger"))
    assert liger == ["forward_kl", "2", "liger", "full teacher (exact full-vocabulary loss)"]
    older = _training(cache_k=64)  # written before backend and topk_mode existed
    assert kd_settings_cells(older)[2:] == [
        "chunked",
        "top-k (k=64, renormalised): an approximation of the full-vocabulary KL",
    ]
    assert kd_settings_cells(_training("ce"))[3] == "no teacher"


def test_the_trainers_own_training_json_is_read():
    spec = DistillSpec(kd=KDSpec(kind="reverse_kl", temperature=1.5, topk_mode="tail"), seed=3)
    record = training_summary(
        spec,
        TrainingState(),
        run=dict.fromkeys(
            ("groups_train", "groups_validation", "groups_with_counterfactuals", "steps_per_epoch"),
            1,
        ),
        kept=dict(keep="last", kept="last", kept_epoch=1),
        environment={"teacher_cache": {"path": "c.safetensors", "k": 32}},
    )
    assert kd_settings_cells(json.loads(json.dumps(record))) == [
        "reverse_kl",
        "1.5",
        "chunked",
        "top-k (k=32, tail): an approximation of the full-vocabulary KL",
    ]


def test_seeds_with_the_same_settings_share_a_row_and_differing_ones_are_named():
    same = [_training(seed=0), _training(seed=1)]
    differ = [_training(cache_k=64, seed=0), _training(seed=1)]
    lines = kd_settings_section({"kd": same, "leaf_instr": differ}, LABELS)
    rows = [line for line in lines if line.startswith("| ") and "Model" not in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| KD w/o mask",
        "| LeaF (instr) (seed 0)",
        "| LeaF (instr) (seed 1)",
    ]
    assert kd_settings_section({}, LABELS) == []


def test_summary_md_shows_the_section_from_the_training_records(tmp_path):
    training = {"sft": [_training("ce")], "kd": [_training(cache_k=64, topk_mode="tail")]}
    score = dict(benchmark="test", seed=0, n=10, correct=5, accuracy=0.5, extracted=10)
    build_report(
        [{**score, "model": m, "ci_low": 0.2, "ci_high": 0.8} for m in ("sft", "kd")],
        {0: {}},
        tmp_path,
        model_order=["sft", "kd"],
        model_labels=LABELS,
        benchmark_labels={"test": "Test"},
        training=training,
    )
    text = section((tmp_path / "summary.md").read_text(), "Distillation loss")
    assert "| SFT | cross-entropy on the responses |" in text
    assert "top-k (k=64, tail): an approximation of the full-vocabulary KL" in text


def test_the_pooled_report_reads_each_variants_training_json_per_seed(tmp_path):
    paths = {}
    for seed in (0, 1):
        for variant in ("sft", "kd"):
            path = tmp_path / f"{variant}-{seed}.json"
            objective = "ce" if variant == "sft" else "kd"
            path.write_text(json.dumps(_training(objective, seed=seed)))
            paths.setdefault(seed, []).append(path)
    config = {"seeds": [0, 1], "distill": {"variants": ["sft", "kd"]}}
    config["evaluation"] = {"benchmarks": {}}
    none = {0: [], 1: []}
    split = {
        "corpus files": none,
        "benchmark files": none,
        "attention tables": none,
        "training files": paths,
    }
    *_, training = _seed_parts(config, split)
    assert list(training) == ["sft", "kd"]
    assert [r["settings"]["seed"] for r in training["kd"]] == [0, 1]
    assert training["sft"][0]["objective"] == "ce"
