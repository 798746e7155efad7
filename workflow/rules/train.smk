rule train:
    """Meta-train one run (method × setting) for one seed; resumes if a killed job left state."""
    input:
        tasks=lambda w: f"results/splits/{w.scale}/{SPLIT_OF_RUN[w.scale, w.run]}.npz",
    output:
        final="results/runs/{scale}/{run}/seed{seed}/final.pt",
        curve="results/runs/{scale}/{run}/seed{seed}/curve.csv",
        summary="results/runs/{scale}/{run}/seed{seed}/train.json",
    params:
        spec=lambda w: json.dumps(RUNS[w.scale, w.run]),
        out=lambda w: run_dir(w.scale, w.run, w.seed),
        tables=lambda w: ",".join(sorted(TABLES_OF_RUN[w.scale, w.run])),
        tracking=lambda w: f"--tracking-uri {config['tracking_uri']}" if config.get("tracking_uri") else "",
        device=config["device"],
        checkpoint_every=config["checkpoint_every"],
        threads=config["threads"],
        experiment=config["mlflow_experiment"],
    log:
        "results/logs/{scale}/train/{run}-seed{seed}.log",
    threads: 1
    resources:
        runtime=lambda w: 600 if w.scale == "paper" else 120,
        mem_mb=2000,
    conda:
        "../../environment.yml"
    shell:
        "taskbal train --spec {params.spec:q} --seed {wildcards.seed} --split {input.tasks}"
        " --out {params.out} --device {params.device} --threads {params.threads}"
        " --checkpoint-every {params.checkpoint_every} --run-id {wildcards.run}"
        " --scale {wildcards.scale} --tables {params.tables} --experiment {params.experiment}"
        " {params.tracking} > {log} 2>&1"
