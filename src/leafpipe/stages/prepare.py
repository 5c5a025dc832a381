"""Stages that make the inputs: the confounder world, a tokenizer, pre-trained or imported
models, the checked corpus."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leafpipe.config import local_dataset_files
from leafpipe.files.atomic import read_jsonl, write_json, write_jsonl
from leafpipe.files.provenance import write_parquet
from leafpipe.models.hub_options import hub_options
from leafpipe.stages.common import _pick, _threads, log

if TYPE_CHECKING:
    from leafpipe.data.built_corpus import TakenCorpus

# A role's keys that are not its architecture: where its weights come from (the workflow's),
# whether its code may run (the loader's) and its pre-training (TrainSpec's).
MODEL_NOT_FOR = ("path", "gguf", "derive", "trust_remote_code", "train")


def world(config: dict[str, Any], out_dir: str | Path) -> None:
    from leafpipe.data.world import WorldConfig, make_world

    splits = make_world(_pick(WorldConfig, config["world"]))
    for name, rows in splits.items():
        n = write_jsonl(rows, Path(out_dir) / f"{name}.jsonl", inputs=())  # its rule has none
        log.info("world split %s: %d rows", name, n)


def tokenizer(config: dict[str, Any], corpora: Sequence[str | Path], out_dir: str | Path) -> None:
    from leafpipe.text.tokenizer import save_tokenizer, train_tokenizer

    texts = [
        r[f] for path in corpora for r in read_jsonl(path) for f in ("instruction", "response")
    ]
    tok = train_tokenizer(texts, config["tokenizer"]["vocab_size"])
    save_tokenizer(tok, out_dir)
    log.info("tokenizer: %d tokens from %d texts", len(tok), len(texts))


def pretrain(
    config: dict[str, Any],
    role: str,
    tokenizer_dir: str | Path,
    train_path: str | Path,
    out_dir: str | Path,
    threads: int | None = None,
) -> None:
    from leafpipe.models.pretrain import (
        ModelSpec,
        TrainSpec,
        build_model,
        save_model,
        train_lm,
    )
    from leafpipe.text.tokenizer import load_tokenizer

    _threads(threads)
    spec = config["models"][role]
    tok = load_tokenizer(tokenizer_dir)
    model = build_model(_pick(ModelSpec, spec, not_for=MODEL_NOT_FOR), tok, seed=config["seed"])
    log.info("pre-training %s: %.2fM parameters", role, model.num_parameters() / 1e6)
    train = _pick(TrainSpec, {**spec["train"], "seed": config["seed"]})
    train_lm(model, tok, read_jsonl(train_path), train)
    save_model(model, tok, out_dir)


def import_gguf(config: dict[str, Any], role: str, out_dir: str | Path) -> None:
    """A role's GGUF checkpoint (models.<role>.gguf) as a float32 safetensors folder."""
    from leafpipe.models.pretrained import gguf_path
    from leafpipe.models.pretrained import import_gguf as convert

    convert(gguf_path(config["models"][role]["gguf"]), out_dir)


def derive_model(
    config: dict[str, Any], role: str, parent_dir: str | Path, out_dir: str | Path
) -> None:
    """A role's model cut from another's decoder layers (models.<role>.derive)."""
    from leafpipe.models.pretrained import derive_student

    spec = config["models"][role]["derive"]
    derive_student(
        parent_dir,
        spec["layers"],
        out_dir,
        **hub_options(config, spec["from"]),
    )


def _context_check(config: dict[str, Any], tokenizer_dir: str | Path | None) -> Any:
    """A row -> its chat-rendered length in student tokens, when corpus.max_tokens asks for a
    cutoff; None without one."""
    if config["corpus"]["max_tokens"] is None:
        return None
    if not tokenizer_dir:
        raise ValueError(
            "corpus.max_tokens is set, but no student tokenizer was given to count tokens with"
        )
    from leafpipe.text.templates import encode_sample
    from leafpipe.text.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir, **hub_options(config, "student"))
    return lambda row: len(
        encode_sample(tok, row["instruction"], row["response"], system=row.get("system")).input_ids
    )


def _read_corpus_file(
    spec: dict[str, Any], corpus_file: str | Path, count_tokens: Any
) -> TakenCorpus:
    """A corpus file, checked row by row."""
    from leafpipe.data.built_corpus import TakenCorpus
    from leafpipe.data.corpus import read_corpus

    read = read_corpus(
        corpus_file,
        on_invalid=spec["on_invalid"],
        count_tokens=count_tokens,
        max_tokens=spec["max_tokens"],
    )
    return TakenCorpus(read.rows, read.skipped, str(corpus_file), read.input_rows)


