"""One function per pipeline stage: files in, files out.

The Snakemake scripts and the `leafpipe` command line both call these, so a rule and its
hand-run equivalent can never drift apart. Every output is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from leafpipe.atomic_io import atomic_path, read_jsonl, write_json, write_jsonl
from leafpipe.provenance import read_parquet, write_parquet
from leafpipe.variants import MODEL_LABELS, NOT_LEAF, VARIANT_LEVEL, VARIANT_OBJECTIVE

log = logging.getLogger("leafpipe")


def _pick(cls: type, values: dict[str, Any]) -> Any:
    """Build a spec dataclass from the config keys it knows."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def trusts_remote_code(config: dict[str, Any], model: str) -> bool:
    """Whether a model's own Python code may run: only if its role's config says so explicitly.
    A distilled variant is a student, and so is trusted exactly as far as the student."""
    role = "teacher" if model == "teacher" else "student"
    return bool(config.get("models", {}).get(role, {}).get("trust_remote_code", False))


def load_model(
    path: str | Path, dtype: torch.dtype = torch.float32, *, trust_remote_code: bool = False, **options: Any
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a folder or hub id."""
    from transformers import AutoModelForCausalLM

    from leafpipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=trust_remote_code, **options
    )
    return model, tokenizer


def load_placed_model(path: str | Path, *, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A model in eval mode on the job's GPUs, which are all the GPUs it sees (`leafpipe.devices`
    claimed them): in bf16, whole on one, split layer by layer over several (a 70B teacher needs
    about four 80 GB GPUs); in float32 on the CPU without any.

    Weights load straight onto the GPUs. Over several, `device_map="balanced"` gives each GPU an
    equal share of the layers, so each keeps the same room for activations, and the memory budget
    names the GPUs alone: a model too large for them is refused (ValueError) instead of having
    layers offloaded to host RAM or disk and read again on every forward pass, as "auto" would.
    """
    gpus = torch.cuda.device_count()
    if not gpus:
        model, tok = load_model(path, torch.float32, trust_remote_code=trust_remote_code)
        return model.eval(), tok
    placement: dict[str, Any] = {"device_map": {"": 0}}
    if gpus > 1:
        placement = {"device_map": "balanced", "max_memory": {i: torch.cuda.mem_get_info(i)[0] for i in range(gpus)}}
    model, tok = load_model(path, torch.bfloat16, trust_remote_code=trust_remote_code, **placement)
    offloaded = sorted({str(d) for d in getattr(model, "hf_device_map", {}).values()} & {"cpu", "disk"})
    if offloaded:
        raise ValueError(f"{path} does not fit in the free memory of the job's {gpus} GPU(s): parts of it "
                         f"would run from {' and '.join(offloaded)}; give its rule more GPUs (resources: gpu)")
    return model.eval(), tok


def world(config: dict[str, Any], out_dir: str | Path) -> None:
    from leafpipe.world import WorldConfig, make_world

    splits = make_world(_pick(WorldConfig, config["world"]))
    for name, rows in splits.items():
        n = write_jsonl(rows, Path(out_dir) / f"{name}.jsonl")
        log.info("world split %s: %d rows", name, n)


def tokenizer(config: dict[str, Any], corpora: Sequence[str | Path], out_dir: str | Path) -> None:
    from leafpipe.tokenizer import save_tokenizer, train_tokenizer

    texts = [r[f] for path in corpora for r in read_jsonl(path) for f in ("instruction", "response")]
    tok = train_tokenizer(texts, config["tokenizer"]["vocab_size"])
    save_tokenizer(tok, out_dir)
    log.info("tokenizer: %d tokens from %d texts", len(tok), len(texts))


def pretrain(
    config: dict[str, Any], role: str, tokenizer_dir: str | Path, train_path: str | Path,
    out_dir: str | Path, threads: int | None = None,
) -> None:
    from leafpipe.pretrain import ModelSpec, TrainSpec, build_model, save_model, train_lm
    from leafpipe.tokenizer import load_tokenizer

    _threads(threads)
    spec = config["models"][role]
    tok = load_tokenizer(tokenizer_dir)
    model = build_model(_pick(ModelSpec, spec), tok, seed=config["seed"])
    log.info("pre-training %s: %.2fM parameters", role, model.num_parameters() / 1e6)
    train = _pick(TrainSpec, {**spec["train"], "seed": config["seed"]})
    train_lm(model, tok, read_jsonl(train_path), train)
    save_model(model, tok, out_dir)


def import_gguf(config: dict[str, Any], role: str, out_dir: str | Path) -> None:
    """A role's GGUF checkpoint (models.<role>.gguf) as a float32 safetensors folder."""
    from leafpipe.pretrained_models import gguf_path, import_gguf as convert

    convert(gguf_path(config["models"][role]["gguf"]), out_dir)


def derive_model(config: dict[str, Any], role: str, source_dir: str | Path, out_dir: str | Path) -> None:
    """A role's model cut from another's decoder layers (models.<role>.derive)."""
    from leafpipe.pretrained_models import derive_student

    spec = config["models"][role]["derive"]
    derive_student(source_dir, spec["layers"], out_dir, trust_remote_code=trusts_remote_code(config, spec["from"]))


def _context_check(config: dict[str, Any], tokenizer_dir: str | Path | None) -> Any:
    """A row -> its chat-rendered length in student tokens, when corpus.max_tokens asks for a
    cutoff; None without one."""
    if config["corpus"]["max_tokens"] is None:
        return None
    if not tokenizer_dir:
        raise ValueError("corpus.max_tokens is set, but no student tokenizer was given to count tokens with")
    from leafpipe.templates import encode_sample
    from leafpipe.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir, trust_remote_code=trusts_remote_code(config, "student"))
    return lambda row: len(encode_sample(tok, row["instruction"], row["response"]).input_ids)


