# Stage 2 of LeaF: train each variant (sft, kd, LeaF) with one trainer, leafpipe.distill.trainer.
# Checkpoints live outside the declared output, so a killed job resumes when rerun: Snakemake
# deletes a failed job's outputs, and the model folder only appears once training has finished.
# Each rule's `settings` follow its stage's spec (leafpipe.stages.specs), which leaves out the
# settings that change no weights (DISTILL_EXECUTION there): editing them retrains nothing.


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
        settings=settings_of("teacher_logits"),
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
        settings=settings_of("distill"),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher", wc),
        student_dir=lambda wc, input: input.student or model_location("student", wc),
        checkpoint_dir=lambda wc: in_replicate(wc, f"{RS}/checkpoints/distill/{wc.variant}"),
    script:
        STAGE