def _dataset_corpus(spec: dict[str, Any], count_tokens: Any) -> TakenCorpus:
    """The rows corpus.dataset chooses, checked as a corpus file's rows are; a dataset that
    cannot be had here is an error saying what to do."""
    from leafpipe.data.built_corpus import corpus_from_dataset
    from leafpipe.data.hf_dataset import DatasetSpec

    return corpus_from_dataset(
        DatasetSpec.from_config(spec["dataset"]),
        domain=spec["domain"],
        skip=spec["skip"],
        limit=spec["limit"],
        on_invalid=spec["on_invalid"],
        count_tokens=count_tokens,
        max_tokens=spec["max_tokens"],
    )


def _build_corpus(spec: dict[str, Any], held_out_ids: list[Any], count_tokens: Any) -> TakenCorpus:
    """A corpus built from a shipped benchmark or a hub file, which skip unusable rows as
    benchmarks do; the first corpus.skip usable rows are left out."""
    from leafpipe.data.built_corpus import TakenCorpus, corpus_from_benchmark, corpus_from_hub
    from leafpipe.data.corpus import SkippedCorpusRow, too_long

    check = (
        None
        if count_tokens is None
        else lambda row: too_long(row, count_tokens, spec["max_tokens"])
    )
    if spec.get("benchmark"):
        rows, dropped, read_from = corpus_from_benchmark(
            spec["benchmark"],
            skip=spec["skip"],
            limit=spec["limit"],
            held_out_ids=held_out_ids,
            too_long=check,
        )
    else:
        rows, dropped, read_from = corpus_from_hub(
            spec["hub"],
            spec["fields"],
            domain=spec["domain"],
            skip=spec["skip"],
            limit=spec["limit"],
            too_long=check,
        )
    skipped = [
        SkippedCorpusRow(
            file=read_from,
            line=d["line"],
            id=d["row"] if isinstance(d["row"], str) else None,
            field=None,
            reason=d["reason"],
        )
        for d in dropped
    ]
    passed_over = {"corpus.skip": spec["skip"]} if spec["skip"] else {}
    read = len(rows) + len(skipped) + spec["skip"]
    return TakenCorpus(rows, skipped, read_from, read, passed_over)


def corpus(
    config: dict[str, Any],
    out_path: str | Path,
    info_path: str | Path,
    skipped_path: str | Path,
    held_out: Sequence[str | Path] = (),
    corpus_file: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
) -> None:
    """The corpus every later rule reads, each row read either kept or listed with its reason.

    A corpus file (`corpus_file`: the user's corpus.path or the world's split) is checked row by
    row (corpus.on_invalid decides between an error and a skipped row); a corpus built from a
    shipped benchmark (refusing any row that is also in a `held_out` evaluation file) or a hub
    file skips unusable rows, as benchmarks do; the rows corpus.dataset chooses are checked as a
    file's are. With corpus.max_tokens, longer samples are invalid too. info.json counts the rows
    left out on purpose by reason (corpus.skip, corpus.limit, the dataset's filter and sample).
    """
    from leafpipe.data.corpus import skipped_frame

    spec = config["corpus"]
    count_tokens = _context_check(config, tokenizer_dir)
    held_out_ids = [row["id"] for path in held_out for row in read_jsonl(path)]
    if corpus_file:
        taken = _read_corpus_file(spec, corpus_file, count_tokens)
    elif spec.get("dataset"):
        taken = _dataset_corpus(spec, count_tokens)
    else:
        taken = _build_corpus(spec, held_out_ids, count_tokens)
    # What decided which rows were kept: the rule's inputs (a hub tokenizer is not recorded).
    decided_by = [
        *([corpus_file] if corpus_file else []),
        *held_out,
        *([tokenizer_dir] if count_tokens is not None else []),
        *local_dataset_files(spec.get("dataset")),
    ]
    write_jsonl(taken.rows, out_path, inputs=decided_by)
    write_parquet(skipped_frame(taken.skipped), skipped_path, inputs=decided_by)
    write_json(
        {
            "source": taken.source,
            "rows_read": taken.read,
            "rows": len(taken.rows),
            "skipped": len(taken.skipped),
            "left_out": taken.left_out,
            "shortfall": taken.shortfall,
            "held_out_checked": len(held_out_ids),
        },
        info_path,
        inputs=decided_by,
    )
    for label, missing in taken.shortfall.items():
        log.warning("corpus: the sample's %s lacks %d of the rows asked for", label, missing)
    log.info(
        "corpus: %d rows of %s kept, %d skipped (%s), left out: %s",
        len(taken.rows),
        taken.source,
        len(taken.skipped),
        skipped_path,
        taken.left_out or "none",
    )