def corpus(
    config: dict[str, Any], out_path: str | Path, info_path: str | Path, skipped_path: str | Path,
    held_out: Sequence[str | Path] = (), source_path: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
) -> None:
    """The corpus every later rule reads, each row read either kept or listed with its reason.

    A corpus file (`source_path`: the user's corpus.path or the world's split) is checked row by
    row (corpus.on_invalid decides between an error and a skipped row); a corpus built from a
    shipped benchmark (refusing any row that is also in a `held_out` evaluation file) or a hub file
    skips unusable rows, as benchmarks do. With corpus.max_tokens, longer samples are invalid too.
    """
    from leafpipe.corpus_data import corpus_from_benchmark, corpus_from_hub
    from leafpipe.corpus_files import SkippedRow, read_corpus, skipped_frame, too_long

    spec = config["corpus"]
    count_tokens = _context_check(config, tokenizer_dir)
    passed_over = 0
    held_out_ids = [row["id"] for path in held_out for row in read_jsonl(path)]
    if source_path:
        read = read_corpus(source_path, on_invalid=spec["on_invalid"], count_tokens=count_tokens,
                           max_tokens=spec["max_tokens"])
        rows, skipped, source = read.rows, read.skipped, str(source_path)
    else:
        check = None if count_tokens is None else lambda row: too_long(row, count_tokens, spec["max_tokens"])
        if spec.get("benchmark"):
            rows, dropped, source = corpus_from_benchmark(
                spec["benchmark"], skip=spec["skip"], limit=spec["limit"], held_out_ids=held_out_ids,
                too_long=check,
            )
        else:
            rows, dropped, source = corpus_from_hub(
                spec["hub"], spec["fields"], domain=spec["domain"], skip=spec["skip"], limit=spec["limit"],
                too_long=check,
            )
        skipped = [SkippedRow(file=source, line=d["line"], id=d["row"] if isinstance(d["row"], str) else None,
                              field=None, reason=d["reason"]) for d in dropped]
        passed_over = spec["skip"]
    write_jsonl(rows, out_path)
    write_parquet(skipped_frame(skipped), skipped_path, inputs=[source_path] if source_path else [])
    write_json({"source": source, "rows_read": len(rows) + len(skipped) + passed_over, "rows": len(rows),
                "skipped": len(skipped), "passed_over": passed_over, "held_out_checked": len(held_out_ids)}, info_path)
    log.info("corpus: %d rows of %s kept, %d skipped (%s), %d passed over (corpus.skip)",
             len(rows), source, len(skipped), skipped_path, passed_over)


