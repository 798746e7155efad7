# Configs → the runs they need. Everything the rules know comes from here.
import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from taskbal import artifacts
from taskbal.config import seeds_of, table_cells
from taskbal.divergence import stall_rule
from taskbal.plan import PlanError, load_plan

validate(config, "../schemas/config.schema.yaml")

try:
    PLAN = load_plan(
        "config/tables",
        Path(workflow.basedir) / "workflow/schemas",
        config["tables"],
    )
except PlanError as error:
    raise WorkflowError(str(error))

if workflow.local_exec and config["device"].startswith("cuda"):
    # Jobs that run here need the GPU here (a cluster's jobs check on their node).
    from taskbal.train import check_device

    try:
        check_device(config["device"])
    except ValueError as error:
        raise WorkflowError(f"config key {error} (config/config.yaml or --config)")

if not workflow.dryrun:
    from taskbal.tracking import check_reachable

    try:
        check_reachable(config.get("tracking_uri"))
    except ValueError as error:
        raise WorkflowError(str(error))


def start_job_server():
    """The build's job server (config job_server), for jobs that run on this machine: it runs each
    `taskbal` command in a fork of one process that has imported torch, MLflow and pandas once.
    """
    if config.get("job_server", True) and workflow.local_exec:
        from taskbal import jobserver

        if jobserver.start("results/logs/job_server.log") is None:
            print("job server did not start (results/logs/job_server.log): every job runs in its own process")


def stop_job_server():
    if config.get("job_server", True) and workflow.local_exec:
        from taskbal import jobserver

        jobserver.stop()


TABLES = PLAN.tables
SCALES = PLAN.scales
RUNS, SPLITS = PLAN.runs, PLAN.splits
SPLIT_OF_RUN, TABLES_OF_RUN = PLAN.split_of_run, PLAN.tables_of_run
TABLE_NAMES = PLAN.names("table")
FIGURE_NAMES = PLAN.names("figure")
GRIDS, SELECTIONS = PLAN.grids, PLAN.selections


wildcard_constraints:
    scale="|".join(SCALES),
    seed=r"\d+",
    run=r"[A-Za-z0-9_.\-]+",
    split=r"[A-Za-z0-9_.\-]+",
    table="|".join(TABLE_NAMES) or "no-table",
    figure="|".join(FIGURE_NAMES) or "no-figure",
    grid="|".join(GRIDS) or "no-grid",
    selection=r"[a-z0-9_]+-[0-9a-f]{8}",


def target_of(name, scale):
    if name in FIGURE_NAMES:
        return f"results/figures/{scale}/{name}.png"
    return f"results/tables/{scale}/{name}.md"


def record_path(name, scale):
    """The record of a table or figure: what the reproduction report is built from."""
    folder = "figures" if name in FIGURE_NAMES else "tables"
    return f"results/{folder}/{scale}/{name}.json"


def tables_at(scale):
    """The configured tables and figures that define ``scale`` (medium is defined by some tables only)."""
    return [name for name in config["tables"] if scale in TABLES[name]["scales"]]


def default_targets():
    """The configured tables and figures that define the configured scale, the pages of the grid searches
    their rows take settings from, and the report that gathers them."""
    scale = config["scale"]
    names = tables_at(scale)
    grids = sorted(
        {
            SELECTIONS[scale, cell.selection]["grid"]
            for name in names
            for cell in table_cells(TABLES[name], scale)
            if cell.selection
        }
    )
    return (
        [target_of(name, scale) for name in names]
        + [f"results/grids/{scale}/{grid}.md" for grid in grids]
        + [f"results/report/{scale}.html"]
    )


def job_resource(key, default):
    """A training or evaluation job's cluster resource: the most that any table its run serves asks
    for (a table's `resources`), else the default (a value, or a function of the wildcards).
    """

    def of_job(wildcards):
        asked = PLAN.resources_of_run.get((wildcards.scale, wildcards.run), {})
        return asked[key] if key in asked else (default(wildcards) if callable(default) else default)

    return of_job


