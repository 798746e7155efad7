rule evaluate:
    """Adapt to every meta-test task and save its error (one line per task)."""
    input:
        final="results/runs/{scale}/{run}/seed{seed}/final.pt",
        tasks=lambda w: f"results/splits/{w.scale}/{SPLIT_OF_RUN[w.scale, w.run]}.npz",
    output:
        per_task="results/runs/{scale}/{run}/seed{seed}/eval.csv",
        summary="results/runs/{scale}/{run}/seed{seed}/eval.json",
    params:
        out=lambda w: run_dir(w.scale, w.run, w.seed),
        tables=lambda w: ",".join(sorted(TABLES_OF_RUN[w.scale, w.run])),
        tracking=lambda w: f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
        device=config["device"],
        threads=config["threads"],
        experiment=config["mlflow_experiment"],
    log:
        "results/logs/{scale}/evaluate/{run}-seed{seed}.log",
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    conda:
        "../../environment.yml"
    shell:
        "taskbal evaluate --final {input.final} --split {input.tasks} --out {params.out}"
        " --seed {wildcards.seed} --device {params.device} --threads {params.threads}"
        " --run-id {wildcards.run} --scale {wildcards.scale} --tables {params.tables}"
        " --experiment {params.experiment} {params.tracking} > {log} 2>&1"