def shard_rows(rows: Sequence[dict[str, Any]], shard: int, shards: int) -> Sequence[dict[str, Any]]:
    """The shard-th of `shards` contiguous slices: gathering them in order gives back every row."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return rows[shard * len(rows) // shards : (shard + 1) * len(rows) // shards]


def score(
    config: dict[str, Any], model: str, model_dir: str | Path, corpus_path: str | Path, out_path: str | Path,
    shard: int | str = 0, threads: int | None = None,
) -> None:
    """Score one shard of the corpus with one model (bf16 on a GPU when there is one)."""
    from leafpipe.detection_rules import resolved_rules
    from leafpipe.scoring import ScoreSpec, score_samples

    _threads(threads)
    scoring, detection = config["scoring"], config["detection"]
    spec = _pick(ScoreSpec, {**scoring, "response_level": detection["response_level"],
                             "response_scopes": resolved_rules(detection)["response_scopes"]})
    rows = shard_rows(read_jsonl(corpus_path), int(shard), scoring["shards"])
    loaded, tok = load_placed_model(model_dir, trust_remote_code=trusts_remote_code(config, model))
    frame = score_samples(loaded, tok, rows, spec)
    write_parquet(frame, out_path, inputs=[model_dir, corpus_path])
    log.info("scored %d samples (shard %s of %d), %d tokens", len(rows), shard, scoring["shards"], len(frame))


def gather_scores(shard_paths: Sequence[str | Path], out_path: str | Path) -> None:
    """Concatenate shard scores in shard order into one file."""
    frame = pd.concat([read_parquet(p) for p in shard_paths], ignore_index=True)
    write_parquet(frame, out_path, inputs=shard_paths)
    log.info("gathered %d shards: %d samples, %d tokens", len(shard_paths), frame["sample_id"].nunique(), len(frame))


def detect(
    config: dict[str, Any], teacher_scores: str | Path, student_scores: str | Path,
    corpus_path: str | Path, out_tokens: str | Path, out_metrics: str | Path,
) -> None:
    from leafpipe.detection import DetectSpec, detect as detect_tokens, detection_metrics

    settings = config["detection"]
    spec = _pick(DetectSpec, settings)
    domain_specs = {name: _pick(DetectSpec, {**settings, **over}) for name, over in settings["domains"].items()}
    tokens = detect_tokens(
        read_parquet(teacher_scores), read_parquet(student_scores), read_jsonl(corpus_path), spec,
        domain_specs,
    )
    metrics = detection_metrics(tokens, spec)
    write_parquet(tokens, out_tokens, inputs=[teacher_scores, student_scores, corpus_path])
    write_json(metrics, out_metrics)
    log.info("detection: precision %.3f recall %.3f (base rate %.3f)",
             metrics["precision"], metrics["recall"], metrics["base_rate"])


def inspect(
    config: dict[str, Any], tokens_path: str | Path, metrics_path: str | Path, out_html: str | Path,
    out_hist: str | Path, out_sweep_csv: str | Path, out_sweep_png: str | Path, out_variants: str | Path,
    out_by_kind: str | Path,
) -> None:
    """Inspect detection: an HTML page of scored tokens, score histograms, every score variant
    side by side (variants.csv, by_kind.csv) and each variant's percentile sweep."""
    import json

    from leafpipe import inspection
    from leafpipe.detection import DetectSpec
    from leafpipe.detection_quality import variant_comparison, write_csv

    spec = _pick(DetectSpec, config["detection"])
    settings = config["inspection"]
    if config["detection"]["domains"]:
        log.warning("inspect: the sweep and the score variants apply the default detection settings to "
                    "every sample; per-domain overrides are not applied")
    tokens = read_parquet(tokens_path)
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    # The configured percentile is always swept, so the plot's marker and the report's table
    # show the same numbers as metrics.json.
    percentiles = sorted({float(p) for p in settings["percentiles"]} | {float(spec.percentile)})
    comparison = variant_comparison(tokens, spec, percentiles)
    for frame, path in ((comparison.variants, out_variants), (comparison.by_kind, out_by_kind),
                        (comparison.sweep, out_sweep_csv)):
        write_csv(frame, path)
    inspection.write_sweep_plot(comparison.sweep, out_sweep_png, configured=spec.percentile,
                                base_rate=metrics.get("base_rate") if metrics.get("n_planted") else None,
                                configured_score=spec.score)
    inspection.write_histograms(tokens, out_hist)
    inspection.write_inspection_html(tokens, metrics, out_html, n_samples=settings["samples"])
    log.info("inspection: %d samples shown, %d score variants, %d percentiles swept",
             min(settings["samples"], len(tokens)), len(comparison.variants), len(percentiles))


def counterfactuals(
    config: dict[str, Any], corpus_path: str | Path, tokens_path: str | Path, level: str,
    out_path: str | Path,
) -> None:
    from leafpipe.counterfactuals import build_counterfactuals
    from leafpipe.detection_rules import resolved_rules

    # Response spans carry `step_end` (where the next scored scope starts); the scoring split is
    # the fallback for detections written without it.
    rows = build_counterfactuals(read_jsonl(corpus_path), read_parquet(tokens_path), level,
                                 split=config["scoring"]["steps"],
                                 widen=resolved_rules(config["detection"])["widen_words"])
    write_jsonl(rows, out_path)
    n_cf = sum(r["kind"] == "counterfactual" for r in rows)
    log.info("counterfactuals (%s): %d originals, %d counterfactuals", level, len(rows) - n_cf, n_cf)


