# Evaluation: the benchmarks' rows (one job each), then one generation job and one grading job
# per (model, benchmark). A benchmark whose data is absent yields empty rows and an info file
# that says why; its generation and grading jobs then write empty outputs and a "skipped" score.


rule benchmark_data:
    input:
        input_path=benchmark_input,
        local_data=benchmark_local_data,  # tracked for reruns; the stage reads them itself
    output:
        out_path=f"{RS}/eval_data/{{benchmark}}.jsonl",
        info_path=f"{RS}/eval_data/{{benchmark}}.info.json",
    log:
        f"{RS}/logs/benchmark_data/{{benchmark}}.log",
    benchmark:
        f"{RS}/benchmarks/benchmark_data/{{benchmark}}.tsv"
    conda:
        ENV
    threads: job_threads("benchmark_data")
    resources:
        **job_resources("benchmark_data"),
    params:
        settings=settings_of("benchmark_data"),
    script:
        STAGE


rule generate:
    input:
        weights=model_input,  # not "model": that name is the wildcard the stage receives
        bench_path=f"{RS}/eval_data/{{benchmark}}.jsonl",
    output:
        out_path=f"{RS}/eval/{{model}}/{{benchmark}}.generations-{{shard}}.jsonl",
        info_path=f"{RS}/eval/{{model}}/{{benchmark}}.generations-{{shard}}.info.json",
    log:
        f"{RS}/logs/generate/{{model}}/{{benchmark}}-{{shard}}.log",
    benchmark:
        f"{RS}/benchmarks/generate/{{model}}/{{benchmark}}-{{shard}}.tsv"
    conda:
        # vLLM pins its own torch, so it has its own environment; `auto` finds no vLLM in ENV
        "../envs/vllm.yaml" if config["evaluation"]["backend"] == "vllm" else ENV
    threads: job_threads("generate")
    resources:
        **job_resources("generate"),
    params:
        settings=settings_of("generate"),
        model_dir=lambda wc, input: input.weights or model_location(wc.model, wc),
        # Outside the declared output, so a killed job's finished batches survive for the rerun.
        partial_path=lambda wc: in_replicate(
            wc, f"{RS}/checkpoints/generate/{wc.model}/{wc.benchmark}-{wc.shard}.partial.jsonl"
        ),
    script:
        STAGE


rule grade:
    input:
        generations=generations,
        generation_infos=generation_infos,
        bench_path=f"{RS}/eval_data/{{benchmark}}.jsonl",
        info_path=f"{RS}/eval_data/{{benchmark}}.info.json",
    output:
        out_path=f"{RS}/eval/{{model}}/{{benchmark}}.scores.json",
        graded_path=f"{RS}/eval/{{model}}/{{benchmark}}.graded.jsonl",
    log:
        f"{RS}/logs/grade/{{model}}/{{benchmark}}.log",
    benchmark:
        f"{RS}/benchmarks/grade/{{model}}/{{benchmark}}.tsv"
    conda:
        ENV
    threads: job_threads("grade")
    resources:
        **job_resources("grade"),
    params:
        settings=settings_of("grade"),
    script:
        STAGE
