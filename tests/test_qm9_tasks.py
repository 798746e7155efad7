"""QM9 as 11 regression tasks (thesis Table 3.5): the packed molecules against PyTorch Geometric's own
complete graph and distances, the MPNN on packed rows against the same layers on PyG's batch, the
targets' normalisation and MAE units, and a tiny build of the table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_split_layouts as fake  # noqa: E402
from taskbal.data import qm9_tasks  # noqa: E402
from taskbal.data.datasets import build_splits  # noqa: E402
from taskbal.mtl.data import MultiTaskData  # noqa: E402
from taskbal.mtl.mpnn import MPNNEncoder, graph_batch  # noqa: E402
from taskbal.mtl.objectives import objective  # noqa: E402
from workspaces import build_tiny, edit_table, edit_yaml, mark_generated, tiny_workspace  # noqa: E402


@pytest.fixture(scope="module")
def qm9(tmp_path_factory):
    root = tmp_path_factory.mktemp("qm9")
    resources = root / "resources"
    fake.qm9_molecules(resources / "qm9")
    (resources / "qm9/.verified").write_text(json.dumps({"source": "generated for a test"}))
    build_splits("qm9", resources / "qm9", root / "splits/qm9/nash_mtl.json", test_size=3, val_size=3)
    data = {"family": "qm9_tasks", "resources": str(resources), "dataset_splits": str(root / "splits")}
    qm9_tasks.write_splits(root / "qm9.npz", data)
    dataset, work = qm9_tasks.pyg_qm9(resources / "qm9/raw")
    split = json.loads((root / "splits/qm9/nash_mtl.json").read_text())
    yield root / "qm9.npz", dataset, split
    work.cleanup()


def complete(data):
    """PyG's QM9 example's complete graph, from PyG's utilities: every ordered pair of distinct atoms, its
    bond attributes read from ``to_dense_adj`` (zeros without a bond), then ``Distance(norm=False)``."""
    import torch_geometric.transforms as T
    from torch_geometric.utils import to_dense_adj

    n = data.num_nodes
    pairs = (~torch.eye(n, dtype=torch.bool)).nonzero().t()
    bonds = to_dense_adj(data.edge_index, edge_attr=data.edge_attr, max_num_nodes=n)[0]
    data = data.clone()
    data.edge_index, data.edge_attr = pairs, bonds[pairs[0], pairs[1]]
    return T.Distance(norm=False)(data)


def pyg_complete_graphs(dataset, indices):
    from torch_geometric.data import Batch

    return Batch.from_data_list([complete(dataset[i]) for i in indices])


def test_packed_molecules_are_pygs_complete_graphs(qm9):
    path, dataset, split = qm9
    tasks = qm9_tasks.Tasks(path)
    molecules, _ = tasks.arrays("train", "mu")
    indices = split["splits"]["train"]["images"]
    x, edge_index, edge_attr, batch = graph_batch(torch.as_tensor(molecules))
    reference = pyg_complete_graphs(dataset, indices)
    torch.testing.assert_close(x, reference.x)
    torch.testing.assert_close(batch, reference.batch)
    ours = {tuple(e): a for e, a in zip(edge_index.t().tolist(), edge_attr.tolist())}
    theirs = {tuple(e): a for e, a in zip(reference.edge_index.t().tolist(), reference.edge_attr.tolist())}
    assert ours.keys() == theirs.keys()
    for edge, attribute in theirs.items():
        np.testing.assert_allclose(ours[edge], attribute, rtol=1e-5, atol=1e-5)


def test_the_mpnn_on_packed_rows_is_the_network_on_pygs_batch(qm9):
    path, dataset, split = qm9
    molecules, _ = qm9_tasks.Tasks(path).arrays("train", "mu")
    torch.manual_seed(0)
    network = MPNNEncoder()
    reference = pyg_complete_graphs(dataset, split["splits"]["train"]["images"])
    state = torch.relu(network.embed(reference.x))
    hidden = state.unsqueeze(0)
    for _ in range(3):
        message = torch.relu(network.conv(state, reference.edge_index, reference.edge_attr))
        state, hidden = network.gru(message.unsqueeze(0), hidden)
        state = state.squeeze(0)
    expected = torch.relu(network.out(network.readout(state, reference.batch)))
    torch.testing.assert_close(network(torch.as_tensor(molecules)), expected, rtol=1e-4, atol=1e-5)


def test_targets_are_normalised_on_training_and_maes_are_in_the_tables_units(qm9):
    path, dataset, split = qm9
    tasks = qm9_tasks.Tasks(path)
    train = np.stack([tasks.arrays("train", name)[1] for name in tasks.task_names], 1)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    columns = list(qm9_tasks.TARGETS.values())
    raw = np.stack([dataset[i].y[0, columns].numpy() for i in split["splits"]["test"]["images"]])
    test = np.stack([tasks.arrays("test", name)[1] for name in tasks.task_names], 1)
    np.testing.assert_allclose(test * np.array(tasks.meta["std"]) + np.array(tasks.meta["mean"]), raw, rtol=1e-4,
                               atol=1e-4)
    data = MultiTaskData(tasks)
    homo, mu = data.objectives[tasks.task_names.index("homo")], data.objectives[0]
    assert homo.scale == pytest.approx(tasks.meta["std"][2] * 1000) and mu.scale == pytest.approx(tasks.meta["std"][0])
    prediction, target = torch.tensor([[0.5], [-1.0], [2.0]]), torch.tensor([0.0, 0.0, 1.0])
    state = homo.start()
    homo.accumulate(state, prediction, target)
    result = homo.result(state)
    assert result["normalised_mae"] == pytest.approx(2.5 / 3) and result["mae"] == pytest.approx(2.5 / 3 * homo.scale)
    assert float(objective("regression", scale=2.0).loss(prediction, target)) == pytest.approx((0.25 + 1 + 1) / 3)


@pytest.mark.slow
def test_tiny_thesis_table3_5(repo, tool_env, tmp_path):
    tiny_workspace(repo, tmp_path)
    edit_table(tmp_path, "thesis_table3_5", seeds=[0])
    edit_yaml(tmp_path / "config/config.yaml", lambda settings: settings.update(
        dataset_splits={"qm9": {"nash_mtl": {"test_size": 3, "val_size": 3}}}))
    fake.qm9_molecules(tmp_path / "resources/qm9")
    mark_generated(tmp_path / "resources/qm9")
    build_tiny(tmp_path, tool_env, "thesis_table3_5")
    table = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table3_5.csv").set_index(["row", "column"])
    assert table.loc[("STL", "delta_p"), "ours_mean"] == pytest.approx(0.0, abs=1e-9)
    for row in ("EW", "MGDA", "MOML", "FORUM"):
        assert table.loc[(row, "homo"), "ours_mean"] > 0 and table.loc[(row, "homo"), "n"] == 1
    assert table.loc[("UW", "mu"), "verdict"] == "not run"