def validate_counterfactuals(
    config: dict[str, Any], teacher_dir: str | Path, student_dir: str | Path, data_path: str | Path,
    out_path: str | Path, out_summary: str | Path, corpus_path: str | Path, tokens_path: str | Path,
    level: str, threads: int | None = None,
) -> None:
    """Keep the counterfactuals whose pruned span the teacher does not need (validity.margin).

    Every row is written with its loss rises (`teacher_rise`, `student_rise`; null for originals
    and when not measured); the summary counts what was kept and, on a corpus with planted
    labels, how many removed spans were planted. With validity.check off no model is loaded and
    every counterfactual is kept.
    """
    from leafpipe.validity import ValiditySpec, annotate, loss_rises, select, summarize

    _threads(threads)
    spec = _pick(ValiditySpec, config["validity"])
    rows = read_jsonl(data_path)
    rises: dict[str, dict[str, float]] = {}  # role -> counterfactual id -> rise
    if spec.check:
        roles = {"teacher": teacher_dir, **({"student": student_dir} if spec.student else {})}
        for role, model_dir in roles.items():
            model, tok = load_placed_model(model_dir, trust_remote_code=trusts_remote_code(config, role))
            rises[role] = loss_rises(model, tok, rows, spec.max_tokens)
            del model  # before the next model loads
    rows = annotate(rows, rises.get("teacher"), rises.get("student"))
    kept = select(rows, spec.margin, spec.student) if spec.check else [True] * len(rows)
    summary = summarize(rows, kept, spec, level, read_jsonl(corpus_path), read_parquet(tokens_path))
    write_jsonl([r for r, k in zip(rows, kept) if k], out_path)
    write_json(summary, out_summary)
    log.info("validity (%s): %d of %d counterfactuals kept (check %s, margin %g)", level, summary["kept"],
             summary["counterfactuals"], "on" if spec.check else "off", spec.margin)


def _distill_groups(data_path: str | Path, originals_only: bool) -> list[Any]:
    """The groups of a distillation data file: the corpus (originals only) or a counterfactual file."""
    from leafpipe.counterfactuals import counterfactual_rows
    from leafpipe.distill_data import load_groups

    rows = read_jsonl(data_path)
    if originals_only:
        rows = [r for row in rows for r in counterfactual_rows(row, [], ())]
    return load_groups(rows)


def teacher_logits(
    config: dict[str, Any], teacher_dir: str | Path, student_dir: str | Path, data_path: str | Path,
    out_path: str | Path, source: str, threads: int | None = None,
) -> None:
    """Cache the teacher's top-k log-probs (k = distill.teacher_topk) of every sample of a data file.

    Every original and counterfactual is encoded with the student's tokenizer (what the distill
    job trains on); the teacher runs in bf16 on a GPU when there is one. `source` "corpus" reads
    `data_path` as the corpus (the kd variant's originals); a counterfactual level ("instr",
    "instr_resp") reads it as that level's counterfactual file.
    """
    from transformers import AutoConfig

    from leafpipe.distill_data import encode_groups
    from leafpipe.teacher_cache import build_teacher_cache, every_sample
    from leafpipe.tokenizer import load_tokenizer

    _threads(threads)
    settings = config["distill"]
    k = settings.get("teacher_topk")
    if not k:
        raise ValueError("distill.teacher_topk is not set: there is no top-k cache to build")
    tok = load_tokenizer(student_dir, trust_remote_code=trusts_remote_code(config, "student"))
    samples = every_sample(encode_groups(tok, _distill_groups(data_path, source == "corpus")))
    # The student's vocabulary, from its config alone: this job never loads the student's weights.
    vocab = AutoConfig.from_pretrained(
        str(student_dir), trust_remote_code=trusts_remote_code(config, "student")
    ).get_text_config().vocab_size
    teacher, _ = load_placed_model(teacher_dir, trust_remote_code=trusts_remote_code(config, "teacher"))
    teacher.requires_grad_(False)
    pad = tok.pad_token_id
    build_teacher_cache(
        teacher, samples, out_path, k=k, temperature=settings["kd"]["temperature"], vocab_size=vocab,
        pad_id=tok.eos_token_id if pad is None else pad, batch_size=settings["micro_batch"],
        chunk_tokens=settings["kd"]["chunk_tokens"],
    )


