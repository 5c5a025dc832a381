# Evaluation: one generation job and one grading job per (model, benchmark).


rule generate:
    input:
        model=model_input,
        bench_path=benchmark_file,
    output:
        out_path=f"{R}/eval/{{model}}/{{benchmark}}.generations.jsonl",
    params:
        settings=evaluation_settings,
        model_dir=lambda wc, input: input.model or model_location(wc.model),
    log:
        f"{R}/logs/generate/{{model}}/{{benchmark}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{model}}/{{benchmark}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        ENV
    script:
        STAGE


rule grade:
    input:
        generations_path=f"{R}/eval/{{model}}/{{benchmark}}.generations.jsonl",
    output:
        out_path=f"{R}/eval/{{model}}/{{benchmark}}.scores.json",
    params:
        settings=evaluation_settings,
    log:
        f"{R}/logs/grade/{{model}}/{{benchmark}}.log",
    conda:
        ENV
    script:
        STAGE
