# Stage 2 of LeaF: train each variant (sft, kd, LeaF) with one trainer, leafpipe.distill.
# Checkpoints live outside the declared output, so a killed job resumes when rerun: Snakemake
# deletes a failed job's outputs, and the model folder only appears once training has finished.

# Settings that change no weights: editing them must not retrain anything.
DISTILL_UNTRACKED = ("variants", "checkpoint_every", "log_every", "gpus")


rule teacher_logits:
    # With distill.teacher_topk set, the teacher runs here once per data file (every original and
    # counterfactual of it), and the kd jobs read its top-k log-probs instead of loading it.
    input:
        teacher=model_input("teacher"),
        student=model_input("student"),
        data_path=lambda wc: source_data(wc.source),
    output:
        out_path=f"{R}/teacher_logits/{{source}}.safetensors",
    params:
        settings=tracked(
            {
                "teacher_topk": TEACHER_TOPK,
                "temperature": config["distill"]["kd"]["temperature"],
            }
        ),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher"),
        student_dir=lambda wc, input: input.student or model_location("student"),
    log:
        f"{R}/logs/teacher_logits/{{source}}.log",
    benchmark:
        f"{R}/benchmarks/teacher_logits/{{source}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=min(config["distill"]["gpus"], 1),  # one process, one GPU
    conda:
        ENV
    script:
        STAGE


rule distill:
    input:
        # sft learns from the responses alone, so it does not wait for (or read) the teacher;
        # with a top-k cache the kd variants read the cache instead.
        teacher=lambda wc: (
            [] if VARIANT_OBJECTIVE[wc.variant] == "ce" or uses_teacher_cache(wc.variant)
            else model_input("teacher")
        ),
        student=model_input("student"),
        data_path=distill_data,
        teacher_cache=teacher_cache,
    output:
        out_dir=directory(f"{R}/models/{{variant}}"),
    params:
        settings=tracked(
            {
                **{k: v for k, v in config["distill"].items() if k not in DISTILL_UNTRACKED},
                "seed": config["seed"],
            }
        ),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher"),
        student_dir=lambda wc, input: input.student or model_location("student"),
        checkpoint_dir=lambda wc: f"{R}/checkpoints/distill/{wc.variant}",
    log:
        f"{R}/logs/distill/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{variant}}.tsv"
    threads: 1
    # Sized for the default world; a profile's set-resources raises them for real models.
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=config["distill"]["gpus"],
    conda:
        ENV
    script:
        STAGE