def distill(
    config: dict[str, Any], variant: str, teacher_dir: str | Path, student_dir: str | Path,
    data_path: str | Path, out_dir: str | Path, checkpoint_dir: str | Path | None = None,
    threads: int | None = None, teacher_cache: str | Path | None = None,
) -> None:
    """Train one variant; `data_path` is the corpus for sft and kd, counterfactuals otherwise.

    Checkpoints go to `checkpoint_dir` (default: `{out_dir}.partial`); a rerun with the same
    settings resumes from them, and `out_dir` appears only once training has finished. With
    `teacher_cache` (a `teacher_logits` output for `data_path`) the kd variants read the
    teacher's top-k log-probs from it and never load the teacher; sft ignores it.
    """
    from leafpipe import data_parallel
    from leafpipe.distill import DistillSpec, distill as run_distill
    from leafpipe.distill_checkpoints import save_distilled
    from leafpipe.teacher_cache import TeacherCache

    if variant not in VARIANT_LEVEL:
        raise ValueError(f"unknown variant {variant!r}; choose one of {sorted(VARIANT_LEVEL)}")
    processes = config["distill"]["gpus"]
    if processes > 1 and not data_parallel.launched():
        # One data-parallel process per GPU, each running this stage (leafpipe.data_parallel).
        data_parallel.launch(processes, "distill", config, dict(
            variant=variant, teacher_dir=teacher_dir, student_dir=student_dir, data_path=data_path,
            out_dir=out_dir, checkpoint_dir=checkpoint_dir, teacher_cache=teacher_cache or None,
        ), threads=threads)
        return
    _threads(threads)
    spec = DistillSpec.from_config(config["distill"], objective=VARIANT_OBJECTIVE[variant], seed=config["seed"])
    groups = _distill_groups(data_path, VARIANT_LEVEL[variant] is None)
    student, tok = load_model(student_dir, trust_remote_code=trusts_remote_code(config, "student"))
    teacher = teacher_tok = cache = None
    if spec.objective == "kd" and teacher_cache:
        cache = TeacherCache(teacher_cache)
    elif spec.objective == "kd":  # sft never reads the teacher
        # Frozen and forward-only: on a GPU it runs in bf16, so load it so and halve host memory.
        teacher, teacher_tok = load_model(
            teacher_dir, torch.bfloat16 if torch.cuda.is_available() else torch.float32,
            trust_remote_code=trusts_remote_code(config, "teacher"),
        )
    work = Path(checkpoint_dir) if checkpoint_dir else Path(f"{out_dir}.partial")
    model = run_distill(teacher, student, tok, groups, spec, work_dir=work, teacher_tokenizer=teacher_tok,
                        teacher_cache=cache)
    if data_parallel.is_main():
        save_distilled(model, tok, work, out_dir, info={"variant": variant, "data": str(data_path)})
        log.info("distill %s: saved %s", variant, out_dir)
    data_parallel.teardown()


def attention(
    config: dict[str, Any], model: str, model_dir: str | Path, corpus_path: str | Path,
    tokens_path: str | Path, out_path: str | Path, threads: int | None = None,
) -> None:
    """How much attention a model's response tokens pay to detected confounders, and to each
    kind of instruction token (leafpipe.token_kinds), per layer.

    Samples: the corpus groups held out from distillation (distill.val_fraction, by source id),
    so no distilled model trained on them; without a held-out set, the corpus itself (the
    output's `samples_from` column says which). At most attention.samples of them.
    """
    import json

    from leafpipe.attention import AttentionSample, attention_shares
    from leafpipe.detection import protected_spans
    from leafpipe.distill_data import DistillGroup, validation_split

    _threads(threads)
    settings = config["attention"]
    rows = read_jsonl(corpus_path)
    groups = [DistillGroup((r["instruction"], r["response"]), source_id=str(r["id"])) for r in rows]
    _, held_out = validation_split(groups, config["distill"]["val_fraction"])
    chosen, origin = (held_out, "held out from distillation") if held_out else (range(len(rows)), "corpus")
    chosen = list(chosen)[: settings["samples"]]
    detected = read_parquet(tokens_path, columns=["id", "spans"]).set_index("id")["spans"]
    samples = []
    for i in chosen:
        row = rows[i]
        spans = [(s["start"], s["end"]) for s in json.loads(detected.get(row["id"], "[]"))
                 if s["field"] == "instruction"]
        planted = row.get("distractor_spans")
        samples.append(AttentionSample(row["instruction"], row["response"], spans,
                                       [tuple(p) for p in planted] if planted is not None else None,
                                       protected_spans(row["instruction"], config["detection"]["protect"])))
    loaded, tok = load_placed_model(model_dir, trust_remote_code=trusts_remote_code(config, model))
    table = attention_shares(loaded, tok, samples, batch_size=settings["batch_size"],
                             max_tokens=settings["max_tokens"])
    table.insert(0, "model", model)
    table["samples_from"] = origin
    with atomic_path(out_path) as tmp:
        table.to_csv(tmp, index=False)
    log.info("attention of %s: %d samples (%s)", model, len(samples), origin)


