# The confounder world: data with planted distractors, a tokenizer, and teacher/student models.


rule world:
    output:
        splits=expand("{R}/world/{split}.jsonl", R=R, split=WORLD_SPLITS),
    params:
        settings=tracked(config["world"]),
        out_dir=lambda wc, output: os.path.dirname(output.splits[0]),
    log:
        f"{R}/logs/world.log",
    benchmark:
        f"{R}/benchmarks/world.tsv"
    conda:
        ENV
    script:
        STAGE


rule tokenizer:
    input:
        corpora=expand("{R}/world/{split}.jsonl", R=R, split=["teacher_train", "student_train", "distill_train"]),
    output:
        out_dir=directory(f"{R}/tokenizer"),
    params:
        settings=tracked(config["tokenizer"]),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    conda:
        ENV
    script:
        STAGE


rule pretrain:
    input:
        tokenizer_dir=f"{R}/tokenizer",
        train_path=f"{R}/world/{{role}}_train.jsonl",
    output:
        out_dir=directory(f"{R}/models/{{role}}"),
    wildcard_constraints:
        role=roles_from("trained"),
    params:
        settings=lambda wc: tracked({**config["models"][wc.role], "seed": config["seed"]}),
    log:
        f"{R}/logs/pretrain/{{role}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain/{{role}}.tsv"
    threads: job_threads("pretrain")
    resources:
        **job_resources("pretrain"),
    conda:
        ENV
    script:
        STAGE
