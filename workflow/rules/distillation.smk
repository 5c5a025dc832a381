# Stage 2 of LeaF: distil the teacher into the student, on originals (kd) or with counterfactuals.


rule distill:
    input:
        teacher=model_input("teacher"),
        student=model_input("student"),
        data_path=distill_data,
    output:
        out_dir=directory(f"{R}/models/{{variant}}"),
    params:
        settings=tracked({**config["distill"], "seed": config["seed"]}),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher"),
        student_dir=lambda wc, input: input.student or model_location("student"),
    log:
        f"{R}/logs/distill/{{variant}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{variant}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0,
    conda:
        ENV
    script:
        STAGE
