"""The work folder of a distillation run (docs/data-schemas.md, "Distillation checkpoints"):
the resumable state, the metrics, and the final model folder made from them.

A state is resumed only by a run with the same fingerprint (settings, data, validation split and
models), which therefore computes exactly what the saved run computed; with the RNG states
restored too, a resumed run ends with the same weights, bit for bit on a CPU, as one that was
never interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.distill.data import EncodedGroup
from leafpipe.files.atomic import atomic_path, write_json, write_text
from leafpipe.tracking.runs import TrackedRun

log = logging.getLogger(__name__)

# Files and folders of the work folder (docs/data-schemas.md).
STATE = "state.pt"
STATE_SHARDS = "state-shards"  # a sharded (FSDP) run's state: `leafpipe.distill.sharded_state`
BEST, LAST = "best", "last"
METRICS = "metrics.csv"
TRAINING = "training.json"
TENSORBOARD = "tensorboard"
_WORK_ENTRIES = (STATE, STATE_SHARDS, BEST, LAST, METRICS, TRAINING, TENSORBOARD)
# Bump when the state's layout changes: an old state is then not resumed. 3: a sharded run keeps
# its state in state-shards/ (one file per process), no longer in a state.pt gathered on process 0.
STATE_FORMAT = 3

METRIC_COLUMNS = (
    "kind",
    "epoch",
    "step",
    "lr",
    "loss",
    "loss_orig",
    "loss_cf",
    "grad_norm",
    "non_finite",
    "tokens_orig",
    "tokens_cf",
    "val_loss",
    "val_orig",
    "val_cf",
    "val_tokens",
    "elapsed_s",
)

LOSS_SUMS = ("orig", "orig_tokens", "cf", "cf_tokens")  # loss sums and trained tokens of each term


@dataclass
class TrainingState:
    """What a resumed run needs besides weights and optimiser: where it is and what it saw."""

    epoch: int = 1  # the epoch being trained (1-based); epochs + 1 once training is done
    position: int = 0  # optimiser steps of that epoch already taken
    step: int = 0  # optimiser steps taken in all
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSS_SUMS, 0.0))
    best_val: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    resumed: list[int] = field(default_factory=list)  # steps at which a run resumed
    non_finite_steps: int = 0  # steps whose loss or gradient was not finite: no update was applied


# --- the resumable state --------------------------------------------------------------------


def weights_digest(model: PreTrainedModel, h: Any) -> None:
    """Feed a sample of every parameter into `h`: cheap even for billions of weights, and any
    retraining of a model changes it."""
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)][:1024]
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(sample.float().cpu().numpy().tobytes())


def run_fingerprint(
    settings: Mapping[str, Any],
    val_idx: Sequence[int],
    encoded: Sequence[EncodedGroup],
    models: Sequence[PreTrainedModel],
    extra: Any = None,
) -> str:
    """Settings, data (as token ids), split and the models that shape the loss: a state is
    resumed only by a run that would compute exactly what the saved run computed.

    `settings` is the `DistillSpec` as a dict; its cadences (`log_every`, `checkpoint_every`) and
    `collective_timeout_min` change no weights and are left out. `extra` (JSON-able) is anything
    else that shapes the loss, e.g. the identity of a teacher top-k cache that replaces the teacher
    model.
    """
    h = hashlib.sha256()
    settings = {
        k: v
        for k, v in settings.items()
        if k not in ("log_every", "checkpoint_every", "collective_timeout_min")
    }
    h.update(
        json.dumps([STATE_FORMAT, settings, list(val_idx)], sort_keys=True, default=str).encode()
    )
    for enc in encoded:
        for sample in (enc.original, *enc.counterfactuals):
            h.update(json.dumps([sample.input_ids, sample.loss_mask()]).encode())
        h.update(b"|")
    for model in models:
        weights_digest(model, h)
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states: the CPU's, and that of the GPU it trains on when it has one.

    Only that GPU's (the current CUDA device: a data-parallel process's own, set by
    `data_parallel.setup`), since it is the only one whose generator training draws from;
    the states of every visible GPU would tie the checkpoint to the number of GPUs the saving
    run saw, and a resume that sees fewer could not restore them.
    """
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def progress_record(
    state: TrainingState,
    *,
    fingerprint: str,
    elapsed: float,
    rng: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The state less the weights and optimiser: `state`, the format and fingerprint that decide
    whether it is resumed, and the RNG states.

    `rng` holds every process's `rng_state()` in rank order (default: this process's alone).
    """
    return {
        "format": STATE_FORMAT,
        "fingerprint": fingerprint,
        "rng": list(rng) if rng is not None else [rng_state()],
        **asdict(state),
        "elapsed": elapsed,
    }


def save_state(
    work: Path,
    state: TrainingState,
    *,
    fingerprint: str,
    trainable: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    elapsed: float,
    rng: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Write state.pt atomically: the `progress_record`, the `trainable` weights and the
    optimiser's state dict."""
    payload = {
        **progress_record(state, fingerprint=fingerprint, elapsed=elapsed, rng=rng),
        "trainable": {n: t.detach().cpu() for n, t in trainable.items()},
        "optimizer": dict(optimizer),
    }
    with atomic_path(work / STATE) as tmp:
        torch.save(payload, tmp)


