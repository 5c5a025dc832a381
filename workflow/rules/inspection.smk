# Inspecting detection: scored tokens as a page, score histograms, a sweep of the percentile.


rule inspect:
    input:
        tokens_path=f"{RS}/detection/tokens.parquet",
        metrics_path=f"{RS}/detection/metrics.json",
    output:
        out_html=report(
            f"{RS}/detection/inspect.html",
            caption="../report/inspect.rst",
            category="Detection",
            labels={"result": "scored tokens"},
        ),
        out_hist=report(
            f"{RS}/detection/histograms.png",
            caption="../report/histograms.rst",
            category="Detection",
            labels={"result": "score histograms"},
        ),
        out_sweep_csv=report(
            f"{RS}/detection/sweep.csv",
            caption="../report/sweep_table.rst",
            category="Detection",
            labels={"result": "percentile sweep (CSV)"},
        ),
        out_sweep_png=report(
            f"{RS}/detection/sweep.png",
            caption="../report/sweep.rst",
            category="Detection",
            labels={"result": "percentile sweep"},
        ),
        out_variants=f"{RS}/detection/variants.csv",
        out_by_kind=f"{RS}/detection/by_kind.csv",
    log:
        f"{RS}/logs/inspect.log",
    benchmark:
        f"{RS}/benchmarks/inspect.tsv"
    conda:
        ENV
    threads: job_threads("inspect")
    resources:
        **job_resources("inspect"),
    params:
        settings=settings_of("inspect"),
    script:
        STAGE