def benchmark_data(
    config: dict[str, Any], benchmark: str, out_path: str | Path, info_path: str | Path,
    input_path: str | Path | None = None,
) -> None:
    """A benchmark's normalised rows (docs/benchmarks.md) and its info: source, licence, skipped rows.

    Absent data (no file, no data package, offline) is not an error: the rows are empty and the
    info says why, so the report shows the benchmark as skipped with that reason.
    """
    from leafpipe.evaluate import benchmark_rows

    bench = config["evaluation"]["benchmarks"][benchmark]
    rows, info = benchmark_rows(bench, str(input_path) if input_path else None)
    write_jsonl(rows, out_path)
    write_json({"benchmark": benchmark, **info}, info_path)
    log.info("benchmark %s: %d rows (%s), %d skipped", benchmark, len(rows),
             info.get("source") or info.get("reason"), len(info["skipped"]))


def _max_new_tokens(evaluation: dict[str, Any], bench: dict[str, Any]) -> int:
    return bench.get("max_new_tokens", evaluation["max_new_tokens"])


def _sampling(bench: dict[str, Any], seed: int) -> Any:
    from leafpipe.generation import SamplingSpec

    return SamplingSpec(n=bench["n"], temperature=bench["temperature"], top_p=bench["top_p"],
                        stop=tuple(bench["stop"]), seed=seed)


def generate(
    config: dict[str, Any], model: str, benchmark: str, model_dir: str | Path, bench_path: str | Path,
    out_path: str | Path, shard: int | str = 0, partial_path: str | Path | None = None,
    threads: int | None = None,
) -> None:
    """Complete shard `shard` of a benchmark's prompts (a contiguous slice; the number of shards
    is the entry's `shards` or evaluation.shards); a killed job resumes from `partial_path`."""
    from leafpipe.generation import generate as run_generate

    _threads(threads)
    evaluation = config["evaluation"]
    bench = evaluation["benchmarks"][benchmark]
    rows = shard_rows(read_jsonl(bench_path), int(shard), bench.get("shards", evaluation["shards"]))
    if not rows:  # a skipped benchmark (benchmark_data says why): nothing to load a model for
        write_jsonl([], out_path)
        return
    from leafpipe.generation_vllm import generate_vllm, vllm_usable

    max_new = _max_new_tokens(evaluation, bench)
    sampling = _sampling(bench, config["seed"])
    backend = evaluation["backend"]
    if backend == "vllm" and not vllm_usable():
        raise RuntimeError("evaluation.backend is vllm, but vLLM is not installed or no GPU is visible")
    trust = trusts_remote_code(config, model)
    if backend == "vllm" or (backend == "auto" and vllm_usable()):
        from leafpipe.tokenizer import load_tokenizer

        log.info("generating with vLLM")
        out = generate_vllm(model_dir, load_tokenizer(model_dir, trust_remote_code=trust), rows,
                            max_new_tokens=max_new, sampling=sampling, trust_remote_code=trust)
        write_jsonl(out, out_path)
        return
    loaded, tok = load_placed_model(model_dir, trust_remote_code=trust)
    partial = Path(partial_path) if partial_path else Path(f"{out_path}.partial")
    out = run_generate(loaded, tok, rows, max_new_tokens=max_new, batch_size=evaluation["batch_size"],
                       sampling=sampling, partial_path=partial)
    write_jsonl(out, out_path)
    partial.unlink(missing_ok=True)


