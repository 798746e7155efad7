"""Commands the Snakemake rules call: ``taskbal split | train | evaluate | table | data``.

Each command reads files, writes files, and (for train and evaluate) logs an MLflow run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

# numpy's OpenBLAS starts one thread per core by default; with one job per core (Snakemake) that
# oversubscribes the CPU, and BLAS-heavy jobs (CMA-ES's eigendecompositions) then run far slower on
# busy cores. One BLAS thread per job unless the environment says otherwise; must be
# set before numpy is first imported (torch imports it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# torch is imported by the commands that need it (train, evaluate): a table, split or data job then
# starts without it.
from .artifacts import CURVE, EVAL, EVAL_SUMMARY, FINAL, TRACKED_RUN, TRAIN_SUMMARY, UNTRACKED  # noqa: E402


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


def run_folder(declared: dict[str, str]) -> Path:
    """The one folder a runner writes into, from the paths the rule declares (name → path). The runners
    write the artifact names of ``taskbal.artifacts``; a declared path that differs is an error before
    anything runs, so the rule and the command cannot drift apart."""
    folders = {Path(path).parent for path in declared.values()}
    wrong = [f"{path} (expected the name {name})" for name, path in declared.items() if Path(path).name != name]
    if len(folders) != 1 or wrong:
        raise ValueError("outputs must be one run folder's " + ", ".join(declared) +
                         (f"; got {', '.join(wrong)}" if wrong else f"; got folders {sorted(map(str, folders))}"))
    return folders.pop()


def start_live_run(args, kind: str, experiment: dict, out: Path):
    """The job's MLflow run, started now; a killed or failed earlier attempt's run is continued (its id
    waits in the run folder until the run is FINISHED)."""
    from . import tracking
    from .artifacts import evaluated_on

    id_file = out / TRACKED_RUN.format(kind=kind)
    earlier = id_file.read_text().strip() if id_file.is_file() else None
    tags, name = tags_from(args, kind, experiment), f"{kind} {args.run_id} seed{args.seed}"
    other_split = evaluated_on(out)
    if other_split:  # the run tested on another split's tasks (a column's evaluate_on)
        tags["evaluated_on"] = other_split
        name += f" on {other_split}"
    try:
        run = tracking.LiveRun(experiment=args.experiment, run_name=name,
                               params={**experiment, "seed": args.seed}, tags=tags,
                               uri=args.tracking_uri, run_id=earlier)
    except Exception as error:  # before any work: nothing is lost
        raise SystemExit(f"taskbal {kind}: cannot start an MLflow run at {tracking.resolve_uri(args.tracking_uri)} "
                         f"(tracking_uri, set by {tracking.uri_source(args.tracking_uri)}): "
                         f"{type(error).__name__}: {error}") from None
    out.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run.run_id + "\n")
    return run


def cmd_train(args) -> None:
    import torch

    from . import tracking
    from .loop import reporting_rows
    from .runners import runner_of

    torch.set_num_threads(args.threads)
    experiment = with_selection(json.loads(args.spec), args.selection)
    out = run_folder({FINAL: args.final, CURVE: args.curve, TRAIN_SUMMARY: args.summary})
    live = None if args.no_track or args.stop_after is not None else start_live_run(args, "train", experiment, out)
    with tracking.ending_on_error(live):
        if restore_untracked(out, experiment, args.seed):
            summary = json.loads((out / TRAIN_SUMMARY).read_text())
            print(f"a finished training of this run whose logging had failed is back from {out / UNTRACKED}; "
                  "logging it", flush=True)
        else:
            options = {"stop_after": args.stop_after} if args.stop_after is not None else {}
            with reporting_rows(live.log_rows) if live else nullcontext():
                summary = runner_of(experiment).train(experiment, args.seed, Path(args.split), out,
                                                      device=args.device, checkpoint_every=args.checkpoint_every,
                                                      **options)
            print(json.dumps(summary, indent=2))
        if live is None:
            return
        try:
            live.finish(summary, artifacts=[out / CURVE, out / TRAIN_SUMMARY, out / FINAL])
        except Exception as error:
            keep_untracked(out)
            raise SystemExit(f"taskbal train: logging to MLflow ({live.uri}) failed: {type(error).__name__}: "
                             f"{error}\nThe finished training is kept in {out / UNTRACKED}; rerunning this job "
                             "logs it without training again.") from None
    (out / TRACKED_RUN.format(kind="train")).unlink(missing_ok=True)


def with_selection(experiment: dict, selection_path: str | None) -> dict:
    """The experiment a run trains: a run whose row is grid-searched takes the selected settings from
    its selection file (the rule declares it), so ``final.pt`` and MLflow hold the values used."""
    from .grid import MARKER, apply_selection
    from .io import read_json

    if selection_path is None:
        if MARKER in experiment:
            raise SystemExit(f"taskbal train: this run's settings come from grid selection "
                             f"{experiment[MARKER]['selection']}: pass its file with --selection")
        return experiment
    try:
        return apply_selection(experiment, read_json(selection_path))
    except ValueError as error:
        raise SystemExit(f"taskbal train --selection {selection_path}: {error}") from None


TRAIN_OUTPUTS = (FINAL, CURVE, TRAIN_SUMMARY)


def keep_untracked(out: Path) -> None:
    """Move a finished training out of Snakemake's reach (it deletes the outputs of a failed job)."""
    kept = out / UNTRACKED
    kept.mkdir(exist_ok=True)
    for name in TRAIN_OUTPUTS:
        os.replace(out / name, kept / name)


