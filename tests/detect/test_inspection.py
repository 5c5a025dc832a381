import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from score_rows import score_rows

from leafpipe.config import validate_config
from leafpipe.detect.confounders import DetectSpec, detect
from leafpipe.detect.inspection import (
    write_histograms,
    write_inspection_html,
    write_sweep_plot,
)
from leafpipe.detect.metrics import detection_metrics
from leafpipe.detect.quality import percentile_sweep, write_csv

PNG = b"\x89PNG\r\n\x1a\n"
WORDS = [
    "Tom",
    " has",
    " 3",
    " apples",
    ".",
    " Mia",
    " owns",
    " 9",
    " red",
    " cars",
    ".",
    " How",
    " many",
    " apples",
    " now",
    "?",
]
PLANTED_WORDS = range(5, 11)  # " Mia owns 9 red cars."
RESPONSE = ["Step", " 1", ":", " 3", "\n", "Step", " 2", ":", " 7"]


def _planted_span(words):
    start = sum(len(w) for w in words[: PLANTED_WORDS.start])
    return [start, start + sum(len(words[i]) for i in PLANTED_WORDS)]


def _world(n_samples=12, labelled=True, seed=0):
    """Detection tokens for synthetic samples whose planted tokens tend to a low
    teacher − student."""
    rng = np.random.default_rng(seed)
    teacher, student, corpus = [], [], []
    n = len(WORDS) + len(RESPONSE)
    for k in range(n_samples):
        t, s = rng.random(n), rng.random(n)
        planted = np.zeros(n, dtype=bool)
        planted[list(PLANTED_WORDS)] = True
        s[planted] += 0.5 * rng.random(
            planted.sum()
        )  # the student leans on the distractor, noisily
        teacher += score_rows(f"s{k}", WORDS, RESPONSE, t)
        student += score_rows(f"s{k}", WORDS, RESPONSE, s)
        corpus.append(
            {
                "id": f"s{k}",
                "instruction": "".join(WORDS),
                "distractor_spans": [_planted_span(WORDS)] if labelled else [],
            }
        )
    return pd.DataFrame(teacher), pd.DataFrame(student), corpus


@pytest.fixture(scope="module")
def world():
    return _world()


@pytest.mark.parametrize(
    "spec",
    [
        DetectSpec(percentile=20),
        DetectSpec(percentile=35, cap=0.3),
        DetectSpec(percentile=40, cap=1.0, min_span_tokens=2, max_span_tokens=3),
        DetectSpec(percentile=30, response_level=False),
    ],
    ids=["default", "capped", "span_limits", "instruction_only"],
)
def test_sweep_at_the_configured_percentile_equals_detection_metrics(world, spec):
    tokens = detect(*world, spec)
    metrics = detection_metrics(tokens, spec)
    assert 0 < metrics["recall"] < 1 and 0 < metrics["precision"] < 1, (
        "a case where the numbers say something"
    )
    sweep = percentile_sweep(tokens, spec, [5.0, spec.percentile, 90.0]).set_index("percentile")
    row = sweep.loc[spec.percentile]
    assert row["precision"] == pytest.approx(metrics["precision"])
    assert row["recall"] == pytest.approx(metrics["recall"])
    assert row["f1"] == pytest.approx(metrics["f1"])
    assert row["n_flagged"] == metrics["n_confounders"]
    assert sweep.loc[5.0, "n_flagged"] < row["n_flagged"], (
        "other percentiles really are re-thresholded"
    )


def test_sweep_reproduces_detection_from_another_strategy(world):
    # Detection ran with top_k; the sweep forces the percentile strategy and keeps the rest.
    top_k = detect(*world, DetectSpec(strategy="top_k", top_k=2))
    by_percentile = detect(*world, DetectSpec(percentile=25))
    expected = detection_metrics(by_percentile, DetectSpec(percentile=25))
    row = percentile_sweep(top_k, DetectSpec(strategy="top_k", top_k=2), [25]).iloc[0]
    assert (
        row["recall"] == pytest.approx(expected["recall"])
        and row["n_flagged"] == expected["n_confounders"]
    )


