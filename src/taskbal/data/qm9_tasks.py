"""QM9's 11 molecular properties as 11 regression tasks on the same molecules (thesis Table 3.5, after
Nash-MTL and FORUM's code).

The family reads QM9's split file (``results/dataset_splits/qm9/nash_mtl.json``: Nash-MTL's permutation,
10,000 test, 10,000 validation, the other 110,831 molecules for training; indices into PyTorch
Geometric's QM9 order) and the raw files under ``resources/qm9/raw/``, which PyTorch Geometric's ``QM9``
dataset turns into graphs (with RDKit: atom features, bonds, coordinates, the 19 targets converted to eV),
and writes one ``.npz`` with every molecule packed as a dense row (taskbal/mtl/mpnn.py) and the 11
targets [0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11] of PyG's y (FORUM's: μ, α, ε_HOMO, ε_LUMO, ⟨R²⟩, ZPVE, U₀,
U, H, G, c_v; the four energies as atomization energies), each normalised by the training split's mean
and standard deviation (Nash-MTL). A task's MAE is reported in the table's units: the normalised error
times the standard deviation, times 1,000 for ε_HOMO, ε_LUMO, ZPVE, U₀, U, H and G (meV, as Nash-MTL and
the thesis print them).

``max_molecules`` keeps the first n molecules of every split in the split file's order (a smaller build;
the sidecar says so). PyTorch Geometric processes the raw files in a temporary folder, so nothing is
written next to the dataset.

``data`` keys (defaults): split_variant (nash_mtl), max_molecules (null), resources, dataset_splits.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..io import read_arrays, write_arrays
from .checks import check_integer, data_settings
from .resources import data_source, dataset_inputs, dataset_split_file

SPLITS = ("train", "val", "test")
DATASET = "qm9"
TARGETS = {"mu": 0, "alpha": 1, "homo": 2, "lumo": 3, "r2": 5, "zpve": 6, "u0": 12, "u": 13, "h": 14, "g": 15,
           "cv": 11}
MILLI = ("homo", "lumo", "zpve", "u0", "u", "h", "g")  # reported in meV
DEFAULTS = {"split_variant": "nash_mtl", "max_molecules": None, "resources": "resources",
            "dataset_splits": "results/dataset_splits"}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "qm9_tasks", (), DEFAULTS)
    if settings["max_molecules"] is not None:
        check_integer("max_molecules", settings["max_molecules"], 1)
    return settings


def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    return dataset_inputs(check_data(data), DATASET)


def pyg_qm9(raw_dir: Path):
    """PyTorch Geometric's QM9 processed from ``raw_dir``'s files in a temporary root (needs RDKit)."""
    from torch_geometric.datasets import QM9

    work = tempfile.TemporaryDirectory(prefix="qm9-")
    (Path(work.name) / "raw").mkdir()
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"):
        source = raw_dir / name
        if not source.is_file():
            raise FileNotFoundError(f"{source}: QM9's raw file is missing (rerun `snakemake data_qm9`)")
        os.symlink(source.resolve(), Path(work.name) / "raw" / name)
    return QM9(work.name), work


def pack(molecule) -> np.ndarray:
    """One PyG molecule as a dense row [MAX_ATOMS, PACKED] (taskbal/mtl/mpnn.py's layout)."""
    from ..mtl.mpnn import BONDS, FEATURES, MAX_ATOMS, PACKED, POSITION, PRESENT

    k = molecule.x.shape[0]
    if k > MAX_ATOMS:
        raise ValueError(f"a molecule of {k} atoms; QM9's have at most {MAX_ATOMS}")
    row = np.zeros((MAX_ATOMS, PACKED), dtype=np.float32)
    row[:k, PRESENT] = 1.0
    row[:k, FEATURES] = molecule.x.numpy()
    row[:k, POSITION] = molecule.pos.numpy()
    source, target = molecule.edge_index.numpy()
    bond_type = molecule.edge_attr.numpy().argmax(1) + 1
    row[source, BONDS.start + target] = bond_type
    return row


def write_splits(path: Path | str, data: dict) -> dict:
    from .datasets import read_record
    from .resources import find_dir
    from .splitfile import read_split_file

    settings = check_data(data)
    split_file = read_split_file(dataset_split_file(settings, DATASET))
    resource_dir = Path(settings["resources"]) / DATASET
    record = read_record(settings["resources"], DATASET)
    dataset, work = pyg_qm9(find_dir(resource_dir, ["raw"], "QM9 raw files"))
    with work:
        columns = list(TARGETS.values())
        chosen = {split: split_file["splits"][split]["images"][:settings["max_molecules"]] for split in SPLITS}
        targets = {split: np.stack([dataset[i].y[0, columns].numpy() for i in indices]).astype(np.float64)
                   for split, indices in chosen.items()}
        mean, std = targets["train"].mean(0), targets["train"].std(0)
        std = np.where(std > 0, std, 1.0)
        arrays = {}
        for split, indices in chosen.items():
            arrays[f"{split}_molecules"] = np.stack([pack(dataset[i]) for i in indices])
            arrays[f"{split}_targets"] = ((targets[split] - mean) / std).astype(np.float32)
    meta = {"family": "qm9_tasks", "dataset": DATASET, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "targets": list(TARGETS), "mean": mean.tolist(),
            "std": std.tolist(), "counts": {split: len(indices) for split, indices in chosen.items()},
            "max_molecules": settings["max_molecules"],
            "data_source": {DATASET: data_source(split_file, record, settings["max_molecules"] and
                                                 f"the first {settings['max_molecules']} molecules of each split")}}
    return write_arrays(path, arrays, meta)


class QM9Tasks:
    """The MTL family view: 11 regressions on the same molecules."""

    splits = SPLITS
    shared_inputs = True
    task_names = list(TARGETS)

    def __init__(self, path: Path | str):
        self.meta, self.split_arrays = read_arrays(path)

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        targets = self.split_arrays[f"{split}_targets"][:, self.task_names.index(task)]
        return self.split_arrays[f"{split}_molecules"], targets

    def objective(self, task: str) -> dict:
        """Regression on the normalised target; MAE in the table's units (std, and meV where Nash-MTL uses it)."""
        scale = self.meta["std"][self.task_names.index(task)] * (1000.0 if task in MILLI else 1.0)
        return {"kind": "regression", "scale": scale}


Tasks = QM9Tasks