def grade(
    config: dict[str, Any], model: str, benchmark: str, generations: Sequence[str | Path],
    bench_path: str | Path, info_path: str | Path, out_path: str | Path, graded_path: str | Path,
    threads: int | None = None,
) -> None:
    """Grade the generation shards (in order) by the benchmark's task; a skipped benchmark gets a
    score file that says so."""
    import json

    from leafpipe.evaluate import grade_generations

    evaluation = config["evaluation"]
    bench = evaluation["benchmarks"][benchmark]
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    settings = dict(model=model, benchmark=benchmark, batch_size=evaluation["batch_size"],
                    max_new_tokens=_max_new_tokens(evaluation, bench),
                    decoding="greedy" if bench["temperature"] == 0 else
                    f"sampled: n={bench['n']}, temperature={bench['temperature']}, top_p={bench['top_p']}",
                    seed=config["seed"], source=info.get("source"))
    if not info["available"]:
        write_jsonl([], graded_path)
        write_json({**settings, "available": False, "reason": info["reason"]}, out_path)
        log.info("%s on %s: skipped (%s)", model, benchmark, info["reason"])
        return
    completions = [g for path in generations for g in read_jsonl(path)]
    graded, summary = grade_generations(read_jsonl(bench_path), completions, bench, workers=threads or 2)
    write_jsonl(graded, graded_path)
    write_json({**settings, "available": True, **summary}, out_path)
    log.info("%s on %s: pass@1 %.3f over %d problems", model, benchmark, summary["accuracy"], summary["n"])


def _setting_notes(config: dict[str, Any]) -> str:
    """What the numbers are about; the verdict itself comes from the paired statistics."""
    seeds = ", ".join(map(str, config["seeds"]))
    replicates = (f"Replicates: seed(s) {seeds}, each a whole run of its own with that seed (world, "
                  "training, sampling); its files are under `seed-<seed>/`. ")
    corpus = config["corpus"]
    if corpus["path"]:
        return replicates + f"Distillation corpus: `{corpus['path']}`."
    if corpus.get("benchmark") or corpus.get("hub"):
        return replicates + (
            f"Distillation corpus: rows {corpus['skip']}..{corpus['skip'] + corpus['limit'] - 1} of "
            f"`{corpus.get('benchmark') or corpus.get('hub')}` (rule corpus; `corpus/info.json` says where from).")
    w = config["world"]
    return replicates + (
        "Setting: the embedded confounder world. The student was pre-trained on problems where a "
        f"planted distractor gives the answer away with probability {w['student_shortcut_p']}; "
        "the teacher, the distillation corpus and the test split carry distractors that do not "
        "predict the answer, and the distractor-free test holds the same problems with the "
        "distractors removed. A student that copies distractor numbers fails the first test but "
        f"not the second. Distillation: {config['distill']['epochs']} epoch(s), "
        f"λ = {config['distill']['lam']}, {config['distill']['kd']['kind']} at "
        f"τ = {config['distill']['kd']['temperature']}; detection: "
        f"{config['detection']['percentile']}th percentile, cap {config['detection']['cap']}."
    )


def _split_by_seed(paths: Sequence[Any], seeds: Sequence[int], what: str) -> dict[int, list[Any]]:
    """A seed-major list of inputs (rule report's `seed_major`: every seed's files in turn) as
    each seed's part."""
    if len(paths) % len(seeds):
        raise ValueError(f"{len(paths)} {what} do not split evenly over the seeds {list(seeds)}")
    k = len(paths) // len(seeds)
    return {seed: list(paths[i * k : (i + 1) * k]) for i, seed in enumerate(seeds)}


def _outcomes(
    scores: Sequence[dict[str, Any]], graded: Sequence[str | Path]
) -> dict[tuple[int, str, str], dict[str, bool]]:
    """(seed, model, benchmark) -> problem id -> solved, from the graded files (in the order of
    `scores`). A problem counts as solved when its first sample is, as in the score's `correct`."""
    if len(graded) != len(scores):
        raise ValueError(f"{len(graded)} graded files for {len(scores)} scores: they must pair up in order")
    outcomes = {}
    for score, path in zip(scores, graded):
        if score.get("available") is False:
            continue
        first: dict[str, bool] = {}
        for row in read_jsonl(path):
            first.setdefault(str(row["id"]), bool(row["correct"]))
        outcomes[(int(score["seed"]), score["model"], score["benchmark"])] = first
    return outcomes


def _reliance_benchmarks(benchmarks: dict[str, Any]) -> tuple[str, str] | None:
    """The world's test with distractors and the same problems without, when both are evaluated."""
    by_split = {bench.get("split"): name for name, bench in benchmarks.items()}
    return (by_split["test"], by_split["test_clean"]) if {"test", "test_clean"} <= by_split.keys() else None


