"""Commands the Snakemake rules call: ``taskbal split | train | evaluate | table``.

Each command reads files, writes files, and (for train and evaluate) logs an MLflow run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch


def cmd_split(args) -> None:
    from .data import family_module

    data = json.loads(args.data)
    meta = family_module(data["family"]).write_splits(Path(args.out), data)
    print(f"wrote {args.out}: {meta.get('sizes', '')} sha256 {meta['sha256'][:12]}")


def tags_from(args, kind: str, experiment: dict) -> dict[str, str]:
    tags = {"kind": kind, "tables": args.tables, "method": experiment["weighting"]["name"],
            "seed": str(args.seed), "scale": args.scale, "run": args.run_id,
            "runner": experiment.get("runner", "meta"), "family": experiment["data"]["family"]}
    for section in ("learner", "model"):
        if "name" in experiment.get(section, {}):
            tags[section] = str(experiment[section]["name"])
    if "shots" in experiment["data"]:
        tags["shots"] = str(experiment["data"]["shots"])
    return tags


def cmd_train(args) -> None:
    from . import tracking
    from .runners import runner_of
    from .train import CURVE_FILE, FINAL_FILE, SUMMARY_FILE

    torch.set_num_threads(args.threads)
    experiment = json.loads(args.spec)
    out = Path(args.out)
    options = {"stop_after": args.stop_after} if args.stop_after is not None else {}
    summary = runner_of(experiment).train(experiment, args.seed, Path(args.split), out, device=args.device,
                                          checkpoint_every=args.checkpoint_every, **options)
    print(json.dumps(summary, indent=2))
    if args.stop_after is not None or args.no_track:
        return
    import pandas as pd

    curve = pd.read_csv(out / CURVE_FILE).to_dict("records")
    tracking.log_run(experiment=args.experiment, run_name=f"train {args.run_id} seed{args.seed}",
                     params={**experiment, "seed": args.seed}, metrics=summary, history=curve,
                     artifacts=[out / CURVE_FILE, out / SUMMARY_FILE, out / FINAL_FILE],
                     tags=tags_from(args, "train", experiment), uri=args.tracking_uri)


def cmd_evaluate(args) -> None:
    from . import tracking
    from .evaluate import EVAL_FILE, EVAL_SUMMARY_FILE
    from .runners import runner_of

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    experiment = torch.load(args.final, map_location="cpu", weights_only=False)["experiment"]
    summary = runner_of(experiment).evaluate(Path(args.final), Path(args.split), out, device=args.device)
    print(json.dumps(summary, indent=2))
    if args.no_track:
        return
    tracking.log_run(experiment=args.experiment, run_name=f"evaluate {args.run_id} seed{args.seed}",
                     params={**experiment, "seed": args.seed}, metrics=summary,
                     artifacts=[out / EVAL_FILE, out / EVAL_SUMMARY_FILE],
                     tags=tags_from(args, "evaluate", experiment), uri=args.tracking_uri)


def collect(spec: dict, scale: str, runs_root: Path, filename: str, reader):
    """Per cell, per seed: ``reader(path)`` of ``runs_root/<run>/seed<s>/<filename>``."""
    from .config import table_cells

    collected, runs = {}, set()
    for cell in table_cells(spec, scale):
        runs.add(cell.run)
        collected[(cell.row, cell.column)] = {
            seed: reader(runs_root / cell.run / f"seed{seed}" / filename) for seed in spec["seeds"]}
    return collected, sorted(runs)


def cmd_table(args) -> None:
    import pandas as pd

    from .config import describe_scale, load_table
    from .tracking import git_commit

    spec = load_table(args.table, Path(args.tables_dir))
    runs_root = Path(args.runs_root)
    provenance = {"scale_description": describe_scale(spec, args.scale), "git_commit": git_commit(),
                  "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "seeds": ", ".join(str(s) for s in spec["seeds"])}
    if spec.get("kind", "table") == "table":
        from .tables import build_table, write_table

        cells, runs = collect(spec, args.scale, runs_root, "eval.csv", pd.read_csv)
        provenance["runs"] = ", ".join(runs)
        frame = build_table(spec, cells, args.scale)
        for path in write_table(frame, spec, Path(args.out), args.scale, provenance):
            print(f"wrote {path}")
    else:
        from .claims import claims_markdown
        from .figures import STYLES
        from .io import atomic_path, read_json

        style = (spec.get("figure") or {}).get("style", "curves")
        if style not in STYLES:
            raise ValueError(f"figure.style: unknown style {style!r}; known: {sorted(STYLES)}")
        curves, runs = collect(spec, args.scale, runs_root, "curve.csv", pd.read_csv)
        finals, _ = collect(spec, args.scale, runs_root, "eval.json", read_json)
        provenance["runs"] = ", ".join(runs)
        out = Path(args.out)
        png, page = out.with_name(out.name + ".png"), out.with_name(out.name + ".md")
        text = claims_markdown(spec, finals, args.scale, provenance, png.name)  # before writing anything
        STYLES[style](spec, curves, png, args.scale)
        with atomic_path(page) as tmp:
            tmp.write_text(text)
        print(f"wrote {png} and {page}")


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--scale", required=True)
    parser.add_argument("--tables", default="", help="comma-separated tables this run serves (MLflow tag)")
    parser.add_argument("--experiment", default="taskbal", help="MLflow experiment name")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="taskbal", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    split = sub.add_parser("split", help="draw a task family's train/val/test tasks into a file")
    split.add_argument("--data", required=True, help="the experiment's data section as JSON")
    split.add_argument("--out", required=True)
    split.set_defaults(func=cmd_split)

    train = sub.add_parser("train", help="train one run (resumes from a killed run's state)")
    train.add_argument("--spec", required=True, help="the resolved experiment as JSON")
    train.add_argument("--split", required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    add_tracking_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="per-task meta-test errors of a trained run")
    evaluate.add_argument("--final", required=True)
    evaluate.add_argument("--split", required=True)
    evaluate.add_argument("--out", required=True)
    add_tracking_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    table = sub.add_parser("table", help="render a table or figure from evaluated runs")
    table.add_argument("--table", required=True, help="table name, e.g. simol_table1")
    table.add_argument("--scale", required=True)
    table.add_argument("--runs-root", required=True)
    table.add_argument("--out", required=True, help="output path without extension")
    table.add_argument("--tables-dir", default="config/tables")
    table.set_defaults(func=cmd_table)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"taskbal {args.command}: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
