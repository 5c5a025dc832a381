# Stage 2 of LeaF: train each variant (sft, kd, LeaF) with one trainer, leafpipe.distill.trainer.
# Checkpoints live outside the declared output, so a killed job resumes when rerun: Snakemake
# deletes a failed job's outputs, and the model folder only appears once training has finished.

# Settings that change no weights: editing them must not retrain anything.
DISTILL_UNTRACKED = ("variants", "checkpoint_every", "log_every", "gpus", "collective_timeout_min")


rule teacher_logits:
    # With distill.teacher_topk set, the teacher runs here once per data file (every original and
    # counterfactual of it), and the kd jobs read its top-k log-probs instead of loading it.
    input:
        teacher=lambda wc: model_input(wc, "teacher"),
        student=lambda wc: model_input(wc, "student"),
        data_path=lambda wc: dataset_path(wc, wc.dataset),
    output:
        out_path=f"{RS}/teacher_logits/{{dataset}}.safetensors",
    log:
        f"{RS}/logs/teacher_logits/{{dataset}}.log",
    benchmark:
        f"{RS}/benchmarks/teacher_logits/{{dataset}}.tsv"
    conda:
        ENV
    threads: job_threads("teacher_logits")
    resources:
        **job_resources("teacher_logits"),
    params:
        settings=tracked(
            {
                "teacher_topk": TEACHER_TOPK,
                "temperature": config["distill"]["kd"]["temperature"],
            }
        ),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher", wc),
        student_dir=lambda wc, input: input.student or model_location("student", wc),
    script:
        STAGE


rule distill:
    input:
        # sft learns from the responses alone, so it does not wait for (or read) the teacher;
        # with a top-k cache the kd variants read the cache instead.
        teacher=lambda wc: (
            []
            if variant(wc.variant).objective == "ce" or uses_teacher_cache(wc.variant)
            else model_input(wc, "teacher")
        ),
        student=lambda wc: model_input(wc, "student"),
        data_path=distill_data,
        teacher_cache=teacher_cache,
    output:
        out_dir=directory(f"{RS}/models/{{variant}}"),
    log:
        f"{RS}/logs/distill/{{variant}}.log",
    benchmark:
        f"{RS}/benchmarks/distill/{{variant}}.tsv"
    conda:
        ENV
    threads: job_threads("distill")
    resources:
        **job_resources("distill"),
    params:
        settings=lambda wc: tracked(
            {
                **{k: v for k, v in config["distill"].items() if k not in DISTILL_UNTRACKED},
                "seed": int(wc.seed),
            }
        ),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher", wc),
        student_dir=lambda wc, input: input.student or model_location("student", wc),
        checkpoint_dir=lambda wc: in_replicate(wc, f"{RS}/checkpoints/distill/{wc.variant}"),
    script:
        STAGE