# A progress record's keys besides TrainingState's fields (see progress_record)
_PROGRESS_KEYS = {"format", "fingerprint", "rng"}
# state.pt's keys besides those of its progress record (see save_state)
_TENSOR_KEYS = {"trainable", "optimizer"}


@dataclass
class SavedState:
    """What state.pt holds for the trainer to restore: weights, optimiser state and position."""

    state: TrainingState
    trainable: dict[str, torch.Tensor]
    optimizer: dict[str, Any]


def load_state(work: Path, *, fingerprint: str, rank: int = 0) -> SavedState | None:
    """Read state.pt and restore process `rank`'s RNG states from it; None, restoring nothing,
    when `read_progress` rejects it."""
    saved = read_progress(work / STATE, fingerprint=fingerprint, rank=rank, more=_TENSOR_KEYS)
    if saved is None:
        return None
    return SavedState(training_state(saved), saved["trainable"], saved["optimizer"])


def read_progress(
    path: Path, *, fingerprint: str, rank: int, more: Iterable[str] = ()
) -> dict[str, Any] | None:
    """Read a file holding a `progress_record` (and the keys `more`) and restore process `rank`'s
    RNG states from it; None, restoring nothing, when there is no file, or it has another format
    or fingerprint, or keys this version does not know (never restore part of a state
    silently)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: train afresh rather than fail
        log.warning("cannot read the checkpoint %s (%s); starting afresh", path, err)
        return None
    if saved.get("format") != STATE_FORMAT:
        log.warning(
            "checkpoint %s has state format %s, this version resumes format %d; starting afresh",
            path,
            saved.get("format"),
            STATE_FORMAT,
        )
        return None
    if saved.get("fingerprint") != fingerprint:
        log.warning(
            "checkpoint %s was written with other settings, data or models; starting afresh",
            path,
        )
        return None
    known = _PROGRESS_KEYS | set(more) | {f.name for f in fields(TrainingState)}
    unknown = sorted(set(saved) - known)
    if unknown:  # written by a version that keeps more than this one can restore
        log.warning(
            "checkpoint %s holds fields this version does not know (%s); starting afresh",
            path,
            ", ".join(unknown),
        )
        return None
    if rank < len(saved["rng"]):  # a state saved by fewer processes leaves the others' RNGs be
        _restore_rng(saved["rng"][rank])
    return saved


def training_state(saved: Mapping[str, Any]) -> TrainingState:
    """The `TrainingState` of a progress record; a field missing from it takes its default (a
    state written before the field existed)."""
    return TrainingState(
        **{f.name: saved[f.name] for f in fields(TrainingState) if f.name in saved}
    )


def _restore_rng(rng: dict[str, Any]) -> None:
    """Restore `rng_state()`'s states, the GPU's onto the GPU this process trains on, whichever
    device that is now; a state saved with a GPU and resumed without one (or the other way
    round) restores the CPU's alone, and the resumed run's draws differ from the saved run's."""
    torch.set_rng_state(rng["torch"])
    cuda = torch.cuda.is_available()
    if rng["cuda"] is not None and cuda:
        torch.cuda.set_rng_state(rng["cuda"])
    elif (rng["cuda"] is not None) != cuda:
        log.warning(
            "the checkpoint's RNG state was saved %s a GPU and this run has %s: its random draws "
            "(dropout) differ from those of an uninterrupted run",
            "with" if rng["cuda"] is not None else "without",
            "one" if cuda else "none",
        )


