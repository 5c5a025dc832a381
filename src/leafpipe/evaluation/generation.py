"""Batched generation for evaluation: greedy, or sampled n times per prompt for pass@k.

Prompts are encoded with the same chat template used for training and scoring
(`templates.encode_prompt`), left-padded so every row's next token sits in the last column,
and batched in order of prompt length so little compute goes to padding. Greedy decoding makes
the result independent of batching, which the tests check. Sampling draws each batch from a
generator seeded by (seed, batch index), over a batch plan that depends only on the prompts, so
a run resumed from its partial file (`partial_path`) writes exactly what an uninterrupted run
writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from leafpipe.evaluation.protocols import prompt_parts
from leafpipe.evaluation.sampling import SamplingSpec
from leafpipe.text.templates import encode_prompt

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Use `threads` intra-op threads inside the block (a Snakemake rule's share), then restore."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad on the left by hand, so the caller's tokenizer (its padding side) is never touched."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _fingerprint(
    model: PreTrainedModel, prompts: Sequence[list[int]], settings: Mapping[str, Any]
) -> dict[str, str]:
    """What a partial file must have been written with to be resumed, part by part (the model's
    weights, the prompts as token ids, the settings), so that a refusal can say which changed."""
    from leafpipe.distill.checkpoints import weights_digest

    weights = hashlib.sha256()
    weights_digest(model, weights)
    return {
        "weights": weights.hexdigest(),
        "prompts": _digest(list(prompts)),
        "settings": _digest(dict(settings)),
    }


def _digest(value: Any) -> str:
    """SHA-256 of `value` as canonical JSON: the same value gives the same digest in any run."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _read_partial(path: Path, fingerprint: Mapping[str, str]) -> dict[int, list[dict[str, Any]]]:
    """The batches a killed run finished; a torn last line (killed mid-write) is dropped. None of
    them when the file was written with other weights, prompts or settings (`_fingerprint`): the
    warning names which."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    written = header.get("fingerprint")
    written = written if isinstance(written, dict) else {}  # a torn or older header
    changed = [part for part, value in fingerprint.items() if written.get(part) != value]
    if changed:
        log.warning("%s was written with other %s; generating afresh", path, " and ".join(changed))
        return {}
    done = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break
        done[entry["batch"]] = entry["records"]
    return done


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    max_new_tokens: int,
    batch_size: int,
    threads: int | None = None,
    sampling: SamplingSpec = SamplingSpec(),
    partial_path: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Complete each row's prompt (its `instruction` with the `system`, `history` and `prefix`
    its protocol wrote into it); return `sampling.n` records per row, in input order.

    Generation stops at an end-of-turn token (`end_of_turn_ids`: the tokenizer's eos and the
    model's generation_config's) or at a stop string; `finish_reason` is `stop` then and
    `length` when `max_new_tokens` ran out first, so truncated answers can be told apart from
    wrong ones. With `partial_path`, every finished batch is appended there (JSON lines after a
    header that fingerprints the model's weights, the prompts and the settings); a rerun with the
    same fingerprint skips those batches, and one with another regenerates them all. The caller
    removes the file once the output is safely written.
    """
    eos_ids = end_of_turn_ids(tokenizer, model.generation_config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    prompts = [encode_prompt(tokenizer, row["instruction"], **prompt_parts(row)) for row in rows]
    # Longest first: a batch too big for memory fails in the first minute, not the last.
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]), reverse=True)
    plan = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    # The end-of-turn and pad tokens too: they decide where a record's completion is cut.
    settings = {
        **asdict(sampling),
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "eos_ids": eos_ids,
        "pad_id": pad_id,
    }
    done: dict[int, list[dict[str, Any]]] = {}
    sink = None
    if partial_path is not None:
        done, sink = _resume(Path(partial_path), _fingerprint(model, prompts, settings), len(plan))
    batch = _Batch(model, tokenizer, sampling, max_new_tokens, eos_ids, pad_id)
    try:
        with (
            _torch_threads(threads),
            torch.inference_mode(),
            tqdm(
                total=len(rows),
                initial=sum(len(plan[k]) for k in done),
                desc="generate",
                unit="prompt",
            ) as bar,
        ):
            for k, chunk in enumerate(plan):
                if k in done:
                    continue
                done[k] = batch.records(k, [rows[i] for i in chunk], [prompts[i] for i in chunk])
                if sink is not None:
                    sink.write(json.dumps({"batch": k, "records": done[k]}) + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())
                bar.update(len(chunk))
    finally:
        if sink is not None:
            sink.close()
    position = {i: (k, j) for k, chunk in enumerate(plan) for j, i in enumerate(chunk)}
    return [
        done[position[i][0]][position[i][1] * sampling.n + s]
        for i in range(len(rows))
        for s in range(sampling.n)
    ]