def test_sweep_recall_never_decreases_with_the_percentile(world):
    spec = DetectSpec(cap=1.0)
    tokens = detect(*world, spec)
    percentiles = [1, 2, 5, 10, 20, 30, 50, 70, 90, 100]
    sweep = percentile_sweep(tokens, spec, percentiles)
    assert list(sweep.columns) == ["percentile", "precision", "recall", "f1", "n_flagged"]
    assert sweep["percentile"].tolist() == percentiles
    assert (np.diff(sweep["recall"]) >= 0).all() and (np.diff(sweep["n_flagged"]) >= 0).all()
    assert sweep["recall"].iloc[-1] == 1.0 and sweep["recall"].iloc[0] < 0.5


def test_sweep_without_planted_labels_is_nan_not_zero():
    unlabelled = _world(labelled=False)
    tokens = detect(*unlabelled, DetectSpec())
    sweep = percentile_sweep(tokens, DetectSpec(), [5, 10, 50])
    assert sweep[["precision", "recall", "f1"]].isna().all().all()
    assert (sweep["n_flagged"] > 0).all() and sweep["n_flagged"].is_monotonic_increasing


def _html_tokens():
    """Two samples; in the first, the ` <b>` token has the lowest difference and is detected."""
    words = ["Sum", " <b>", " 4", " &", " 5", "."]
    t = [1.0, 0.0, 1.0, 0.9, 1.0, 0.8]
    s = [0.0, 1.0, 0.0, 0.1, 0.0, 0.2]
    teacher = score_rows("a", words, [], t) + score_rows("b", words, [], t[::-1])
    student = score_rows("a", words, [], s) + score_rows("b", words, [], s[::-1])
    corpus = [
        {"id": "a", "instruction": "".join(words), "distractor_spans": [[3, 7]]},
        {"id": "b", "instruction": "".join(words), "distractor_spans": []},
    ]
    spec = DetectSpec(strategy="top_k", top_k=1)
    tokens = detect(pd.DataFrame(teacher), pd.DataFrame(student), corpus, spec)
    return tokens, detection_metrics(tokens, spec)


def test_html_escapes_tokens_and_marks_detected_and_planted(tmp_path):
    tokens, metrics = _html_tokens()
    assert tokens.iloc[0]["is_confounder"][1] and tokens.iloc[0]["is_planted"][1]
    path = tmp_path / "inspect.html"
    write_inspection_html(tokens, metrics, path)
    page = path.read_text(encoding="utf-8")
    assert "&lt;b&gt;" in page and "> <b></span>" not in page
    assert " &amp;</span>" in page
    # Three rows (teacher, student, difference) show the token; each time underlined and boxed.
    marked = re.findall(r'<span class="t c p"[^>]*> &lt;b&gt;</span>', page)
    assert len(marked) == 3
    assert re.search(r"\.t\.c \{[^}]*text-decoration: underline", page)
    assert re.search(r"\.t\.p \{[^}]*outline", page)
    assert all(label in page for label in (">teacher<", ">student<", ">difference<"))
    for key in ("precision", "recall", "f1", "base_rate"):
        assert f"{100 * metrics[key]:.1f}%" in page
    assert "<script" not in page and "http" not in page


def test_html_underlines_whole_spans_including_joining_whitespace(tmp_path):
    # detection/tokens.parquet written by hand: "Mia" and "9" are flagged, the space between them
    # never is (whitespace), yet it belongs to the merged span "Mia 9" that will be pruned.
    tokens = pd.DataFrame(
        [
            {
                "id": "x",
                "field": ["instruction"] * 4,
                "step": [-1] * 4,
                "char_start": [0, 3, 4, 5],
                "char_end": [3, 4, 5, 7],
                "text": ["Mia", "\t", "9", " x"],
                "teacher_norm": [0.0, 0.5, 0.1, 1.0],
                "student_norm": [1.0, 0.5, 0.9, 0.0],
                "diff": [0.0, 0.5, 0.1, 1.0],
                "is_confounder": [True, False, True, False],
                "is_planted": [False] * 4,
                "spans": json.dumps([{"field": "instruction", "step": -1, "start": 0, "end": 5}]),
            }
        ]
    )
    path = tmp_path / "inspect.html"
    write_inspection_html(tokens, detection_metrics(tokens, DetectSpec()), path)
    page = path.read_text(encoding="utf-8")
    assert len(re.findall(r'<span class="t c"[^>]*>\t</span>', page)) == 3
    assert len(re.findall(r'<span class="t"[^>]*> x</span>', page)) == 3


