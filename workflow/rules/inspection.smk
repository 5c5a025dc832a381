# Inspecting detection: scored tokens as a page, score histograms, a sweep of the percentile.


rule inspect:
    input:
        tokens_path=f"{R}/detection/tokens.parquet",
        metrics_path=f"{R}/detection/metrics.json",
    output:
        out_html=f"{R}/detection/inspect.html",
        out_hist=f"{R}/detection/histograms.png",
        out_sweep_csv=f"{R}/detection/sweep.csv",
        out_sweep_png=f"{R}/detection/sweep.png",
    params:
        settings=tracked({"inspection": config["inspection"], "detection": config["detection"]}),
    log:
        f"{R}/logs/inspect.log",
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        ENV
    script:
        STAGE