def restore_untracked(out: Path, experiment: dict, seed: int) -> bool:
    """Put back a kept training of this experiment and seed; False when there is none."""
    import torch

    kept = out / UNTRACKED
    if not all((kept / name).is_file() for name in TRAIN_OUTPUTS):
        return False
    state = torch.load(kept / FINAL, map_location="cpu", weights_only=False)
    if state.get("experiment") != experiment or state.get("seed") != seed:
        return False
    for name in TRAIN_OUTPUTS:
        os.replace(kept / name, out / name)
    kept.rmdir()
    return True


def cmd_evaluate(args) -> None:
    import torch

    from . import tracking
    from .artifacts import evaluated_on
    from .runners import runner_of

    torch.set_num_threads(args.threads)
    out = run_folder({EVAL: args.per_task, EVAL_SUMMARY: args.summary})
    if evaluated_on(out) not in (None, Path(args.split).stem):
        raise ValueError(f"outputs in {out} are the evaluation on split {evaluated_on(out)}, "
                         f"but --split is {args.split}")
    experiment = torch.load(args.final, map_location="cpu", weights_only=False)["experiment"]
    live = None if args.no_track else start_live_run(args, "evaluate", experiment, out)
    with tracking.ending_on_error(live):
        summary = runner_of(experiment).evaluate(Path(args.final), Path(args.split), out, device=args.device)
        print(json.dumps(summary, indent=2))
        if live is not None:
            live.finish(summary, artifacts=[out / EVAL, out / EVAL_SUMMARY])
    (out / TRACKED_RUN.format(kind="evaluate")).unlink(missing_ok=True)


def files_by_run(paths: list[str], expected_name: str) -> dict[tuple[str, int, str | None], Path]:
    """The rule's declared run files, keyed by (run, seed, evaluated-on split or None) as their paths name them."""
    from .artifacts import run_and_seed

    by_run = {}
    for path in paths:
        run, seed, evaluated_on, name = run_and_seed(path)
        if name != expected_name:
            raise ValueError(f"{path}: expected a {expected_name} file")
        by_run[run, seed, evaluated_on] = Path(path)
    return by_run


def collect(spec: dict, scale: str, paths: list[str], filename: str, reader):
    """Per cell, per seed: ``reader(path)`` of the given run file of that cell's run and seed (its evaluation
    on another split for a column with ``evaluate_on``); a cell whose file is not among ``paths`` (the rule's
    declared inputs) is an error."""
    from .config import seeds_of, table_cells

    by_run = files_by_run(paths, filename)
    collected, runs = {}, set()
    for cell in table_cells(spec, scale):
        runs.add(cell.run)
        evaluated_on = cell.evaluated_on_for(filename)
        per_seed = {}
        for seed in seeds_of(spec, scale):
            if (cell.run, seed, evaluated_on) not in by_run:
                raise ValueError(f"row {cell.row!r}, column {cell.column!r}: no {cell.file(scale, seed, filename)} "
                                 "among the inputs")
            per_seed[seed] = reader(by_run[cell.run, seed, evaluated_on])
        collected[(cell.row, cell.column)] = per_seed
    return collected, sorted(runs)


