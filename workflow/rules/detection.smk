# Stage 1 of LeaF: gradient scores, confounder detection, counterfactual samples.


rule score:
    input:
        model=model_input,
        corpus_path=CORPUS,
    output:
        out_path=f"{R}/scores/{{model}}/shard-{{shard}}.parquet",
    params:
        settings=tracked({**config["scoring"], "response_level": config["detection"]["response_level"]}),
        model_dir=lambda wc, input: input.model or model_location(wc.model),
    log:
        f"{R}/logs/score/{{model}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/score/{{model}}/shard-{{shard}}.tsv"
    threads: job_threads("score")
    resources:
        **job_resources("score"),
    conda:
        ENV
    script:
        STAGE


rule gather_scores:
    input:
        shard_paths=expand("{R}/scores/{{model}}/shard-{shard}.parquet", R=R, shard=SHARDS),
    output:
        out_path=f"{R}/scores/{{model}}.parquet",
    log:
        f"{R}/logs/gather_scores/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/gather_scores/{{model}}.tsv"
    conda:
        ENV
    script:
        STAGE


rule detect:
    input:
        teacher_scores=f"{R}/scores/teacher.parquet",
        student_scores=f"{R}/scores/student.parquet",
        corpus_path=CORPUS,
    output:
        out_tokens=f"{R}/detection/tokens.parquet",
        out_metrics=f"{R}/detection/metrics.json",
    params:
        settings=tracked(config["detection"]),
    log:
        f"{R}/logs/detect.log",
    benchmark:
        f"{R}/benchmarks/detect.tsv"
    conda:
        ENV
    script:
        STAGE


rule counterfactuals:
    input:
        corpus_path=CORPUS,
        tokens_path=f"{R}/detection/tokens.parquet",
    output:
        out_path=f"{R}/counterfactuals/{{level}}.jsonl",
    log:
        f"{R}/logs/counterfactuals/{{level}}.log",
    benchmark:
        f"{R}/benchmarks/counterfactuals/{{level}}.tsv"
    conda:
        ENV
    script:
        STAGE
