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
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
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
    conda:
        ENV
    script:
        STAGE
