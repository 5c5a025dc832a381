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
    SavedState,
    TrainingState,
    clear_work,
    load_state,
    quiet_saves,
    rng_state,
    save_state,
)
from leafpipe.files.atomic import atomic_path

log = logging.getLogger("leafpipe.distill.trainer")  # the trainer's log lines keep its name


class Checkpointing:
    """The checkpoint phase: what a run saves, resumes from and keeps."""

    def _start(self) -> TrainingState:
        """The state to train from: the work folder's, when it is this run's, else a new one."""
        self.work.mkdir(parents=True, exist_ok=True)
        saved = load_state(self.work, fingerprint=self.fingerprint, rank=self.rank)
        parallel.barrier()  # every process has read the state before process 0 clears it
        if saved is None:
            if self.main:
                clear_work(self.work)
            return TrainingState()
        self._restore(saved)
        state = saved.state
        state.resumed.append(state.step)
        log.info(
            "resuming from %s at step %d (epoch %d, step %d of it)",
            self.work / STATE,
            state.step,
            state.epoch,
            state.position,
        )
        return state

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
        """Every process takes part (its RNG states are saved too); process 0 writes.

        `elapsed`: the run's seconds so far, this session's included."""
        rngs = parallel.gather_objects(rng_state())
        if self.sharded is not None:
            trainable, optimizer = (
                self.sharded.model_state(),
                self.sharded.optimizer_state(self.optimizer),
            )
        else:
            trainable, optimizer = dict(self.params), self.optimizer.state_dict()
        if self.main:
            save_state(
                self.work,
                state,
                fingerprint=self.fingerprint,
                trainable=trainable,
                optimizer=optimizer,
                elapsed=elapsed,
                rng=rngs,
            )
        parallel.barrier()

    def _restore(self, saved: SavedState) -> None:
        """Weights and optimiser state from a checkpoint (every process reads all of it)."""
        if self.sharded is not None:
            self.sharded.load_model_state(saved.trainable)
            self.sharded.load_optimizer_state(self.optimizer, saved.optimizer)
            return
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