def add_curve_means(finals: dict, curves: dict) -> None:
    """Let claims and finals also name ``curve_mean_<column>``: the mean of a numeric curve.csv column
    over the curve's points after iteration 0 (e.g. the worst-task accuracy over the whole training), and
    ``curve_start_<column>`` / ``curve_end_<column>``: its first and last recorded values (a trend)."""
    for key, per_seed in finals.items():
        for seed, summary in per_seed.items():
            curve = (curves.get(key) or {}).get(seed)
            if curve is None or "iteration" not in curve:
                continue
            later = curve[curve["iteration"] > 0]
            for column in later.columns:
                if column != "iteration" and later[column].dtype.kind in "fi" and later[column].notna().any():
                    summary.setdefault(f"curve_mean_{column}", float(later[column].mean()))
                    recorded = curve[column].dropna()
                    summary.setdefault(f"curve_start_{column}", float(recorded.iloc[0]))
                    summary.setdefault(f"curve_end_{column}", float(recorded.iloc[-1]))


def add_run_numbers(finals: dict, trained: dict) -> None:
    """Let claims and sweep panels also name a run's train.json numbers (``step_seconds_median``,
    ``peak_memory_mb``: thesis Figure 3.1), where its eval.json has no key of that name."""
    for key, per_seed in finals.items():
        for seed, summary in per_seed.items():
            for name, value in (trained.get(key) or {}).get(seed, {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    summary.setdefault(name, value)


def data_sources(split_sidecars: list[str]) -> str:
    """Which real data the table's splits were built from (their sidecars' ``data_source``), if any."""
    from .io import read_json

    seen: list[str] = []
    for path in sorted(split_sidecars):
        meta = read_json(path)
        tests = (meta.get("images") or {}).get("test")
        for name, text in (meta.get("data_source") or {}).items():
            test = tests.get(name) if isinstance(tests, dict) else None
            line = text + (f" (test images: {test})" if test else "")
            if line not in seen:
                seen.append(line)
    return " | ".join(seen)


def diverged_curves(spec: dict, trained: dict, per_task: dict | None = None, curves: dict | None = None) -> str:
    """Which curves of a figure come from diverged seeds ('row, column: seed 2 diverged at …') and, with
    the runs' eval.csv (``per_task``), which seeds exploded on the test tasks, and with their curves and the
    figure's stall rule, which stalled (taskbal.divergence)."""
    from .divergence import (
        diverged_seeds,
        exploded_seeds,
        explosion_factor,
        explosion_share,
        named_seeds_line,
        stall_rule,
        stalled_seeds,
    )
    from .tables import test_errors

    columns = {column["key"]: column for column in spec["columns"]}
    factor, share, stall = explosion_factor(spec), explosion_share(spec), stall_rule(spec)
    parts = []
    for (row, column), per_seed in trained.items():
        errors = test_errors((per_task or {}).get((row, column)), columns[column])
        stalled = stalled_seeds((curves or {}).get((row, column)), per_seed, stall)
        text = named_seeds_line(diverged_seeds(per_seed), exploded_seeds(errors, per_seed, factor, share), stalled)
        if text:
            parts.append(f"{row}, {columns[column]['label']}: {text}")
    return "; ".join(parts)


def machines_of(summaries) -> dict[str, int]:
    """Which machines trained the runs (their ``train.json``'s ``machine``), with how many runs each."""
    from collections import Counter

    return dict(Counter(summary.get("machine", "not recorded (trained before machines were recorded)")
                        for summary in summaries))


def weights_of(summaries) -> str | None:
    """Which pretrained weights the runs' models started from (``train.json``'s ``pretrained_weights``, written
    by runners that load any), with how many runs each; None when no run says."""
    from collections import Counter

    counts = Counter(summary["pretrained_weights"] for summary in summaries if "pretrained_weights" in summary)
    return " | ".join(f"{what} ({n} run{'s' if n != 1 else ''})" for what, n in counts.items()) or None


def cmd_table(args) -> None:
    from .config import load_table

    render(load_table(Path(args.config)), args)


def cmd_table_so_far(args) -> None:
    """A table from the runs built so far (taskbal.so_far), beside where the table's own page goes."""
    from .config import TABLES_DIR, load_table
    from .so_far import inputs_of, left_out_line, progress, restrict_to_built

    spec = load_table(args.table)
    if spec.get("kind", "table") != "table":
        raise ValueError(f"{spec['name']} is a figure: table-so-far renders tables (a figure draws its curves "
                         "once its runs are built)")
    done = progress(spec, args.scale, lambda path: Path(path).exists())
    built, targets, searched = done.built, done.targets, done.searched
    if not any(built.values()):
        raise ValueError(f"{spec['name']} at scale {args.scale!r}: no cell has every seed's eval.csv and "
                         f"train.json yet; {len(targets)} evaluations are left to build (snakemake --config "
                         f"scale={args.scale} -- {spec['name']} builds the table)")
    column_keys = args.columns.split(",") if args.columns else None
    unknown = [key for key in column_keys or [] if key not in {column["key"] for column in spec["columns"]}]
    if unknown:
        raise ValueError(f"--columns: {', '.join(unknown)} is not a column of {TABLES_DIR / spec['name']}.yaml "
                         f"(its columns: {', '.join(column['key'] for column in spec['columns'])})")
    subset, left_rows, left_columns = restrict_to_built(spec, built, column_keys)
    out = Path(args.out or f"results/tables/{args.scale}/so_far/{spec['name']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = argparse.Namespace(scale=args.scale, out=str(out), eval_summaries=[], **inputs_of(subset, args.scale))
    render(subset, inputs, {"built so far, left out": left_out_line(left_rows, left_columns)})
    if targets:
        print(f"{len(targets)} evaluations left to build: snakemake --config scale={args.scale} -- {' '.join(targets)}")
    if searched:
        print(f"rows waiting for their grid search: {', '.join(searched)} (build the table's target: "
              f"snakemake --config scale={args.scale} -- {spec['name']})")


def render(spec: dict, args, extra_provenance: dict | None = None) -> None:
    """A table's or figure's page, CSV / PNG and record from the files ``args`` names."""
    import pandas as pd

    from .config import describe_scale, seeds_of
    from .io import atomic_path, read_json
    from .report import record_of
    from .tracking import git_commit

    # No build time: a table is a function of its runs, config and commit, so two builds of the same
    # runs (locally and on a cluster) are byte-identical.
    provenance = {"scale_description": describe_scale(spec, args.scale), "git_commit": git_commit(),
                  "seeds": ", ".join(str(s) for s in seeds_of(spec, args.scale)), **(extra_provenance or {})}
    sources = data_sources(args.splits)
    if sources:
        provenance["data"] = sources
    # Each train.json read once: the machines count runs, the cells (divergence) may share a run.
    summaries = {path: read_json(path) for path in files_by_run(args.train_summaries, TRAIN_SUMMARY).values()}
    machines = machines_of(summaries.values())
    trained, _ = collect(spec, args.scale, args.train_summaries, TRAIN_SUMMARY, summaries.__getitem__)
    searched = grid_searched(spec, args.scale, args.selections)
    if searched:
        provenance["grid_search"] = searched
    if machines:
        provenance["machines"] = " | ".join(f"{machine} ({count} run{'s' if count != 1 else ''})"
                                            for machine, count in machines.items())
    weights = weights_of(summaries.values())
    if weights:
        provenance["weights"] = weights
    out = Path(args.out)
    if spec.get("kind", "table") == "table":
        from .divergence import stall_rule
        from .tables import build_table, write_table

        cells, runs = collect(spec, args.scale, args.eval, EVAL, pd.read_csv)
        provenance["runs"] = ", ".join(runs)
        # A table with a stall rule judges each seed's curve (the rule declares curve.csv only for such tables).
        curves = collect(spec, args.scale, args.curves, CURVE, pd.read_csv)[0] if stall_rule(spec) else None
        frame = build_table(spec, cells, args.scale, trained, curves)
        record = record_of(spec, args.scale, provenance, cells=frame, machines=machines)
        for path in write_table(frame, spec, out, args.scale, provenance, record):
            print(f"wrote {path}")
    else:
        from .claims import claims_markdown, findings
        from .figures import STYLES

        style = (spec.get("figure") or {}).get("style", "curves")
        if style not in STYLES:
            raise ValueError(f"figure.style: unknown style {style!r}; known: {sorted(STYLES)}")
        curves, runs = collect(spec, args.scale, args.curves, CURVE, pd.read_csv)
        finals, _ = collect(spec, args.scale, args.eval_summaries, EVAL_SUMMARY, read_json)
        per_task, _ = collect(spec, args.scale, args.eval, EVAL, pd.read_csv)
        add_curve_means(finals, curves)
        add_run_numbers(finals, trained)
        provenance["runs"] = ", ".join(runs)
        diverged = diverged_curves(spec, trained, per_task, curves)
        if diverged:
            provenance["diverged"] = diverged
        png, page, record_path = (out.with_name(out.name + suffix) for suffix in (".png", ".md", ".json"))
        found = findings(spec, finals)
        text = claims_markdown(spec, found, args.scale, provenance, png.name)  # before writing anything
        record = record_of(spec, args.scale, provenance, found=found, figure=png.name, machines=machines)
        STYLES[style](spec, curves, png, args.scale, finals=finals)
        with atomic_path(page) as tmp:
            tmp.write_text(text)
        with atomic_path(record_path) as tmp:
            tmp.write_text(record)
        print(f"wrote {png}, {page} and {record_path}")


def cmd_select(args) -> None:
    """A grid search's selection from its search runs' curves (the rule's declared inputs)."""
    import pandas as pd

    from .config import run_id
    from .divergence import diverged_seeds
    from .grid import final_value, load_grid, score_point, search_experiments, seeds_of_grid, selection_record
    from .io import atomic_path, read_json

    grid_path = Path(args.grid)
    grid = load_grid(grid_path.stem, grid_path.parent)
    base = json.loads(args.base)
    curves, summaries = files_by_run(args.curves, CURVE), files_by_run(args.train_summaries, TRAIN_SUMMARY)
    seeds = seeds_of_grid(grid, args.scale)
    scored = []
    for point, experiment in search_experiments(grid, base, args.scale):
        run = run_id(experiment)
        missing = [seed for seed in seeds if (run, seed, None) not in curves or (run, seed, None) not in summaries]
        if missing:
            raise ValueError(f"grid {grid['name']} point {point}: no curve.csv / train.json of run {run} seed "
                             f"{missing[0]} among the inputs")
        values = {seed: final_value(pd.read_csv(curves[run, seed, None]), grid["select"]["value"]) for seed in seeds}
        diverged = diverged_seeds({seed: read_json(summaries[run, seed, None]) for seed in seeds})
        scored.append(score_point(point, run, values, diverged))
    record = selection_record(grid, args.scale, base, scored)
    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}: {len(scored)} points, selected {record['selected']}")


def cmd_grid(args) -> None:
    """A grid search's page (md) and every point's value (csv) from its selections at one scale; where the grid
    has a stall rule, its points judged on their search runs' curves (the rule declares them then)."""
    import pandas as pd

    from .divergence import stall_rule
    from .grid import load_grid, page_markdown, page_rows, with_stalls
    from .io import atomic_path, read_json
    from .tracking import git_commit

    grid_path = Path(args.grid)
    grid = load_grid(grid_path.stem, grid_path.parent)
    records = [read_json(path) for path in sorted(args.selections)]
    wrong = [record["selection"] for record in records if record["grid"] != grid["name"]]
    if wrong:
        raise ValueError(f"selection {wrong[0]} is not of grid {grid['name']}")
    curves, summaries = files_by_run(args.curves, CURVE), files_by_run(args.train_summaries, TRAIN_SUMMARY)

    def declared(files: dict, run: str, seed: int) -> Path:
        if (run, seed, None) not in files:
            raise ValueError(f"grid {grid['name']}'s stall rule: no curve.csv / train.json of search run {run} seed "
                             f"{seed} among the inputs")
        return files[run, seed, None]

    records = with_stalls(records, stall_rule(grid), lambda run, seed: pd.read_csv(declared(curves, run, seed)),
                          lambda run, seed: read_json(declared(summaries, run, seed)))
    provenance = {"git_commit": git_commit(), "search runs": sum(len(record["points"]) for record in records)}
    out = Path(args.out)
    with atomic_path(out.with_name(out.name + ".csv")) as tmp:
        pd.DataFrame(page_rows(grid, records)).to_csv(tmp, index=False)
    with atomic_path(out.with_name(out.name + ".md")) as tmp:
        tmp.write_text(page_markdown(grid, args.scale, records, json.loads(args.used_by), provenance))
    print(f"wrote {out}.md and {out}.csv")


def grid_searched(spec: dict, scale: str, selection_paths: list[str]) -> str | None:
    """The table's grid-searched rows, one entry per selection: '<row> (<setting>): <chosen values>'; every
    selection a cell needs must be among the rule's declared inputs."""
    from .config import table_cells
    from .grid import context_of, selected_line
    from .io import read_json

    records = {record["selection"]: record for record in map(read_json, selection_paths)}
    rows: dict[str, list[str]] = {}
    for cell in table_cells(spec, scale):
        if cell.selection is None:
            continue
        if cell.selection not in records:
            raise ValueError(f"row {cell.row!r}, column {cell.column!r}: no selection file {cell.selection} among "
                             "the inputs")
        rows.setdefault(cell.row, [])
        if cell.selection not in rows[cell.row]:
            rows[cell.row].append(cell.selection)
    if not rows:
        return None
    context = context_of(list(records.values()))
    by_selections: dict[tuple, list[str]] = {}  # rows that take the same selections are named together
    for row, selections in rows.items():
        by_selections.setdefault(tuple(selections), []).append(row)
    parts = []
    for selections, row_labels in by_selections.items():
        grid = spec["grid_configs"][records[selections[0]]["grid"]]
        chosen = "; ".join(f"{context[name]}: {selected_line(grid, records[name])}" for name in selections)
        parts.append(f"{', '.join(row_labels)}, by {grid['source']} ({grid['name']}) on the validation tasks — "
                     f"{chosen}")
    return " | ".join(parts)


def cmd_report(args) -> None:
    from .report import write_report

    write_report(Path(args.papers), Path(args.tables_dir), [Path(p) for p in args.records],
                 [Path(p) for p in args.figures], args.scale, Path(args.out))
    print(f"wrote {args.out}")


def cmd_data(args) -> None:
    from .data.datasets import (
        DATASETS,
        ChecksumError,
        DownloadError,
        ManualDownloadRequired,
        UnsafeArchiveError,
        describe,
        fetch_dataset,
    )

    if args.data_command == "list":
        print(f"{'name':16} {'how':18} {'files':>5}  {'checksums':12} summary")
        for name in DATASETS:
            row = describe(name)
            print(f"{name:16} {row['how']:18} {row['files']:>5}  {row['checksums']:12} {row['summary']}")
        return
    for name in args.names:
        try:
            record = fetch_dataset(name, Path(args.root), local=args.local, offline_only=args.offline,
                                   offline_root=args.offline_root, progress=not args.no_progress,
                                   retries=args.retries)
        except (ManualDownloadRequired, DownloadError, ChecksumError, UnsafeArchiveError, FileNotFoundError) as error:
            print(f"taskbal data fetch {name}: {error}", file=sys.stderr)
            sys.exit(3)
        unverified = (f"; no published checksum, SHA-256 recorded: {record['unverified']}"
                      if record["unverified"] else "")
        print(f"{name}: {len(record['files'])} file(s) verified, source: {record['source']}{unverified}")


def cmd_weights(args) -> None:
    from .weights import WeightsMissing, fetch_weights

    try:
        path = fetch_weights(args.name, args.out_dir, args.local)
    except (WeightsMissing, ValueError) as error:
        print(f"taskbal weights fetch: {error}", file=sys.stderr)
        sys.exit(3)
    print(f"{args.name}: placed at {path}")


def cmd_data_split(args) -> None:
    from .data.datasets import build_splits

    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as error:
        raise ValueError(f"--options: not valid JSON ({error})") from error
    if not isinstance(options, dict):
        raise ValueError("--options: expected a JSON object")
    try:
        data = build_splits(args.name, Path(args.root) / args.name, Path(args.out), **options)
    except TypeError as error:  # an option the builder does not take
        raise ValueError(f"--options for {args.name}: {error}") from error
    exact = "exact" if data["exact"] else f"approximation: {data.get('deviation', '')}"
    print(f"wrote {args.out}: {args.name} {data['protocol']}; {json.dumps(data['counts'])}; {exact}; "
          f"sha256 {data['sha256'][:12]}")


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
    train.add_argument("--final", required=True, help=f"the run's {FINAL}; {CURVE} and {TRAIN_SUMMARY} go beside it")
    train.add_argument("--curve", required=True)
    train.add_argument("--summary", required=True)
    train.add_argument("--checkpoint-every", type=int, default=500)
    train.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    train.add_argument("--selection", default=None,
                       help="the grid selection (results/grids/<scale>/<selection>.json) of a grid-searched run")
    add_tracking_arguments(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="per-task meta-test errors of a trained run")
    evaluate.add_argument("--final", required=True)
    evaluate.add_argument("--split", required=True)
    evaluate.add_argument("--per-task", required=True, help=f"the run's {EVAL}; {EVAL_SUMMARY} goes beside it")
    evaluate.add_argument("--summary", required=True)
    add_tracking_arguments(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    table = sub.add_parser("table", help="render a table or figure from evaluated runs (the rule's inputs)")
    table.add_argument("--config", required=True, help="the table config, e.g. config/tables/simol_table1.yaml")
    table.add_argument("--scale", required=True)
    table.add_argument("--out", required=True, help="output path without extension")
    table.add_argument("--eval", nargs="*", default=[], help="eval.csv of every run and seed")
    table.add_argument("--curves", nargs="*", default=[],
                       help="curve.csv of every run and seed (figures, and tables with a stall rule)")
    table.add_argument("--eval-summaries", nargs="*", default=[], help="eval.json of every run and seed (figures)")
    table.add_argument("--splits", nargs="*", default=[], help="sidecars (.json) of the runs' split files")
    table.add_argument("--selections", nargs="*", default=[], help="grid selections of the grid-searched rows")
    table.add_argument("--train-summaries", nargs="*", default=[],
                       help="train.json of every run and seed: machines, divergence, timing columns")
    table.set_defaults(func=cmd_table)
    so_far = sub.add_parser("table-so-far", help="a table from the runs built so far: the rows and columns whose "
                            "runs are all trained and evaluated, with the table's verdicts (taskbal.so_far)")
    so_far.add_argument("table", help="the table's name, e.g. nash_table2")
    so_far.add_argument("--scale", required=True)
    so_far.add_argument("--columns", default=None,
                        help="comma-separated column keys to show, with every row built in all of them (default: "
                             "the block with the most built cells)")
    so_far.add_argument("--out", default=None,
                        help="output path without extension (default results/tables/<scale>/so_far/<table>)")
    so_far.set_defaults(func=cmd_table_so_far)
    select = sub.add_parser("select", help="a grid search's selection from its search runs' curves")
    select.add_argument("--grid", required=True, help="the grid config, e.g. config/grids/simol_appendix_d.yaml")
    select.add_argument("--scale", required=True)
    select.add_argument("--base", required=True, help="the selection's base experiment as JSON (taskbal.grid)")
    select.add_argument("--curves", nargs="*", default=[], help="curve.csv of every search run and seed")
    select.add_argument("--train-summaries", nargs="*", default=[], help="train.json of every search run and seed")
    select.add_argument("--out", required=True, help="the selection file (.json)")
    select.set_defaults(func=cmd_select)

    grid = sub.add_parser("grid", help="a grid search's page and CSV from its selections at one scale")
    grid.add_argument("--grid", required=True)
    grid.add_argument("--scale", required=True)
    grid.add_argument("--selections", nargs="*", default=[], help="the grid's selection files at this scale")
    grid.add_argument("--used-by", default="{}", help="JSON: selection → the table cells it serves")
    grid.add_argument("--curves", nargs="*", default=[],
                      help="curve.csv of every search run and seed (a grid with a stall rule)")
    grid.add_argument("--train-summaries", nargs="*", default=[],
                      help="train.json of every search run and seed (a grid with a stall rule)")
    grid.add_argument("--out", required=True, help="output path without extension (.md and .csv)")
    grid.set_defaults(func=cmd_grid)

    report = sub.add_parser("report", help="one self-contained HTML page from the records of tables and figures")
    report.add_argument("--papers", required=True, help="config/papers.yaml: every table and figure of the papers")
    report.add_argument("--tables-dir", default="config/tables", help="the table configs (to check papers.yaml)")
    report.add_argument("--records", nargs="*", default=[], help="<table>.json / <figure>.json records")
    report.add_argument("--figures", nargs="*", default=[], help="the figures' PNG files")
    report.add_argument("--scale", required=True)
    report.add_argument("--out", required=True, help="the HTML file")
    report.set_defaults(func=cmd_report)
    data = sub.add_parser("data", help="download, verify and unpack datasets into resources/")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_sub.add_parser("list", help="the datasets and how each is obtained").set_defaults(func=cmd_data)
    fetch = data_sub.add_parser("fetch", help="download (or take from a local copy), verify, unpack")
    fetch.add_argument("names", nargs="+", help="dataset names (see `taskbal data list`)")
    fetch.add_argument("--root", default="resources")
    fetch.add_argument("--local", default=None, help="a local directory or archive holding the dataset's files")
    fetch.add_argument("--offline", action="store_true", help="no network: local copies or offline sources only")
    fetch.add_argument("--offline-root", default=None, metavar="DIR",
                       help="a folder of offline copies, DIR/<name>/ (config offline_data), taken when the download "
                            "fails by datasets that have one (Omniglot); verified before use")
    fetch.add_argument("--retries", type=int, default=5)
    fetch.add_argument("--no-progress", action="store_true")
    fetch.set_defaults(func=cmd_data)
    data_split = data_sub.add_parser("split", help="write a dataset's train/val/test split (paper protocol) to a file")
    data_split.add_argument("name", help="dataset name (mini_imagenet, tiered_imagenet, omniglot, cub, celeba, "
                                         "office31, office_home, nyuv2, qm9)")
    data_split.add_argument("--root", default="resources", help="datasets root; reads <root>/<name>/")
    data_split.add_argument("--out", required=True, help="split file (JSON with its SHA-256)")
    data_split.add_argument("--options", default="{}", help="builder options as JSON, e.g. "
                            '\'{"protocol": "character", '
                            '"episodes": {"test": {"ways": 5, "shots": 1, "count": 600}}}\'')
    data_split.set_defaults(func=cmd_data_split)
    weights = sub.add_parser("weights", help="place pretrained weights a run names (never downloads them)")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    place = weights_sub.add_parser("fetch", help="copy a weights file from a local folder or PyTorch's hub cache")
    place.add_argument("name", help="the file's name, e.g. resnet18-f37072fd.pth")
    place.add_argument("--out-dir", default="resources/weights")
    place.add_argument("--local", default=None, help="a folder holding the file (config weights_dir)")
    place.set_defaults(func=cmd_weights)
    return root


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # a command line: a local build's job server runs it, if one takes it (taskbal.jobserver)
        from .jobserver import forward

        code = forward(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    args = parser().parse_args(argv)
    from .tracking import Terminated

    try:
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        print(f"taskbal {args.command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Terminated:
        print(f"taskbal {args.command}: stopped by SIGTERM", file=sys.stderr)
        sys.exit(143)


if __name__ == "__main__":
    main()
