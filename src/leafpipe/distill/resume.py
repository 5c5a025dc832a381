"""Checkpoint I/O of a run: start fresh or resume from the work folder's state, save the state
and the best/ and last/ models, and bring the kept weights back at the end.

`Checkpointing` is that phase of `leafpipe.distill.trainer._Trainer`; the file layout and the
state itself are `leafpipe.distill.checkpoints`'.
"""

from __future__ import annotations

import logging

import torch

from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import (
    BEST,
    STATE,
    STATE_SHARDS,
    SavedState,
    TrainingState,
    clear_work,
    load_state,
    quiet_saves,
    rng_state,
    save_state,
)
from leafpipe.distill.sharded_state import load_sharded_state, save_sharded_state
from leafpipe.files.atomic import atomic_path

log = logging.getLogger("leafpipe.distill.trainer")  # the trainer's log lines keep its name


class Checkpointing:
    """The checkpoint phase: what a run saves, resumes from and keeps."""

    def _start(self) -> TrainingState:
        """The state to train from: the work folder's, when it is this run's, else a new one."""
        self.work.mkdir(parents=True, exist_ok=True)
        state = self._load()
        parallel.barrier()  # every process has read the state before process 0 clears it
        if state is None:
            if self.main:
                self._note_other_kind()
                clear_work(self.work)
            return TrainingState()
        state.resumed.append(state.step)
        log.info(
            "resuming from %s at step %d (epoch %d, step %d of it)",
            self.work / self._state_name(),
            state.step,
            state.epoch,
            state.position,
        )
        return state

    def _state_name(self) -> str:
        """Where this run keeps its state: state-shards/ when sharded (each process writes its
        shards), else state.pt."""
        return STATE_SHARDS if self.sharded is not None else STATE

    def _load(self) -> TrainingState | None:
        """The saved state's position, with the weights, optimiser and RNG states restored from
        it; None, restoring nothing, when there is no state of this run."""
        if self.sharded is not None:
            return load_sharded_state(
                self.work,
                fingerprint=self.fingerprint,
                rank=self.rank,
                student=self.sharded,
                optimizer=self.optimizer,
            )
        saved = load_state(self.work, fingerprint=self.fingerprint, rank=self.rank)
        if saved is None:
            return None
        self._restore(saved)
        return saved.state

    def _note_other_kind(self) -> None:
        """Say why a state of the other kind (sharded or not) is not resumed."""
        other = STATE if self.sharded is not None else STATE_SHARDS
        if (self.work / other).exists():
            log.warning(
                "%s is the state of a run %s; this run keeps its state in %s, so it starts afresh",
                self.work / other,
                "without fsdp (or of a version before state format 3)"
                if other == STATE
                else "with fsdp",
                self._state_name(),
            )

    def _save_model(self, name: str) -> None:
        """save_pretrained of the student (its LoRA adapter, with LoRA) and the tokenizer.

        Written by process 0; every process takes part when the student is sharded.
        """
        full = {"state_dict": self.sharded.model_state()} if self.sharded is not None else {}
        if not self.main:
            return
        with atomic_path(self.work / name, directory=True) as tmp, quiet_saves():
            (self.peft or self.student).save_pretrained(tmp, **full)
            self.tokenizer.save_pretrained(tmp)

    def _save_state(self, state: TrainingState, elapsed: float) -> None:
        """Every process takes part (its RNG states are saved too, its shards when sharded);
        process 0 alone writes state.pt.

        `elapsed`: the run's seconds so far, this session's included."""
        rngs = parallel.gather_objects(rng_state())
        if self.sharded is not None:
            save_sharded_state(
                self.work,
                state,
                fingerprint=self.fingerprint,
                student=self.sharded,
                optimizer=self.optimizer,
                elapsed=elapsed,
                rng=rngs,
            )
        elif self.main:
            save_state(
                self.work,
                state,
                fingerprint=self.fingerprint,
                trainable=dict(self.params),
                optimizer=self.optimizer.state_dict(),
                elapsed=elapsed,
                rng=rngs,
            )
        parallel.barrier()

    def _restore(self, saved: SavedState) -> None:
        """Weights and optimiser state from state.pt (every process reads all of it)."""
        with torch.no_grad():
            named = dict(self.params)
            for name, value in saved.trainable.items():
                named[name].copy_(value)
        self.optimizer.load_state_dict(saved.optimizer)

    def _restore_best(self) -> None:
        """Load the weights saved in best/ into the (unsharded) student."""
        path = self.work / BEST
        if self.peft is not None:
            from peft.utils import load_peft_weights, set_peft_model_state_dict

            set_peft_model_state_dict(
                self.peft, load_peft_weights(str(path), device=str(self.device))
            )
            return
        best = type(self.student).from_pretrained(str(path), dtype=torch.float32)
        self.student.load_state_dict(best.state_dict())

    def _kept_model(self, kept: str) -> torch.nn.Module:
        """The model holding the kept weights (`kept`: BEST or LAST), merged with LoRA."""
        if self.sharded is not None:
            # The weights are spread over the processes; the kept checkpoint holds them whole.
            return type(self.student).from_pretrained(str(self.work / kept), dtype=torch.float32)
        if kept == BEST:
            self._restore_best()
        return self.peft.merge_and_unload() if self.peft is not None else self.student
