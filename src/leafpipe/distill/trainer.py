"""Causal attention distillation, stage 2 of LeaF, and its baselines: one trainer, one loop.

Original samples x and their counterfactuals x \\ A (a confounder span removed) train the
student, teacher and student seeing the same input, with a per-token loss ℓ on the trained
response tokens: a distillation loss (`objective="kd"`: forward KL, reverse KL or JSD to the
teacher, `leafpipe.distill.kd_loss`) or plain cross-entropy (`objective="ce"`, the `sft` baseline,
which needs no teacher). Two schemes (`DistillSpec.counterfactuals`):

- `all` (the paper's mixed file): every original and every counterfactual is a sample of its
  own each epoch, and a step's loss is the token mean with weight λ on counterfactual tokens,
      L = (Σ_orig ℓ + λ Σ_cf ℓ) / (N_orig + λ N_cf)
  over the step's trained tokens; λ = 1 is the paper's plain KD over the mixed file.
- `draw_one`: each original with one counterfactual drawn per epoch, and
      L = Σ_orig ℓ / N_orig + λ Σ_cf ℓ / N_cf,
  each term the token mean over its own samples of the step.

Both count tokens over the whole optimiser step, so gradient accumulation gives exactly the
gradient of one big batch. The variants differ only in data: `sft` and `kd` train on originals
alone (no counterfactuals, so the λ term is absent), `leaf_instr` and `leaf_instr_resp` on
originals with their counterfactuals. docs/training-scheme.md compares the schemes with the paper.

Training state lives in a work folder (docs/data-schemas.md, "Distillation checkpoints") so a
killed job resumes where it stopped and ends with the same weights, bit for bit on a CPU, as a
run that was never interrupted: weights, optimiser state, step, position in the epoch, RNG states
and the metrics so far are saved every `checkpoint_every` steps and at each epoch end, and the
batch order of an epoch is a function of (seed, epoch) alone, so it is recomputed, not stored.

A step whose loss or gradient is not finite (NaN or inf: a diverging run, an overflow, a broken
weight) updates nothing: its gradients are dropped, the learning-rate schedule and the RNG move
on as after any step, and it is counted (`non_finite` in metrics.csv, `non_finite_steps` in
training.json and in the resumable state). Every process takes the same decision. Once more
than half of the steps so far were skipped, the run stops with an error rather than pass as
trained.

Started as several processes (torchrun; `distill.gpus` > 1), each trains its share of every
step and the gradients are combined so that the run trains what one process would, with the
student replicated or, with `fsdp`, sharded (`leafpipe.distill.parallel`).

This module holds the loop (`_Trainer.run`) and `distill`; the phases are modules of their own:
the settings in `leafpipe.distill.spec`, the set-up in `leafpipe.distill.parts`, a step in
`leafpipe.distill.steps` (its loss arithmetic in `leafpipe.distill.objective`), checkpoint I/O
in `leafpipe.distill.resume`, the step log in `leafpipe.distill.steplog` and training.json in
`leafpipe.distill.summary`; the groups, split and batches are in `leafpipe.distill.data`, the
work folder and the final model folder in `leafpipe.distill.checkpoints`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.distill.checkpoints import BEST, LAST, LOSS_SUMS, METRICS, TRAINING, TrainingState
from leafpipe.distill.data import DistillGroup, Step
from leafpipe.distill.liger_loss import check_liger_run
from leafpipe.distill.objective import lr_at
from leafpipe.distill.parts import TrainerParts, check_heads, check_tokenizers, require_peft
from leafpipe.distill.resume import Checkpointing
from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.steplog import StepLog, log_start
from leafpipe.distill.steps import StepRunner
from leafpipe.distill.summary import training_summary
from leafpipe.distill.teacher_cache import TeacherCache
from leafpipe.files.atomic import write_json
from leafpipe.tracking.runs import RunPlan

log = logging.getLogger(__name__)

# The run stops when more than half of its steps so far were skipped as non-finite, judged from
# this step on (or from the last step of a shorter run): one bad step at the very start is no
# majority yet.
NON_FINITE_JUDGED_FROM = 4


class _Trainer(TrainerParts, StepRunner, Checkpointing):
    """One run: the parts (`TrainerParts`), its steps (`StepRunner`) and checkpoints
    (`Checkpointing`), in the loop of `run`."""

    def run(self, tracking: RunPlan | None = None) -> PreTrainedModel:
        state = self._start()
        log_start(
            self.spec,
            groups_train=len(self.train_idx),
            groups_held_out=len(self.val_idx),
            steps_per_epoch=self.steps_per_epoch,
            device=self.device,
            processes=self.processes,
            sharded=self.sharded is not None,
        )
        steplog = StepLog(
            self.work, state, self.total_steps, self.spec.objective, self.main, tracking
        )
        self.student.train()
        with steplog.tracked:  # finished after the summary; as failed on an error
            try:
                while state.epoch <= self.spec.epochs:
                    steps = self._plan(state.epoch)
                    while state.position < len(steps):
                        self._step(state, steps[state.position], steplog)
                    self._end_epoch(state, steplog)
            finally:
                steplog.close()
            return self._finish(state, steplog.elapsed(state), steplog)

    def _step(self, state: TrainingState, step: Step, steplog: StepLog) -> None:
        """Take optimiser step `state.step` + 1, record it, checkpoint when due."""
        lr = lr_at(state.step, self.total_steps, self.spec)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self._train_step(step)
        state.step += 1
        state.position += 1
        if out["non_finite"]:
            state.non_finite_steps += 1
        else:  # a skipped step trained nothing: the epoch's totals leave it out
            for key in LOSS_SUMS:
                state.sums[key] += out[key]
        row = steplog.step(state, lr, out, self._total(out), self.spec.log_every)
        self._check_non_finite(state)
        if state.step % self.spec.checkpoint_every == 0:
            self._save_state(state, steplog.elapsed(state))
        if self.on_step is not None:
            self.on_step(state.step, row)

    def _check_non_finite(self, state: TrainingState) -> None:
        """Stop a run most of whose steps were skipped: it has not trained (every process
        raises)."""
        judged = state.step >= min(NON_FINITE_JUDGED_FROM, self.total_steps)
        if judged and 2 * state.non_finite_steps > state.step:
            raise RuntimeError(
                f"distill ({self.spec.objective}): {state.non_finite_steps} of the {state.step} "
                "optimiser steps so far had a non-finite (NaN or inf) loss or gradient and "
                "updated nothing; with more than half of them skipped the run has not trained, "
                "so it stops here. Check the student's weights for NaN or inf, or try a lower "
                f"distill.lr; the steps are in {self.work / METRICS} (column non_finite)."
            )

    def _end_epoch(self, state: TrainingState, steplog: StepLog) -> None:
        """Validate, keep the best and last weights, and checkpoint the start of the next
        epoch."""
        row = steplog.epoch_row(state, self._total(state.sums))
        if self.val_idx:
            row.update(self._validate())
            self._track_best(state, row["val_loss"])
        steplog.epoch(state, row, self.spec.epochs)
        self._save_model(LAST)
        state.history = steplog.metrics.rows
        state.epoch += 1
        state.position = 0
        state.sums = dict.fromkeys(LOSS_SUMS, 0.0)
        self._save_state(state, steplog.elapsed(state))

    def _track_best(self, state: TrainingState, val_loss: float) -> None:
        """Save the epoch's weights as best/ when its validation loss is the lowest so far."""
        if not math.isfinite(val_loss):
            if self.main:
                log.warning(
                    "epoch %d: the validation loss is not finite (%s); it cannot be the best",
                    state.epoch,
                    val_loss,
                )
        elif state.best_val is None or val_loss < state.best_val:
            state.best_val, state.best_epoch = val_loss, state.epoch
            self._save_model(BEST)

    def _finish(self, state: TrainingState, elapsed: float, steplog: StepLog) -> PreTrainedModel:
        """Process 0: the kept model, and training.json written and sent to the trackers."""
        if not self.main:  # process 0 alone keeps and saves the model
            return self.student.eval()
        if state.non_finite_steps:
            log.warning(
                "distill (%s): %d of %d steps had a non-finite loss or gradient and updated "
                "nothing",
                self.spec.objective,
                state.non_finite_steps,
                state.step,
            )
        keep, kept, kept_epoch = self._keep(state)
        model = self._kept_model(kept)
        summary = self._summary(state, keep, kept, kept_epoch, elapsed)
        write_json(summary, self.work / TRAINING)
        steplog.summary(summary)
        return model.eval()

    def _keep(self, state: TrainingState) -> tuple[str, str, int | None]:
        """(keep, the kept folder, its epoch): `spec.keep`, or last without a best epoch."""
        keep = self.spec.keep
        if keep == "best" and state.best_epoch is None:
            log.warning(
                "keep: best, but no group was held out for validation (or no epoch had a finite "
                "validation loss); keeping the last epoch"
            )
            keep = "last"
        kept_epoch = state.best_epoch if keep == "best" else self.spec.epochs
        kept = BEST if kept_epoch != self.spec.epochs else LAST
        if kept == BEST:
            log.info(
                "keeping epoch %d (validation loss %.5f), not the last", kept_epoch, state.best_val
            )
        return keep, kept, kept_epoch

    def _summary(
        self, state: TrainingState, keep: str, kept: str, kept_epoch: int | None, elapsed: float
    ) -> dict[str, Any]:
        cache = self.cache
        return training_summary(
            self.spec,
            state,
            run=dict(
                groups_train=len(self.train_idx),
                groups_validation=len(self.val_idx),
                groups_with_counterfactuals=sum(
                    bool(self.encoded[i].counterfactuals) for i in self.train_idx
                ),
                steps_per_epoch=self.steps_per_epoch,
            ),
            kept=dict(keep=keep, kept=kept, kept_epoch=kept_epoch),
            environment={
                "elapsed_s": round(elapsed, 3),
                "device": str(self.device),
                "processes": self.processes,
                "threads": torch.get_num_threads(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "teacher_cache": (
                    {"path": str(cache.path), **cache.identity()} if cache is not None else None
                ),
                "fingerprint": self.fingerprint,
            },
        )


def distill(
    teacher: PreTrainedModel | None,
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: Sequence[DistillGroup],
    spec: DistillSpec,
    threads: int | None = None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    teacher_cache: TeacherCache | None = None,
    tracking: RunPlan | None = None,
) -> PreTrainedModel:
    """Train `student` toward `teacher` (or on the responses, for `objective="ce"`); return it.

    `tokenizer` is the student's; `teacher_tokenizer`, when given, is checked against it
    (`check_tokenizers`). The teacher may be None for "ce", and for "kd" when `teacher_cache`
    (`leafpipe.distill.teacher_cache`, built by the teacher_logits stage) holds its top-k log-probs
    of every sample of `groups`: the loss then uses those (`kd_loss_sum(..., teacher_topk=...)`) and
    the teacher is never run; "ce" ignores the cache. Each epoch the training samples (every
    original and counterfactual, or each original with one drawn counterfactual:
    `spec.counterfactuals`) are shuffled and cut into length-grouped steps
    (`data.epoch_plan`); a step accumulates `global_batch / micro_batch` micro-batches.
    Order and draws are functions of (seed, epoch), so λ = 0 and groups stripped of their
    counterfactuals train on exactly the same batches.

    `work_dir` holds the resumable state, the best/ and last/ checkpoints, metrics.csv and
    training.json (docs/data-schemas.md); a state found there from the same settings, data and
    models is resumed, any other state is discarded. Without `work_dir` a temporary folder is
    used and removed. `on_step(step, metrics_row)` runs after each optimiser step (and after
    that step's checkpoint). The returned model holds the kept weights (`spec.keep`), merged
    when LoRA was used, in eval mode, on the training device; the teacher is frozen and moved
    to that device too (in bf16 on a GPU). `threads` sets torch's CPU thread count. `tracking`
    names the run its metrics and summary go to besides metrics.csv and training.json (process 0
    only; none without it).
    """
    if not groups:
        raise ValueError("no samples to distill")
    if spec.objective == "kd" and teacher is None and teacher_cache is None:
        raise ValueError("objective 'kd' needs a teacher model or a teacher top-k cache")
    if spec.objective == "kd" and teacher_cache is not None:
        teacher = None  # the cache stands in for it
    check_tokenizers(tokenizer, teacher_tokenizer)
    check_heads(student, teacher if spec.objective == "kd" else None, tokenizer)
    if spec.lora is not None:
        require_peft()
    if spec.objective == "kd" and spec.kd.backend == "liger":
        check_liger_run(student, teacher)
    if threads is not None:
        torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="leafpipe-distill-"))
        return _Trainer(
            teacher, student, tokenizer, groups, spec, Path(work_dir), on_step, teacher_cache
        ).run(tracking)
