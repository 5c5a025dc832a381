# Inspecting detection: scored tokens as a page, score histograms, a sweep of the percentile.


rule inspect:
    input:
        tokens_path=f"{R}/detection/tokens.parquet",
        metrics_path=f"{R}/detection/metrics.json",
    output:
        out_html=report(f"{R}/detection/inspect.html", caption="../report/inspect.rst", category="Detection",
                        labels={"result": "scored tokens"}),
        out_hist=report(f"{R}/detection/histograms.png", caption="../report/histograms.rst", category="Detection",
                        labels={"result": "score histograms"}),
        out_sweep_csv=report(f"{R}/detection/sweep.csv", caption="../report/sweep_table.rst", category="Detection",
                             labels={"result": "percentile sweep (CSV)"}),
        out_sweep_png=report(f"{R}/detection/sweep.png", caption="../report/sweep.rst", category="Detection",
                             labels={"result": "percentile sweep"}),
    params:
        settings=tracked({"inspection": config["inspection"], "detection": config["detection"]}),
    log:
        f"{R}/logs/inspect.log",
    benchmark:
        f"{R}/benchmarks/inspect.tsv"
    threads: job_threads("inspect")
    resources:
        **job_resources("inspect"),
    conda:
        ENV
    script:
        STAGE