def clear_work(work: Path, names: Iterable[str] = _WORK_ENTRIES) -> None:
    """Remove entries of the work folder (by default all that a run writes); never other files."""
    for name in names:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def quiet_saves() -> Iterator[None]:
    """No "Writing model shards" bar from save_pretrained: the log shows training's own bar."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


# --- metrics --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, ".8g") if isinstance(value, float) else str(value)


class Metrics:
    """metrics.csv (one row per step and per epoch), and each row's numbers to the run's
    trackers (`leafpipe.tracking`: `train/<column>` for a step, `epoch/<column>` for an epoch,
    at the row's optimiser step).

    The rows so far travel in the resumable state; on resume the CSV is rewritten from them, so
    steps done after the last checkpoint and redone after the restart appear once.
    """

    def __init__(
        self,
        work_dir: Path,
        history: list[dict[str, Any]],
        write: bool = True,
        tracked: TrackedRun | None = None,
    ):
        self.rows = list(history)
        self.path = work_dir / METRICS
        self.tracked = tracked
        self._file = None
        if not write:  # a data-parallel process other than 0 keeps the rows only
            return
        lines = [",".join(METRIC_COLUMNS)] + [
            ",".join(_cell(r.get(c)) for c in METRIC_COLUMNS) for r in self.rows
        ]
        write_text("\n".join(lines) + "\n", self.path)
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self._file is None:
            return
        self._file.write(",".join(_cell(row.get(c)) for c in METRIC_COLUMNS) + "\n")
        if self.tracked is not None:
            prefix = "train" if row["kind"] == "step" else "epoch"
            scalars = {f"{prefix}/{name}": row.get(name) for name in METRIC_COLUMNS[3:-1]}
            self.tracked.log_scalars(scalars, row["step"])

    def close(self) -> None:
        """Close metrics.csv; the tracked run is its owner's to finish (it logs the summary
        after the last row)."""
        if self._file is not None:
            self._file.close()


# --- the final model folder -----------------------------------------------------------------


def save_distilled(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    info: Mapping[str, Any] | None = None,
) -> None:
    """Write the final model folder atomically, then tidy the work folder.

    `out_dir` gets the model and tokenizer (save_pretrained), metrics.csv, training.json (with
    `info` merged in) and tensorboard/ when present. Afterwards the work folder keeps only the
    checkpoint that was not kept (best/ when the last epoch was kept, and the other way round),
    when it differs from the kept one; the resumable state is removed, so a rerun starts afresh.
    """
    work, out = Path(work_dir), Path(out_dir)
    training = json.loads((work / TRAINING).read_text(encoding="utf-8"))
    with atomic_path(out, directory=True) as tmp, quiet_saves():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copy2(work / METRICS, tmp / METRICS)
        write_json({**training, **(info or {})}, tmp / TRAINING)
        if (work / TENSORBOARD).is_dir():
            shutil.copytree(work / TENSORBOARD, tmp / TENSORBOARD)
    # best/ and last/ hold different weights only when the best epoch was not the last.
    differ = training["best_epoch"] not in (None, training["settings"]["epochs"])
    clear_work(
        work,
        (
            STATE,
            STATE_SHARDS,
            METRICS,
            TRAINING,
            TENSORBOARD,
            training["kept"],
            *(() if differ else (BEST, LAST)),
        ),
    )
    with contextlib.suppress(OSError):
        work.rmdir()  # only when empty