def report(
    config: dict[str, Any], scores: Sequence[str | Path], metrics: Sequence[str | Path], out_dir: str | Path,
    graded: Sequence[str | Path] = (), sweeps: Sequence[str | Path] = (), attention: Sequence[str | Path] = (),
    timed_jobs: list[dict[str, Any]] | None = None, repo: str | Path | None = None,
    corpus_files: Sequence[str | Path] = (), benchmark_files: Sequence[str | Path] = (),
    training: Sequence[str | Path] = (), detection_tables: Sequence[str | Path] = (),
    validity: Sequence[str | Path] = (),
) -> None:
    """Build the report pooled over the config's seeds: accuracy (mean ± sd across seeds, and each
    seed's), paired comparisons with KD w/o mask, reliance on distractors, detection quality, plots.

    Every list but `scores` and `graded` is seed-major (rule report's `seed_major`): the seeds'
    files in turn, in the order of config["seeds"]. `scores` are every seed's score files (each
    names its seed) and `graded` the graded files in the same order; `metrics` and `sweeps` each
    seed's detection metrics and sweep; `attention` each seed's attention tables, in model order.
    Beside them the run's record: `config`, the software versions (with `repo`'s git commit) and
    per-rule timings of `timed_jobs` (the jobs' benchmark files and GPU counts, as
    `run_record.benchmark_jobs` lists them). `corpus_files` (the corpus rule's info, rows and
    skipped rows) and `benchmark_files` (each benchmark's info and rows, in benchmark order) give
    the data accounting; `training` (each variant's training.json, in variant order) the steps
    skipped as non-finite. `detection_tables` (each seed's detection/variants.csv and
    by_kind.csv) and `validity` (each seed's counterfactuals/{level}.validity.json, in level
    order) join each seed's detection section.
    """
    import dataclasses
    import json

    from leafpipe import detection_quality
    from leafpipe.data_accounting import benchmark_accounting, corpus_accounting
    from leafpipe.report import build_report
    from leafpipe.validity import markdown_section as validity_section
    from leafpipe.run_record import RunRecord, read_benchmarks, rule_timings, software_versions

    def read(path: str | Path) -> Any:
        return json.loads(Path(path).read_text(encoding="utf-8"))

    seeds = config["seeds"]
    several = len(seeds) > 1
    loaded = [read(p) for p in scores]
    benchmarks = config["evaluation"]["benchmarks"]
    variants = config["distill"]["variants"]
    split = {name: _split_by_seed(paths, seeds, name) if paths else dict.fromkeys(seeds, [])
             for name, paths in (("corpus files", corpus_files), ("benchmark files", benchmark_files),
                                 ("training files", training), ("attention tables", attention),
                                 ("detection tables", detection_tables), ("validity summaries", validity))}
    accounting, skipped_steps, tables = [], {}, []
    for seed in seeds:
        corpus_seed, bench_files = split["corpus files"][seed], split["benchmark files"][seed]
        found = [corpus_accounting(*corpus_seed)] if corpus_seed else []
        for name, info, rows in zip(benchmarks, bench_files[::2], bench_files[1::2]):
            found += [a for a in [benchmark_accounting(name, info, rows)] if a is not None]
        accounting += [dataclasses.replace(a, name=f"{a.name}, seed {seed}") if several else a for a in found]
        for variant, path in zip(variants, split["training files"][seed]):
            skipped_steps[f"{variant} (seed {seed})" if several else variant] = read(path).get("non_finite_steps", 0)
        tables += [pd.read_csv(path).assign(seed=seed) for path in split["attention tables"][seed]]
    extra = {seed: "\n".join(
        ([detection_quality.markdown_section(*split["detection tables"][seed])]
         if split["detection tables"][seed] else [])
        + ([validity_section(split["validity summaries"][seed])] if split["validity summaries"][seed] else []))
        for seed in seeds}
    build_report(
        loaded,
        {seed: read(paths[0]) for seed, paths in _split_by_seed(metrics, seeds, "metrics files").items()},
        out_dir,
        model_order=["teacher", "student", *variants],
        model_labels=MODEL_LABELS,
        benchmark_labels={name: b.get("label", name) for name, b in benchmarks.items()},
        notes=_setting_notes(config),
        candidates=[v for v in variants if v not in NOT_LEAF],
        outcomes=_outcomes(loaded, graded) if graded else None,
        reliance=_reliance_benchmarks(benchmarks),
        sweep={seed: pd.read_csv(paths[0]) for seed, paths in _split_by_seed(sweeps, seeds, "sweeps").items()}
        if sweeps else None,
        attention=pd.concat(tables) if tables else None,
        record=RunRecord(config, software_versions(repo), rule_timings(read_benchmarks(timed_jobs or []))),
        accounting=accounting,
        skipped_steps=skipped_steps,
        detection_extra=extra,
    )
    log.info("report written to %s", out_dir)
