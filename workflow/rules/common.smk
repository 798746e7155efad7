# Configs → the runs they need. Everything the rules know comes from here.
import json

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from taskbal.config import TABLES_DIR, check_experiment, load_table, seeds_of, table_cells

validate(config, "../schemas/config.schema.yaml")


def load_validated_tables():
    tables = {}
    for path in sorted(Path(TABLES_DIR).glob("*.yaml")):
        try:
            spec = load_table(path)
            validate(spec, "../schemas/table.schema.yaml", set_default=False)
            for scale in spec["scales"]:
                for cell in table_cells(spec, scale):
                    where = f"scale {scale!r}, row {cell.row!r}, column {cell.column!r}"
                    try:
                        validate(cell.experiment, "../schemas/experiment.schema.yaml", set_default=False)
                        check_experiment(cell.experiment)
                    except (WorkflowError, ValueError) as error:
                        raise WorkflowError(f"{where}: {error}")
        except (WorkflowError, ValueError, FileNotFoundError) as error:
            raise WorkflowError(f"{path}: {error}")
        tables[spec["name"]] = spec
    unknown = [name for name in config["tables"] if name not in tables]
    if unknown:
        raise WorkflowError(f"config key 'tables': no config/tables/<name>.yaml for {unknown}; "
                            f"known: {sorted(tables)}")
    return tables


TABLES = load_validated_tables()
SCALES = sorted({scale for spec in TABLES.values() for scale in spec["scales"]})

# (scale, run id) → resolved experiment; (scale, split id) → data section; run → tables it serves.
RUNS, SPLITS, SPLIT_OF_RUN, TABLES_OF_RUN = {}, {}, {}, {}
for table_name, spec in TABLES.items():
    for scale in spec["scales"]:
        for cell in table_cells(spec, scale):
            RUNS[scale, cell.run] = cell.experiment
            SPLITS[scale, cell.split] = cell.experiment["data"]
            SPLIT_OF_RUN[scale, cell.run] = cell.split
            TABLES_OF_RUN.setdefault((scale, cell.run), set()).add(table_name)

TABLE_NAMES = [name for name, spec in TABLES.items() if spec.get("kind", "table") == "table"]
FIGURE_NAMES = [name for name, spec in TABLES.items() if spec.get("kind") == "figure"]


wildcard_constraints:
    scale="|".join(SCALES),
    seed=r"\d+",
    run=r"[A-Za-z0-9_.\-]+",
    split=r"[A-Za-z0-9_.\-]+",
    table="|".join(TABLE_NAMES) or "no-table",
    figure="|".join(FIGURE_NAMES) or "no-figure",


def target_of(name, scale):
    if name in FIGURE_NAMES:
        return f"results/figures/{scale}/{name}.png"
    return f"results/tables/{scale}/{name}.md"


def default_targets():
    return [target_of(name, config["scale"]) for name in config["tables"]]


def split_inputs(scale, split):
    """Dataset files a split is built from (a family's ``input_files(data)``; none for generated
    families), so that the DAG fetches a dataset before drawing its splits."""
    from taskbal.data import family_module

    data = SPLITS[scale, split]
    family = family_module(data["family"])
    return family.input_files(data) if hasattr(family, "input_files") else []


def run_dir(scale, run, seed):
    return f"results/runs/{scale}/{run}/seed{seed}"


def cell_files(spec_name, scale, filename):
    """The per-seed files of every run cell of a table."""
    spec = TABLES[spec_name]
    runs = sorted({cell.run for cell in table_cells(spec, scale)})
    return [f"{run_dir(scale, run, seed)}/{filename}" for run in runs for seed in seeds_of(spec, scale)]
