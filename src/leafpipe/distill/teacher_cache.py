"""Top-k teacher log-probabilities cached to disk, so the student's job never loads the teacher.

The `teacher_logits` job runs the teacher once over every sample a distillation run could see
(every original and every counterfactual of a data file: with `counterfactuals: all` each is
trained every epoch, with `draw_one` the draws change each epoch) and stores, per trained token
(of a response-level counterfactual, only its later reasoning steps: `EncodedSample.train_from`),
its k largest log-probabilities at the KD temperature (`topk.teacher_topk`). The distill job
then reads them back per micro-batch (`TeacherCache.gather`) and passes them to
`kd_loss_sum(..., teacher_topk=...)`.

Samples are matched by `sample_key`, a hash of the student's token ids and loss mask, never by
position: a cache built from another file, tokenizer or chat template misses samples instead of
silently pairing the wrong rows. File layout: docs/data-schemas.md, "Teacher top-k cache".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from leafpipe.distill.data import DistillGroup, EncodedGroup, n_trained
from leafpipe.distill.heads import output_head, response_hidden
from leafpipe.distill.topk import TopK, teacher_topk
from leafpipe.files.atomic import atomic_path
from leafpipe.text.batching import collate
from leafpipe.text.templates import EncodedSample

log = logging.getLogger(__name__)

CACHE_FORMAT = "1"  # bump when the layout changes


def sample_key(sample: EncodedSample) -> bytes:
    """32-byte SHA-256 of a sample's token ids and loss mask: what the teacher saw and what is
    trained."""
    return hashlib.sha256(json.dumps([sample.input_ids, sample.loss_mask()]).encode()).digest()


def every_sample(encoded: Sequence[EncodedGroup]) -> list[EncodedSample]:
    """Every original and counterfactual, once each (identical samples share a key)."""
    seen: dict[bytes, EncodedSample] = {}
    for group in encoded:
        for sample in (group.original, *group.counterfactuals):
            seen.setdefault(sample_key(sample), sample)
    return list(seen.values())


def _offsets(samples: Sequence[EncodedSample]) -> torch.Tensor:
    """[S + 1] int64: sample i's rows are offsets[i]:offsets[i + 1], one per trained token."""
    offsets = torch.zeros(len(samples) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor([n_trained(s) for s in samples], dtype=torch.int64).cumsum(0)
    return offsets


def teacher_batches(samples: Sequence[EncodedSample], batch_size: int) -> list[list[int]]:
    """The samples' indices `batch_size` at a time, longest samples first so that batches pad
    little: the batches `build_teacher_cache` runs the teacher on."""
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the keys', offsets', indices' and log-probabilities' bytes, in that order.

    The hash reads each tensor's memory where it lies (a NumPy view, no copy: the cache can be tens
    of GB); the bytes are those of `.numpy().tobytes()`, so caches built before keep their digest.
    """
    digest = hashlib.sha256()
    for name in ("keys", "offsets", "indices", "logprobs"):
        digest.update(tensors[name].numpy())
    return digest.hexdigest()


def _place(
    top: TopK,
    idx: Sequence[int],
    offsets: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
) -> None:
    """Copy a batch's top-k rows (samples `idx`, in batch order) to each sample's rows of the
    cache."""
    top_indices, top_logprobs = (
        top.indices.cpu(),
        top.logprobs.cpu(),
    )  # [n, k]: the batch's rows
    row = 0
    for i in idx:
        rows = slice(int(offsets[i]), int(offsets[i + 1]))
        n = rows.stop - rows.start
        indices[rows], logprobs[rows] = (
            top_indices[row : row + n],
            top_logprobs[row : row + n],
        )
        row += n


def _tensors(
    samples: Sequence[EncodedSample],
    offsets: torch.Tensor,
    indices: torch.Tensor,
    logprobs: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The cache file's tensors: the samples' keys, their row offsets, and the rows."""
    keys = np.frombuffer(bytearray(b"".join(sample_key(s) for s in samples)), dtype=np.uint8)
    return {
        "keys": torch.from_numpy(keys).reshape(len(samples), 32),
        "offsets": offsets,
        "indices": indices,
        "logprobs": logprobs,
    }


def _metadata(
    tensors: dict[str, torch.Tensor], k: int, temperature: float, vocab_size: int
) -> dict[str, str]:
    return {
        "format": CACHE_FORMAT,
        "k": str(k),
        "temperature": repr(float(temperature)),
        "vocab_size": str(vocab_size),
        "digest": _digest(tensors),
    }