def _resume(
    partial: Path, fingerprint: Mapping[str, str], batches: int
) -> tuple[dict[int, list[dict[str, Any]]], TextIO]:
    """The batches a killed run finished, and the partial file rewritten with them, open for the
    next ones (a torn last line is not carried over)."""
    done = _read_partial(partial, fingerprint)
    if done:
        log.info("resuming generation: %d of %d batches done (%s)", len(done), batches, partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    sink = open(partial, "w", encoding="utf-8")
    sink.write(json.dumps({"fingerprint": fingerprint}) + "\n")
    for k in sorted(done):
        sink.write(json.dumps({"batch": k, "records": done[k]}) + "\n")
    sink.flush()
    return done, sink


def end_of_turn_ids(
    tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None
) -> tuple[int, ...]:
    """The tokens that end a completion, for both backends: the tokenizer's eos, then each eos the
    model's generation_config names, once each. The two differ in real checkpoints (a Qwen2.5 chat
    model's generation_config lists `<|im_end|>` and `<|endoftext|>`, a tokenizer names one of
    them): stopping at the tokenizer's alone can run an answer on past its end.

    Args:
        tokenizer: the model's tokenizer.
        generation_config: a loaded model's `generation_config`, or `saved_generation_config` of
            its folder (vLLM's path, which loads no weights here); None: the tokenizer's alone.
    """
    config_eos = getattr(generation_config, "eos_token_id", None)
    listed = config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]
    found = tuple(dict.fromkeys(i for i in [tokenizer.eos_token_id, *listed] if i is not None))
    if not found:
        raise ValueError(
            "neither the tokenizer nor the model names an eos token: generation would never stop"
        )
    return found


def saved_generation_config(
    model_dir: str | Path, revision: str | None = None
) -> GenerationConfig | None:
    """The generation_config.json of a model folder (or hub id, at `revision`) without loading its
    weights (plain JSON: no remote code); None when it has none, as a model built here may not."""
    try:
        return GenerationConfig.from_pretrained(str(model_dir), revision=revision or "main")
    except OSError:
        return None


def generation_info(
    backend: str,
    tokenizer: PreTrainedTokenizerBase,
    dtype: str,
    stop_token_ids: Sequence[int],
    stop_strings: Sequence[str],
    **backend_settings: Any,
) -> dict[str, Any]:
    """What a generations file was made with (its `.info.json`, docs/data-schemas.md), so the
    report can say per model how its completions were cut: the backend, the weights' dtype, the
    end-of-turn tokens (ids and their text) and stop strings, and the backend's own settings
    (vLLM's `tensor_parallel_size`)."""
    return {
        "backend": backend,
        "dtype": dtype,
        "stop_token_ids": list(stop_token_ids),
        "stop_tokens": [tokenizer.decode([i]) for i in stop_token_ids],
        "stop_strings": list(stop_strings),
        **backend_settings,
    }


def transformers_info(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str]
) -> dict[str, Any]:
    """The generations' info (`generation_info`) of `generate` with `model` and stop strings
    `stop`."""
    eos = end_of_turn_ids(tokenizer, model.generation_config)
    dtype = str(model.dtype).removeprefix("torch.")
    return generation_info("transformers", tokenizer, dtype, eos, stop)


@dataclass(frozen=True)
class _Batch:
    """What every batch of one `generate` call is generated with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    sampling: SamplingSpec
    max_new_tokens: int
    eos_ids: tuple[int, ...]
    pad_id: int

    def records(
        self, k: int, rows: Sequence[Mapping[str, Any]], prompts: Sequence[list[int]]
    ) -> list[dict[str, Any]]:
        """The `sampling.n` records of each row of batch `k`, row by row.

        A sampled batch draws from the global generator seeded by (seed, k), so it draws the
        same whether or not the batches before it were generated in this run.
        """
        sampling, device = self.sampling, self.model.device
        ids, mask = _left_pad(prompts, self.pad_id)
        options: dict[str, Any] = dict(do_sample=False)
        if sampling.temperature > 0:
            torch.manual_seed(sampling.seed * 1_000_003 + k)
            options = dict(
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                num_return_sequences=sampling.n,
            )
        if sampling.stop:
            options.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        out = self.model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=list(self.eos_ids),
            **options,
        )
        new_tokens = out[:, ids.shape[1] :].tolist()
        return [
            _record(
                row,
                prompt,
                new_tokens[j * sampling.n + s],
                self.tokenizer,
                self.eos_ids,
                self.pad_id,
                sampling.stop,
                s,
            )
            for j, (row, prompt) in enumerate(zip(rows, prompts))
            for s in range(sampling.n)
        ]


def _record(
    row: Mapping[str, Any],
    prompt: list[int],
    tokens: list[int],
    tokenizer: PreTrainedTokenizerBase,
    eos_ids: Sequence[int],
    pad_id: int,
    stop: Sequence[str],
    sample: int,
) -> dict[str, Any]:
    """Cut a completion at its first end-of-turn token or stop string; what follows is padding."""
    end = next((i for i, token in enumerate(tokens) if token in eos_ids), None)
    stopped = end is not None
    kept = tokens[: end + 1] if end is not None else tokens
    text = tokenizer.decode(kept, skip_special_tokens=True)
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    if cut >= 0:
        text, stopped = text[:cut], True
        # generate() pads a row that met a stop string; those pads were never generated.
        while kept and kept[-1] == pad_id and pad_id not in eos_ids:
            kept = kept[:-1]
    return completion_record(
        row, sample, text, "stop" if stopped else "length", len(prompt), len(kept)
    )


def completion_record(
    row: Mapping[str, Any],
    sample: int,
    completion: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """One line of a generations file (docs/data-schemas.md), whichever backend wrote it.

    `completion` is the assistant's whole answer: the row's `prefix` (written for the model by its
    protocol, e.g. evalplus' text that opens a python code fence) and then the generated text, so
    that grading sees the code block the prefix opened. `completion_tokens` counts the generated
    tokens only.
    """
    record = {
        "id": row["id"],
        "sample": sample,
        "prompt": row["instruction"],
        "completion": (row.get("prefix") or "") + completion,
        "finish_reason": finish_reason,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }
    if "answer" in row:
        record["reference"] = row["answer"]
    return record
