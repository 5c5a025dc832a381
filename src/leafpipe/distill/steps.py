"""One optimiser step, and the validation loss: the forward and backward passes of a process's
share of a step, the weighting of the loss terms, gradient summing, clipping and the update.

`StepRunner` is the step phase of `leafpipe.distill.trainer._Trainer`; it reads the parts that
`leafpipe.distill.parts.TrainerParts` built.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from leafpipe.distill import parallel
from leafpipe.distill.checkpoints import LOSS_SUMS
from leafpipe.distill.data import Step, n_trained, rank_share, sample_of, validation_plan
from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.distill.kd_loss import ce_loss_sum, kd_loss_sum
from leafpipe.distill.objective import combined_loss, term_of, term_weights, terms
from leafpipe.distill.topk import TopK
from leafpipe.text.batching import Batch, collate, pack
from leafpipe.text.templates import EncodedSample

Pass = tuple[list[EncodedSample], str | None]  # a forward pass: its samples, "orig" or "cf"


class StepRunner:
    """The step phase: losses, passes, one optimiser step, the validation loss."""

    # The student keeps fp32 master weights; on a GPU its forward runs under bf16 autocast.
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss_sum(self, samples: Sequence[EncodedSample]) -> torch.Tensor:
        """Sum of the per-token loss over the trained tokens of `samples` (fp32 scalar).

        Only the decoders run under autocast; the chunked losses apply the student's head in the
        dtype `kd.head_precision` chooses (bf16 on a GPU by default), the teacher's in its own,
        and do their softmax arithmetic in fp32 (`leafpipe.distill.kd_loss`).
        """
        if self.spec.packing:
            batch, order = pack(samples, self.pad_id)
            samples = [samples[i] for i in order]  # the order of the trained tokens
        else:
            batch = collate(samples, self.pad_id)
        batch = batch.to(self.device)
        target: Any = None
        if self.spec.objective == "kd" and self.cache is not None:
            target = self.cache.gather(samples).to(self.device)
        elif self.spec.objective == "kd":
            with torch.inference_mode():
                target = response_hidden(
                    self.teacher, batch.input_ids, batch.attention_mask, batch.position_ids
                )
        if self.sharded is not None:  # the whole student side inside one FSDP forward
            return self.sharded(self._student_loss, batch, target)
        return self._student_loss(self.student, batch, target)

    def _student_loss(self, student: PreTrainedModel, batch: Batch, target: Any) -> torch.Tensor:
        """The student's side of `_loss_sum`: `target` is the teacher's hidden states, its cached
        top-k (`TopK`), or None for cross-entropy."""
        with self._autocast():
            hidden = response_hidden(
                student, batch.input_ids, batch.attention_mask, batch.position_ids
            )
        head = output_head(student)
        if self.spec.objective == "ce":
            return ce_loss_sum(
                hidden,
                head,
                batch.input_ids,
                batch.target_mask,
                self.spec.kd.chunk_tokens,
                self.spec.kd.head_precision,
            )
        if isinstance(target, TopK):
            return kd_loss_sum(
                hidden, head, None, None, batch.target_mask, self.spec.kd, teacher_topk=target
            )
        # kd_loss_sum reads the teacher's (inference-mode) hidden states under no_grad, detached:
        # they never enter the autograd graph, so they need no clone.
        return kd_loss_sum(
            hidden, head, target, output_head(self.teacher), batch.target_mask, self.spec.kd
        )

    def _passes(self, step: Step) -> list[Pass]:
        """This process's forward passes over its share of `step`: (samples, "orig" or "cf").

        Each micro-batch makes a pass over its originals and one over its counterfactuals, as
        the two kinds are weighted apart. Sharded, every process makes the same passes in the
        same order, since each pass gathers weights collectively: a process with nothing for a
        pass runs it on the step's first sample with term None (weight 0).
        """
        mb = self.spec.micro_batch
        if self.sharded is None:
            shares, mine = [rank_share(step, self.rank, self.processes, mb)], 0
        else:
            shares, mine = (
                [rank_share(step, r, self.processes, mb) for r in range(self.processes)],
                self.rank,
            )
        filler = [sample_of(self.encoded, step[0][0][0])]
        passes: list[Pass] = []
        for k in range(max(len(share) for share in shares)):
            micro = shares[mine][k] if k < len(shares[mine]) else []
            planned = {
                term_of(ref)
                for share in shares
                if k < len(share)
                for item in share[k]
                for ref in item
            }
            for term in ("orig", "cf"):
                if term in planned:
                    samples = [
                        sample_of(self.encoded, ref)
                        for item in micro
                        for ref in item
                        if term_of(ref) == term
                    ]
                    passes.append((samples, term) if samples else (filler, None))
        return passes

    def _train_step(self, step: Step) -> dict[str, Any]:
        """One optimiser step over this process's share of it; returns the step's loss terms and
        counts."""
        n_orig, n_cf = self._step_tokens(step)
        sum_orig, sum_cf = self._backward(step, n_orig, n_cf)
        out = dict(orig=sum_orig, orig_tokens=n_orig, cf=sum_cf, cf_tokens=n_cf)
        # max_norm=inf measures the norm for the metrics and scales gradients by exactly 1.
        limit = self.spec.max_grad_norm or math.inf
        grad_norm = parallel.local_value(
            torch.nn.utils.clip_grad_norm_([p for _, p in self.params], limit)
        )
        # The norm covers every gradient entry of the step (summed over the processes, or of the
        # whole sharded model), so it is finite only when all of them are.
        bad = not (math.isfinite(sum_orig) and math.isfinite(sum_cf) and math.isfinite(grad_norm))
        # All processes must skip together, or their weights would part (and FSDP would hang).
        bad = parallel.sum_values([float(bad)], self.device)[0] > 0
        if not bad:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {**out, "grad_norm": grad_norm, "non_finite": bad}

    def _step_tokens(self, step: Step) -> tuple[int, int]:
        """The trained tokens of the whole step (on every process) of each term: the
        normalisers, counted first, so that summed gradients are the whole step's."""
        every = [ref for micro in step for item in micro for ref in item]
        n_orig = sum(
            n_trained(sample_of(self.encoded, ref)) for ref in every if term_of(ref) == "orig"
        )
        n_cf = sum(n_trained(sample_of(self.encoded, ref)) for ref in every if term_of(ref) == "cf")
        return n_orig, n_cf

    def _backward(self, step: Step, n_orig: int, n_cf: int) -> tuple[float, float]:
        """Accumulate the step's weighted gradients, summed over the processes; returns the
        step's loss sums of each term (over all processes)."""
        w_orig, w_cf = term_weights(n_orig, n_cf, self.spec.lam, self.spec.counterfactuals)
        weight = {"orig": w_orig, "cf": w_cf, None: 0.0}
        # FSDP averages gradients over the processes; scaling by their number makes it a sum.
        scale = self.processes if self.sharded is not None else 1
        sums = {"orig": 0.0, "cf": 0.0}
        for samples, term in self._passes(step):
            # One backward pass per forward: only one graph is alive at a time.
            loss = self._loss_sum(samples)
            (loss * (weight[term] * scale)).backward()
            if term is not None:
                sums[term] += loss.item()
        if self.sharded is None:
            parallel.sum_gradients([p for _, p in self.params])
        sum_orig, sum_cf = parallel.sum_values([sums["orig"], sums["cf"]], self.device)
        return sum_orig, sum_cf

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """The training loss on the held-out groups' samples (`validation_plan`), normalised over
        all of them."""
        self.student.eval()
        spec = self.spec
        held_out = validation_plan(
            self.encoded, self.val_idx, seed=spec.seed, lam=spec.lam, mode=spec.counterfactuals
        )
        totals = dict.fromkeys(LOSS_SUMS, 0.0)
        for samples, term in self._passes(held_out):
            loss = self._loss_sum(samples).item()
            if term is not None:
                totals[term] += loss
                totals[f"{term}_tokens"] += sum(n_trained(s) for s in samples)
        totals = dict(
            zip(LOSS_SUMS, parallel.sum_values([totals[k] for k in LOSS_SUMS], self.device))
        )
        self.student.train()
        orig, cf = terms(totals)
        return dict(
            val_loss=self._total(totals),
            val_orig=orig,
            val_cf=cf,
            val_tokens=int(totals["orig_tokens"] + totals["cf_tokens"]),
        )

    def _total(self, sums: dict[str, float]) -> float:
        return combined_loss(sums, self.spec.lam, self.spec.counterfactuals)
