# Real pretrained models and the corpus, offline: a GGUF checkpoint made safetensors once, a
# student cut from a model's layers, and the corpus every rule reads (a file checked row by row,
# or a shipped benchmark's worked solutions).


rule import_gguf:
    input:
        gguf=lambda wc: gguf_input(wc.role),
    output:
        out_dir=directory(f"{R}/models/{{role}}"),
    wildcard_constraints:
        role=roles_from("gguf"),
    params:
        settings=lambda wc: tracked(config["models"][wc.role]["gguf"]),
    log:
        f"{R}/logs/import_gguf/{{role}}.log",
    benchmark:
        f"{R}/benchmarks/import_gguf/{{role}}.tsv"
    threads: job_threads("import_gguf")
    resources:
        **job_resources("import_gguf"),
    conda:
        ENV
    script:
        STAGE


rule derive_model:
    input:
        source_dir=lambda wc: model_input(config["models"][wc.role]["derive"]["from"]),
    output:
        out_dir=directory(f"{R}/models/{{role}}"),
    wildcard_constraints:
        role=roles_from("derive"),
    params:
        settings=lambda wc: tracked(config["models"][wc.role]["derive"]),
    log:
        f"{R}/logs/derive_model/{{role}}.log",
    benchmark:
        f"{R}/benchmarks/derive_model/{{role}}.tsv"
    threads: job_threads("derive_model")
    resources:
        **job_resources("derive_model"),
    conda:
        ENV
    script:
        STAGE


rule corpus:
    input:
        source_path=CORPUS_FILE or [],
        # The evaluation rows of the same benchmark: the corpus refuses any of their ids.
        held_out=lambda wc: corpus_held_out(),
        tokenizer=lambda wc: tracked_path(corpus_tokenizer()),
    output:
        out_path=f"{R}/corpus/train.jsonl",
        info_path=f"{R}/corpus/info.json",
        skipped_path=f"{R}/corpus/skipped.parquet",
    params:
        settings=tracked(config["corpus"]),
        tokenizer_dir=corpus_tokenizer(),
    log:
        f"{R}/logs/corpus.log",
    benchmark:
        f"{R}/benchmarks/corpus.tsv"
    conda:
        ENV
    script:
        STAGE