def test_html_shows_the_first_samples_in_corpus_order(tmp_path):
    tokens, metrics = _html_tokens()
    path = tmp_path / "inspect.html"
    write_inspection_html(tokens, metrics, path, n_samples=1)
    page = path.read_text(encoding="utf-8")
    assert "<h3>a</h3>" in page and "<h3>b</h3>" not in page
    assert "First 1 of 2 samples" in page


def test_html_without_labels_says_metrics_are_undefined(tmp_path):
    tokens = detect(*_world(n_samples=2, labelled=False), DetectSpec())
    path = tmp_path / "inspect.html"
    write_inspection_html(tokens, detection_metrics(tokens, DetectSpec()), path)
    page = path.read_text(encoding="utf-8")
    assert "No planted labels" in page
    samples = page.split('<div class="sample">', 1)[1]  # past the legend, which shows every marker
    assert 'class="t c' in samples and 'class="t p' not in samples and 'class="t c p' not in samples


@pytest.mark.parametrize("labelled", [True, False])
def test_plots_are_valid_pngs(tmp_path, labelled):
    tokens = detect(*_world(labelled=labelled), DetectSpec())
    sweep = percentile_sweep(tokens, DetectSpec(), [5, 10, 30])
    write_histograms(tokens, tmp_path / "hist.png")
    write_sweep_plot(
        sweep, tmp_path / "sweep.png", configured=10, base_rate=0.3 if labelled else None
    )
    for name in ("hist.png", "sweep.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist.png", "sweep.png"], (
        "no temporary files left"
    )


def test_sweep_csv_round_trips_with_nan(tmp_path):
    sweep = pd.DataFrame(
        {
            "percentile": [5.0, 10.0],
            "precision": [math.nan, 0.5],
            "recall": [math.nan, 0.25],
            "f1": [math.nan, 1 / 3],
            "n_flagged": [3, 7],
        }
    )
    write_csv(sweep, tmp_path / "sweep.csv")
    back = pd.read_csv(tmp_path / "sweep.csv")
    pd.testing.assert_frame_equal(back, sweep)


def test_inspect_stage_writes_every_output_and_sweeps_the_configured_percentile(tmp_path, world):
    from leafpipe import stages

    spec = DetectSpec(percentile=12)
    tokens = detect(*world, spec)
    tokens.to_parquet(tmp_path / "tokens.parquet", index=False)
    metrics = detection_metrics(tokens, spec)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "detection": {"percentile": 12},
            "inspection": {"samples": 3, "percentiles": [5, 50]},
        }
    )
    names = (
        "inspect.html",
        "histograms.png",
        "sweep.csv",
        "sweep.png",
        "variants.csv",
        "by_kind.csv",
    )
    out = {name: tmp_path / "out" / name for name in names}
    stages.inspect(config, tmp_path / "tokens.parquet", tmp_path / "metrics.json", *out.values())
    sweep = pd.read_csv(out["sweep.csv"])
    assert set(sweep["score"]) == {"paper", "rank", "ratio"}, (
        "gradient × input needs scores that have it"
    )
    paper = sweep[sweep["score"] == "paper"].set_index("percentile")
    assert paper.index.tolist() == [5.0, 12.0, 50.0]
    assert paper.loc[12.0, "recall"] == pytest.approx(metrics["recall"])
    variants = pd.read_csv(out["variants.csv"]).set_index("score")
    assert variants.loc["paper", "configured"] and not variants.loc["rank", "configured"]
    assert variants.loc["paper", "precision"] == pytest.approx(metrics["precision"])
    by_kind = pd.read_csv(out["by_kind.csv"])
    assert set(by_kind["kind"]) == {"planted_number", "planted_word", "own_number", "other"}
    assert out["inspect.html"].read_text(encoding="utf-8").count('<div class="sample">') == 3
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(out)