@torch.no_grad()
def build_teacher_cache(
    teacher: torch.nn.Module,
    samples: Sequence[EncodedSample],
    path: str | os.PathLike[str],
    *,
    k: int,
    temperature: float,
    vocab_size: int,
    pad_id: int,
    batch_size: int,
    chunk_tokens: int,
) -> None:
    """Run `teacher` (as it is: device and dtype are the caller's) over `samples` and write the
    cache.

    Samples are batched as `teacher_batches` groups them; each sample's rows are its trained
    tokens in position order, as `Batch.target_mask` marks them.
    `vocab_size` is the student's: a larger teacher head is truncated to it (`kd_loss`).

    Host memory: the cache itself, indices int32 and log-probabilities fp32 [N, k] (N trained
    tokens, known from the samples before the teacher runs), preallocated and filled batch by batch
    at each sample's rows, plus one batch's top-k on its way in (int64 and fp32 [n, k]); the digest
    reads the arrays in place and `save_file` writes from them, so nothing is copied whole.
    """
    device = next(teacher.parameters()).device
    offsets = _offsets(samples)
    # Token ids fit int32: half of int64.
    indices = torch.empty(int(offsets[-1]), k, dtype=torch.int32)
    logprobs = torch.empty(int(offsets[-1]), k, dtype=torch.float32)
    head = output_head(teacher)
    with tqdm(
        total=len(samples), desc="teacher top-k", file=sys.stderr, dynamic_ncols=True
    ) as progress:
        for idx in teacher_batches(samples, batch_size):
            batch = collate([samples[i] for i in idx], pad_id).to(device)
            with torch.inference_mode():
                hidden = response_hidden(teacher, batch.input_ids, batch.attention_mask)
            top = teacher_topk(
                hidden, head, batch.target_mask, k, temperature, chunk_tokens, vocab_size=vocab_size
            )
            _place(top, idx, offsets, indices, logprobs)
            progress.update(len(idx))
    tensors = _tensors(samples, offsets, indices, logprobs)
    metadata = _metadata(tensors, k, temperature, vocab_size)
    with atomic_path(path) as tmp:
        # safetensors 0.8 writes from the tensors' memory.
        save_file(tensors, str(tmp), metadata=metadata)
    log.info(
        "teacher top-k cache: %d samples, %d tokens, k %d, temperature %g -> %s",
        len(samples),
        int(offsets[-1]),
        k,
        temperature,
        path,
    )


class TeacherCache:
    """A cache file read back: `gather(samples)` gives the `TopK` of a micro-batch in target
    order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"{self.path}: not a teacher top-k cache of format {CACHE_FORMAT} "
                f"(found {meta.get('format')!r}); rebuild it with the teacher_logits stage"
            )
        tensors = load_file(str(self.path))
        self.k = int(meta["k"])
        self.temperature = float(meta["temperature"])
        self.vocab_size = int(meta["vocab_size"])
        self.digest = meta["digest"]
        self.indices, self.logprobs = tensors["indices"], tensors["logprobs"]
        offsets = tensors["offsets"].tolist()
        self.rows = {
            bytes(key.tolist()): (offsets[i], offsets[i + 1])
            for i, key in enumerate(tensors["keys"])
        }

    def identity(self) -> dict[str, object]:
        """What a run's fingerprint and training.json record of the cache."""
        return {
            "k": self.k,
            "temperature": self.temperature,
            "vocab_size": self.vocab_size,
            "digest": self.digest,
        }

    def check(self, groups: Sequence[DistillGroup], encoded: Sequence[EncodedGroup]) -> None:
        """Fail before training if any sample the run could see is missing or has the wrong token
        count."""
        for group, enc in zip(groups, encoded):
            named = [("original", group.original, enc.original)] + [
                (f"counterfactual {j}", pair, cf)
                for j, (pair, cf) in enumerate(zip(group.counterfactuals, enc.counterfactuals))
            ]
            for what, text, sample in named:
                span = self.rows.get(sample_key(sample))
                name = f"the {what} of sample {group.key()!r} (instruction {text[0][:60]!r})"
                if span is None:
                    raise ValueError(
                        f"teacher cache {self.path} has no entry for {name}; it was built from "
                        "other data or another tokenizer: rebuild it with the teacher_logits stage"
                    )
                if span[1] - span[0] != n_trained(sample):
                    raise ValueError(
                        f"teacher cache {self.path} has {span[1] - span[0]} tokens for {name}, "
                        f"which trains {n_trained(sample)}"
                    )

    def gather(self, samples: Sequence[EncodedSample]) -> TopK:
        """The cached rows of `samples`, concatenated in order: [N, k] with N their trained
        tokens."""
        spans = []
        for sample in samples:
            span = self.rows.get(sample_key(sample))
            if span is None:
                raise KeyError(
                    f"teacher cache {self.path} has no entry for a sample of {len(sample)} tokens "
                    f"(key {sample_key(sample).hex()[:16]})"
                )
            spans.append(torch.arange(*span))
        rows = torch.cat(spans) if spans else torch.empty(0, dtype=torch.int64)
        return TopK(self.indices[rows].long(), self.logprobs[rows], self.temperature)
