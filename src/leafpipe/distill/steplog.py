"""The step log of a run: its metrics.csv rows (and the run's trackers, `report_to`, through
`Metrics`), the progress bar and the log lines of each step and epoch.

Kept apart from the steps themselves so that what a run reports can be read (and changed) in
one place; the rows' columns are `leafpipe.distill.checkpoints.METRIC_COLUMNS`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from leafpipe.distill.checkpoints import Metrics, TrainingState
from leafpipe.distill.objective import terms
from leafpipe.distill.spec import DistillSpec
from leafpipe.tracking.runs import RunPlan, start_run

log = logging.getLogger("leafpipe.distill.trainer")  # the trainer's log lines keep its name


def log_start(
    spec: DistillSpec,
    *,
    groups_train: int,
    groups_held_out: int,
    steps_per_epoch: int,
    device: torch.device,
    processes: int,
    sharded: bool,
) -> None:
    log.info(
        "distill (%s): %d training groups, %d held out; %d epochs × %d steps of %d groups "
        "(%d micro-batches of %d); device %s; %d process(es)%s",
        spec.objective,
        groups_train,
        groups_held_out,
        spec.epochs,
        steps_per_epoch,
        spec.global_batch,
        spec.accumulation,
        spec.micro_batch,
        device,
        processes,
        ", the student sharded over them (FSDP2)" if sharded else "",
    )


def _row(
    kind: str, state: TrainingState, loss: float, sums: Mapping[str, Any], **fields: Any
) -> dict[str, Any]:
    """A metrics row of a step or an epoch: where the run is, its loss `loss`, and the per-token
    loss and trained tokens of each term from `sums` (its loss sums and token counts)."""
    orig, cf = terms(sums)
    return dict(
        kind=kind,
        epoch=state.epoch,
        step=state.step,
        loss=loss,
        loss_orig=orig,
        loss_cf=cf,
        tokens_orig=int(sums["orig_tokens"]),
        tokens_cf=int(sums["cf_tokens"]),
        **fields,
    )


class StepLog:
    """The rows, progress bar and log lines of one session of a run (a resumed run starts a new
    session with the rows so far), and its tracked run (`tracking`, process 0 only), which the
    trainer finishes after the summary (`summary`)."""

    def __init__(
        self,
        work: Path,
        state: TrainingState,
        total_steps: int,
        objective: str,
        main: bool,
        tracking: RunPlan | None = None,
    ) -> None:
        self.started = time.monotonic()
        self.total_steps, self.main = total_steps, main
        resumed_at = state.step if state.resumed else None
        self.tracked = start_run(tracking, main=main, resumed_at=resumed_at)
        self.metrics = Metrics(work, state.history, write=main, tracked=self.tracked)
        self.progress = tqdm(
            total=total_steps,
            initial=state.step,
            desc=f"distill {objective}",
            file=sys.stderr,
            dynamic_ncols=True,
            disable=not main,
        )

    def elapsed(self, state: TrainingState) -> float:
        """Seconds the run has trained, earlier sessions included."""
        return state.elapsed + time.monotonic() - self.started

    def close(self) -> None:
        self.progress.close()
        self.metrics.close()

    def summary(self, summary: Mapping[str, Any]) -> None:
        """Send training.json's numbers and labels to the trackers, as `training/<key>`."""
        self.tracked.log_summary({f"training/{k}": v for k, v in summary.items()})

    def step(
        self, state: TrainingState, lr: float, out: dict[str, Any], loss: float, log_every: int
    ) -> dict[str, Any]:
        """Record the step just taken (`out`: its loss sums, counts and gradient norm; `loss`
        its combined loss); returns its metrics row."""
        row = _row(
            "step",
            state,
            loss,
            out,
            lr=lr,
            grad_norm=out["grad_norm"],
            non_finite=int(out["non_finite"]),
            elapsed_s=round(self.elapsed(state), 3),
        )
        orig, cf = row["loss_orig"], row["loss_cf"]
        self.metrics.add(row)
        state.history = self.metrics.rows
        self.progress.update()
        self.progress.set_postfix(epoch=state.epoch, loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
        if state.step % log_every == 0 or state.step == self.total_steps:
            log.info(
                "step %d/%d epoch %d lr %.3e loss %.5f loss_orig %.5f loss_cf %.5f grad_norm %.3f",
                state.step,
                self.total_steps,
                state.epoch,
                lr,
                row["loss"],
                orig,
                cf,
                out["grad_norm"],
            )
        if out["non_finite"] and self.main:
            self._warn_non_finite(state, orig, cf, out["grad_norm"])
        return row

    def _warn_non_finite(
        self, state: TrainingState, orig: float, cf: float, grad_norm: float
    ) -> None:
        log.warning(
            "step %d/%d epoch %d: non-finite loss or gradient (loss_orig %s, "
            "loss_cf %s, grad_norm %s): no update; %d of %d steps so far skipped",
            state.step,
            self.total_steps,
            state.epoch,
            orig,
            cf,
            grad_norm,
            state.non_finite_steps,
            state.step,
        )

    def epoch_row(self, state: TrainingState, loss: float) -> dict[str, Any]:
        """The row of the epoch that ends, its training loss `loss`, before validation."""
        row = _row("epoch", state, loss, state.sums)
        row["non_finite"] = sum(
            r.get("non_finite", 0)
            for r in self.metrics.rows
            if r["kind"] == "step" and r["epoch"] == state.epoch
        )
        return row

    def epoch(self, state: TrainingState, row: dict[str, Any], epochs: int) -> None:
        """Record the epoch's row (validation included) and log it."""
        row["elapsed_s"] = round(self.elapsed(state), 3)
        self.metrics.add(row)
        non_finite = row["non_finite"]
        log.info(
            "epoch %d/%d: train loss %.5f (orig %.5f, cf %.5f)%s%s",
            state.epoch,
            epochs,
            row["loss"],
            row["loss_orig"],
            row["loss_cf"],
            f", validation loss {row['val_loss']:.5f}" if "val_loss" in row else "",
            f"; {non_finite} step(s) skipped as non-finite" if non_finite else "",
        )
