"""The core modules bench/mutation_score.py plants mutants in, and the tests that must notice.

A target names the modules of one concern (optionally only some of their functions, where the
rest is covered by slower tests) and the pytest arguments of the tests covering them: test files,
`-k` expressions, `-m "not slow"`. Each selection is chosen so that a whole run over every target
fits in about 15 minutes on two cores (docs/testing.md); widen a selection only with its cost
measured.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_SLOW = ("-m", "not slow")
MATH_GRADING = (
    "_clean",
    "extract_final_answer",
    "_unwrapped",
    "normalize_answer",
    "_parse",
    "_show",
    "_compare",
    "_judge",
    "_gold_answer",
    "grade_math",
)
CODE_CHECKS = (
    "extract_code",
    "_cases",
    "check_script",
    "check_stdio",
    "pass_at_k",
    "mean_pass_at_k",
    "_check_tests",
    "_isolated_verdict",
    "_with_prelude",
    "failure_verdict",
    "_excerpt",
    "_bounded",
)


@dataclass(frozen=True)
class Source:
    """A module to mutate (dotted name), all of it or only `functions` (qualified names)."""

    module: str
    functions: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Target:
    """One concern: its `sources` and the pytest arguments (`tests`) of the tests covering it."""

    name: str
    sources: tuple[Source, ...]
    tests: tuple[str, ...]


TARGETS = (
    Target(
        "scoring",
        (
            Source("leafpipe.detect.scoring"),
            Source("leafpipe.detect.input_gradients"),
            Source("leafpipe.detect.score_batches"),
        ),
        (
            "tests/detect/test_scoring.py",
            "tests/detect/test_scoring_system.py",
            "tests/detect/test_scoring_memory.py::"
            "test_the_gpu_budget_follows_the_free_memory_and_the_models_size",
            "tests/detect/test_scoring_memory.py::test_a_single_sample_that_does_not_fit_raises",
            *NOT_SLOW,
        ),
    ),
    Target(
        "detection",
        (
            Source("leafpipe.detect.confounders"),
            Source("leafpipe.detect.spans"),
            Source("leafpipe.detect.metrics"),
        ),
        ("tests/detect/test_confounders.py", *NOT_SLOW),
    ),
    Target(
        "counterfactuals",
        (Source("leafpipe.prune.counterfactuals"),),
        ("tests/prune/test_counterfactuals.py", *NOT_SLOW),
    ),
    Target(
        "kd loss",
        (Source("leafpipe.distill.kd_loss"), Source("leafpipe.distill.divergences")),
        (
            "tests/distill/test_kd_loss.py",
            "tests/distill/test_liger_loss.py::test_ligers_mean_times_n_tau_squared_is_kd_loss_sum",
            *NOT_SLOW,
        ),
    ),
    Target(
        "distillation weighting",
        (Source("leafpipe.distill.objective"),),
        (
            "tests/distill/test_training_scheme.py",
            "tests/distill/test_objective_gradients.py",
            "tests/distill/test_trainer.py::test_lr_warms_up_then_follows_the_schedule",
            *NOT_SLOW,
        ),
    ),
    Target(
        "math grading",
        (
            # the grading logic; the worker pool (timeouts, dead workers) has slower tests
            Source("leafpipe.evaluation.grading.math_answers", MATH_GRADING),
            Source("leafpipe.evaluation.grading.answer_forms"),
            Source("leafpipe.evaluation.grading.answer_spans"),
        ),
        (
            "tests/evaluation/grading/test_answer_forms.py",
            "tests/evaluation/grading/test_answer_spans.py",
            "tests/evaluation/grading/test_math_answers.py",
            *NOT_SLOW,
            "-k",
            "not hanging and not dies and not world_grader and not main_script",
        ),
    ),
    Target(
        "code checking",
        (
            # leafpipe's own checks; HumanEval's (164 sandboxed programs a run) are left out
            Source("leafpipe.evaluation.grading.programs", CODE_CHECKS),
            Source("leafpipe.evaluation.grading.isolated_tests"),
        ),
        (
            "tests/evaluation/grading/test_programs.py",
            "tests/evaluation/grading/test_isolated_tests.py",
            *NOT_SLOW,
            "-k",
            "not humaneval",
        ),
    ),
    Target(
        "generation resume",
        (
            Source(
                "leafpipe.evaluation.generation",
                ("_fingerprint", "_digest", "_read_partial", "_resume", "generate"),
            ),
        ),
        ("tests/evaluation/test_generation.py", *NOT_SLOW),
    ),
    Target(
        "provenance",
        (Source("leafpipe.files.provenance"), Source("leafpipe.files.fingerprints")),
        ("tests/files/test_provenance.py", "tests/files/test_json_provenance.py", *NOT_SLOW),
    ),
)
