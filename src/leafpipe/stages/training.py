"""Stage 2 of LeaF: the teacher's top-k cache and the distillation of every variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from leafpipe.distill.variants import variant as variant_record
from leafpipe.files.atomic import read_jsonl
from leafpipe.models.hub_options import hub_options
from leafpipe.stages.common import _threads, log
from leafpipe.stages.specs import whole_config


def _distill_groups(data_path: str | Path, originals_only: bool) -> list[Any]:
    """The groups of a distillation data file: the corpus (originals only) or a counterfactual
    file."""
    from leafpipe.distill.data import load_groups
    from leafpipe.prune.counterfactuals import counterfactual_rows

    rows = read_jsonl(data_path)
    if originals_only:
        rows = [r for row in rows for r in counterfactual_rows(row, [], ())]
    return load_groups(rows)


def teacher_logits(
    config: dict[str, Any],
    teacher_dir: str | Path,
    student_dir: str | Path,
    data_path: str | Path,
    out_path: str | Path,
    dataset: str,
    threads: int | None = None,
) -> None:
    """Cache the teacher's top-k log-probs (k = distill.teacher_topk) of every sample of a data
    file.

    Every original and counterfactual is encoded with the student's tokenizer (what the distill
    job trains on); the teacher runs in bf16 on a GPU when there is one. `dataset` "corpus" reads
    `data_path` as the corpus (the kd variant's originals); a counterfactual level ("instr",
    "instr_resp") reads it as that level's counterfactual file.
    """
    from transformers import AutoConfig

    from leafpipe.distill.data import encode_groups
    from leafpipe.distill.teacher_cache import build_teacher_cache, every_sample
    from leafpipe.models.loading import load_placed_model
    from leafpipe.text.tokenizer import load_tokenizer

    _threads(threads)
    settings = config["distill"]
    k = settings.get("teacher_topk")
    if not k:
        raise ValueError("distill.teacher_topk is not set: there is no top-k cache to build")
    tok = load_tokenizer(student_dir, **hub_options(config, "student"))
    samples = every_sample(encode_groups(tok, _distill_groups(data_path, dataset == "corpus")))
    # The student's vocabulary, from its config alone: this job never loads the student's weights.
    vocab = (
        AutoConfig.from_pretrained(str(student_dir), **hub_options(config, "student"))
        .get_text_config()
        .vocab_size
    )
    teacher, _ = load_placed_model(teacher_dir, **hub_options(config, "teacher"))
    teacher.requires_grad_(False)
    pad = tok.pad_token_id
    build_teacher_cache(
        teacher,
        samples,
        out_path,
        k=k,
        temperature=settings["kd"]["temperature"],
        vocab_size=vocab,
        pad_id=tok.eos_token_id if pad is None else pad,
        batch_size=settings["micro_batch"],
        chunk_tokens=settings["kd"]["chunk_tokens"],
    )


def _load_teacher(
    config: dict[str, Any], objective: str, teacher_dir: str | Path, teacher_cache: Any
) -> tuple[Any, Any, Any]:
    """(teacher, its tokenizer, top-k cache) as the objective reads the teacher: sft never does;
    kd from the cache when there is one, else from the model itself."""
    from leafpipe.distill.teacher_cache import TeacherCache
    from leafpipe.models.loading import load_model

    if objective == "kd" and teacher_cache:
        return None, None, TeacherCache(teacher_cache)
    if objective != "kd":
        return None, None, None
    # Frozen and forward-only: on a GPU it runs in bf16, so load it so and halve host memory.
    teacher, teacher_tok = load_model(
        teacher_dir,
        torch.bfloat16 if torch.cuda.is_available() else torch.float32,
        **hub_options(config, "teacher"),
    )
    return teacher, teacher_tok, None


def distill(
    config: dict[str, Any],
    variant: str,
    teacher_dir: str | Path,
    student_dir: str | Path,
    data_path: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    threads: int | None = None,
    teacher_cache: str | Path | None = None,
) -> None:
    """Train one variant; `data_path` is the corpus for sft and kd, counterfactuals otherwise.

    Checkpoints go to `checkpoint_dir` (default: `{out_dir}.partial`); a rerun with the same
    settings resumes from them, and `out_dir` appears only once training has finished. With
    `teacher_cache` (a `teacher_logits` output for `data_path`) the kd variants read the
    teacher's top-k log-probs from it and never load the teacher; sft ignores it.
    """
    from leafpipe.distill import parallel
    from leafpipe.distill.checkpoints import TENSORBOARD, save_distilled
    from leafpipe.distill.spec import DistillSpec
    from leafpipe.distill.trainer import distill as run_distill
    from leafpipe.models.loading import load_model
    from leafpipe.tracking.plans import distill_plan

    trained = variant_record(variant)
    processes = config["distill"]["gpus"]
    if processes > 1 and not parallel.launched():
        # One data-parallel process per GPU, each running this stage (leafpipe.distill.parallel)
        # and cutting the whole config down to this stage's spec again.
        arguments = dict(variant=variant, teacher_dir=teacher_dir, student_dir=student_dir)
        arguments.update(data_path=data_path, out_dir=out_dir, checkpoint_dir=checkpoint_dir)
        arguments.update(teacher_cache=teacher_cache or None)
        parallel.launch(processes, "distill", whole_config(config), arguments, threads=threads)
        return
    _threads(threads)
    work = Path(checkpoint_dir) if checkpoint_dir else Path(f"{out_dir}.partial")
    tracking = distill_plan(config, variant, work / TENSORBOARD)  # checked before any loading
    spec = DistillSpec.from_config(
        config["distill"], objective=trained.objective, seed=config["seed"]
    )
    groups = _distill_groups(data_path, trained.level is None)
    student, tok = load_model(student_dir, **hub_options(config, "student"))
    teacher, teacher_tok, cache = _load_teacher(config, spec.objective, teacher_dir, teacher_cache)
    model = run_distill(
        teacher,
        student,
        tok,
        groups,
        spec,
        work_dir=work,
        teacher_tokenizer=teacher_tok,
        teacher_cache=cache,
        tracking=tracking,
    )
    if parallel.is_main():
        save_distilled(model, tok, work, out_dir, info={"variant": variant, "data": str(data_path)})
        log.info("distill %s: saved %s", variant, out_dir)
    parallel.teardown()
