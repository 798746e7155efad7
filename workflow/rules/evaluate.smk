rule evaluate:
    """Adapt to every meta-test task and save its error (one line per task)."""
    input:
        final=f"{artifacts.RUN_DIR}/{artifacts.FINAL}",
        tasks=lambda w: artifacts.split_file(w.scale, SPLIT_OF_RUN[w.scale, w.run]),
    output:
        per_task=f"{artifacts.RUN_DIR}/{artifacts.EVAL}",
        summary=f"{artifacts.RUN_DIR}/{artifacts.EVAL_SUMMARY}",
    log:
        "results/logs/{scale}/evaluate/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        runtime=job_resource("evaluate_runtime", 30),
        mem_mb=job_resource("mem_mb", 2000),
    params:
        tables=lambda w: ",".join(sorted(TABLES_OF_RUN[w.scale, w.run])),
        tracking=lambda w: (f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else ""),
        device=config["device"],
        experiment=config["mlflow_experiment"],
    shell:
        "taskbal evaluate --final {input.final} --split {input.tasks}"
        " --per-task {output.per_task} --summary {output.summary}"
        " --seed {wildcards.seed} --device {params.device} --threads {threads}"
        " --run-id {wildcards.run} --scale {wildcards.scale} --tables {params.tables}"
        " --experiment {params.experiment} {params.tracking} > {log} 2>&1"


use rule evaluate as evaluate_on with:
    # The same run tested on another split's meta-test tasks (a column's evaluate_on: TOW's
    # mini-ImageNet runs on CUB's episodes), into the run's on-<split>/ folder.
    input:
        final=f"{artifacts.RUN_DIR}/{artifacts.FINAL}",
        tasks=artifacts.SPLIT_FILE,
    output:
        per_task=f"{artifacts.EVALUATED_ON_DIR}/{artifacts.EVAL}",
        summary=f"{artifacts.EVALUATED_ON_DIR}/{artifacts.EVAL_SUMMARY}",
    log:
        "results/logs/{scale}/evaluate/{run}-seed{seed}-on-{split}.log",
