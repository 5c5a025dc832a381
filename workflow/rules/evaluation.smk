# Evaluation: the benchmarks' rows (one job each), then one generation job and one grading job
# per (model, benchmark). A benchmark whose data is absent yields empty rows and an info file
# that says why; its generation and grading jobs then write empty outputs and a "skipped" score.


rule benchmark_data:
    input:
        input_path=benchmark_input,
    output:
        out_path=f"{R}/eval_data/{{benchmark}}.jsonl",
        info_path=f"{R}/eval_data/{{benchmark}}.info.json",
    params:
        settings=lambda wc: tracked(config["evaluation"]["benchmarks"][wc.benchmark]),
    log:
        f"{R}/logs/benchmark_data/{{benchmark}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    script:
        STAGE


rule generate:
    input:
        model=model_input,
        bench_path=f"{R}/eval_data/{{benchmark}}.jsonl",
    output:
        out_path=f"{R}/eval/{{model}}/{{benchmark}}.generations-{{shard}}.jsonl",
    params:
        settings=evaluation_settings,
        model_dir=lambda wc, input: input.model or model_location(wc.model),
        # Outside the declared output, so a killed job's finished batches survive for the rerun.
        partial_path=lambda wc: f"{R}/checkpoints/generate/{wc.model}/{wc.benchmark}-{wc.shard}.partial.jsonl",
    log:
        f"{R}/logs/generate/{{model}}/{{benchmark}}-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{model}}/{{benchmark}}-{{shard}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=config["evaluation"]["gpus"],
    conda:
        ENV
    script:
        STAGE


rule grade:
    input:
        generations=generations,
        bench_path=f"{R}/eval_data/{{benchmark}}.jsonl",
        info_path=f"{R}/eval_data/{{benchmark}}.info.json",
    output:
        out_path=f"{R}/eval/{{model}}/{{benchmark}}.scores.json",
        graded_path=f"{R}/eval/{{model}}/{{benchmark}}.graded.jsonl",
    params:
        settings=evaluation_settings,
    log:
        f"{R}/logs/grade/{{model}}/{{benchmark}}.log",
    threads: 2  # math-verify workers, or sandboxed programs run side by side
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    script:
        STAGE
