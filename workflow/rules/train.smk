rule train:
    """Meta-train one run (method × setting) for one seed; resumes if a killed job left state."""
    input:
        tasks=lambda w: artifacts.split_file(w.scale, SPLIT_OF_RUN[w.scale, w.run]),
        selection=lambda w: selection_of_run(w.scale, w.run),
        weights=lambda w: weights_of_run(w.scale, w.run),
    output:
        final=f"{artifacts.RUN_DIR}/{artifacts.FINAL}",
        curve=f"{artifacts.RUN_DIR}/{artifacts.CURVE}",
        summary=f"{artifacts.RUN_DIR}/{artifacts.TRAIN_SUMMARY}",
    log:
        "results/logs/{scale}/train/{run}-seed{seed}.log",
    conda:
        "../../environment.yml"
    threads: config["threads"]
    resources:
        **gpu_resources(),
        runtime=job_resource("train_runtime", lambda w: 600 if w.scale == "paper" else 120),
        mem_mb=job_resource("mem_mb", 2000),
    params:
        spec=lambda w: json.dumps(RUNS[w.scale, w.run]),
        tables=lambda w: ",".join(sorted(TABLES_OF_RUN[w.scale, w.run])),
        tracking=lambda w: (f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else ""),
        device=config["device"],
        checkpoint_every=config["checkpoint_every"],
        experiment=config["mlflow_experiment"],
        selection=lambda w, input: f"--selection {input.selection}" if input.selection else "",
    shell:
        "taskbal train --spec {params.spec:q} --seed {wildcards.seed} --split {input.tasks}"
        " --final {output.final} --curve {output.curve} --summary {output.summary}"
        " --device {params.device} --threads {threads}"
        " --checkpoint-every {params.checkpoint_every} --run-id {wildcards.run}"
        " --scale {wildcards.scale} --tables {params.tables} --experiment {params.experiment}"
        " {params.selection} {params.tracking} > {log} 2>&1"