def gpu_resources():
    """The executor plugin's GPU request (`gpu`: sbatch --gpus=N, or `gres`: --gres=gpu:N, per the
    config key gpu_request); CPU-only jobs ask for none."""
    gpus = job_resource("gpu", 0)
    if config["gpu_request"] == "gres":
        return {"gres": lambda w: f"gpu:{gpus(w)}" if gpus(w) else ""}
    return {"gpu": gpus}


def split_inputs(scale, split):
    """Dataset files a split is built from (none for generated families), so that the DAG
    fetches a dataset before drawing its splits."""
    return PLAN.split_inputs[scale, split]


def run_files(spec_name, scale, filename):
    """The per-seed files of every run cell of a table (eval.csv / eval.json on another split's tasks for a
    column with evaluate_on)."""
    spec = TABLES[spec_name]
    seeds = seeds_of(spec, scale)
    return sorted({cell.file(scale, seed, filename) for cell in table_cells(spec, scale) for seed in seeds})


def stall_curves(spec_name, scale):
    """The curve.csv files of a table with a stall rule, which judges each seed's curve; none for another table."""
    return run_files(spec_name, scale, artifacts.CURVE) if stall_rule(TABLES[spec_name]) else []


def split_sidecars(spec_name, scale):
    """The sidecars of a table's split files, and of the splits its runs are evaluated on: which data the
    splits were drawn from."""
    cells = table_cells(TABLES[spec_name], scale)
    splits = sorted({cell.split for cell in cells} | {cell.evaluated_on for cell in cells if cell.evaluated_on})
    return [artifacts.split_sidecar(scale, split) for split in splits]


def weights_of_run(scale, run):
    """The pretrained weights file a run's model loads (`mtl.weights`, `clip.weights`; a list: empty for other
    runs), made by rule weights."""
    run_settings = RUNS[scale, run]
    weights = [(run_settings.get(section) or {}).get("weights") for section in ("mtl", "clip")]
    return [path for path in weights if path]


def selection_of_run(scale, run):
    """The grid selection a grid-searched run takes settings from (a list: empty for other runs)."""
    selection = PLAN.selection_of_run.get((scale, run))
    return [artifacts.selection_file(scale, selection)] if selection else []


def table_selections(spec_name, scale):
    """The selections of a table's grid-searched rows: the table page names the chosen values."""
    selections = sorted({cell.selection for cell in table_cells(TABLES[spec_name], scale) if cell.selection})
    return [artifacts.selection_file(scale, selection) for selection in selections]


def search_files(scale, selection, filename):
    """The per-seed files of a selection's search runs."""
    search = SELECTIONS[scale, selection]
    return [artifacts.run_file(scale, run, seed, filename) for run in search["runs"] for seed in search["seeds"]]


def grid_selections(grid, scale):
    """Every selection of a grid at a scale (one per setting of the tables that use it)."""
    return sorted(name for (at, name), search in SELECTIONS.items() if at == scale and search["grid"] == grid)


def grid_stall_files(grid, scale, filename):
    """The per-seed files of every search run of a grid at a scale, where the grid's page judges them by its
    stall rule (none otherwise)."""
    if not stall_rule(GRIDS[grid]):
        return []
    return [path for selection in grid_selections(grid, scale) for path in search_files(scale, selection, filename)]


def cells_using(grid, scale):
    """selection → the table cells it serves ('simol_table1: SIMOL, overall 5-shot'), for the grid's page."""
    used = {}
    for name, spec in TABLES.items():
        if scale not in spec["scales"]:
            continue
        for cell in table_cells(spec, scale):
            if cell.selection and SELECTIONS[scale, cell.selection]["grid"] == grid:
                used.setdefault(cell.selection, []).append(f"{name}: {cell.row}, {cell.column}")
    return used
