"""The MNIST / Fashion-MNIST task families on generated IDX files: DA-MAML's eight binary tasks and the
thesis' multi-task hyper-cleaning data (determinism, disjoint splits, exact corruption, labels that
match the images), and a tiny end-to-end build of each of their tables."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from fake_datasets import fake_idx_family, gz, idx_bytes, write_payloads
from taskbal.data import binary_mnist, hyper_cleaning, idx
from workspaces import build_tiny, edit_table, mark_generated, tiny_workspace


def make_dataset(directory, seed, n_train=2000, n_test=2000):
    """Upstream's four IDX files; every image carries its label in pixel (0, 0)."""
    return write_payloads(directory, fake_idx_family(np.random.default_rng(seed), n_train, n_test))


def make_subset(directory, seed, n=3000):
    """The offline MNIST layout: subset/{images,labels}-idx?-ubyte, no test split."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels
    (directory / "subset").mkdir(parents=True)
    (directory / "subset/images-idx3-ubyte").write_bytes(idx_bytes(images))
    (directory / "subset/labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    return directory


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    root = tmp_path_factory.mktemp("resources")
    make_dataset(root / "mnist", 0)
    make_dataset(root / "fashion_mnist", 1)
    make_subset(root / "mnist_subset", 2)
    return root


def binary_data(resources, **overrides):
    data = dict(family="binary_mnist", shots=5, query=15, train_tasks=400, val_episodes=3, test_episodes=10,
                split_seed=3, mnist_dir=str(resources / "mnist"), fashion_mnist_dir=str(resources / "fashion_mnist"))
    return {**data, **overrides}


def hc_data(resources, **overrides):
    data = dict(family="hyper_cleaning", split_seed=5, train=400, val=100, val2=100, test=300, corruption=0.5,
                mnist_dir=str(resources / "mnist"), fashion_mnist_dir=str(resources / "fashion_mnist"))
    return {**data, **overrides}


# ----------------------------------------------------------------------------------------- IDX files
def test_idx_reader_round_trips_and_rejects_bad_files(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    (tmp_path / "a.gz").write_bytes(gz(idx_bytes(array)))
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        idx.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(array)[:-3])
    with pytest.raises(ValueError, match="bytes of data"):
        idx.read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="download rule"):
        idx.data_files(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------- DA-MAML tasks
def episode_images(tasks, split, rows):
    """(support, query) pixel (0, 0) markers = the true class of every image of the episodes."""
    batch = tasks.batch(split, np.asarray(rows))
    marker = lambda x: torch.round(x.view(*x.shape[:2], 28, 28)[..., 0, 0] * 255).long()  # noqa: E731
    return batch, marker(batch.support_x), marker(batch.query_x)


def test_binary_splits_are_deterministic_and_disjoint(resources, tmp_path):
    a = binary_mnist.write_splits(tmp_path / "a.npz", binary_data(resources))
    b = binary_mnist.write_splits(tmp_path / "b.npz", binary_data(resources))
    c = binary_mnist.write_splits(tmp_path / "c.npz", binary_data(resources, split_seed=4))
    assert a["sha256"] == b["sha256"] and a["sha256"] != c["sha256"]
    with np.load(tmp_path / "a.npz") as data:
        arrays = {key: data[key] for key in data.files}
    tasks = a["tasks"]
    assert [t["name"] for t in tasks] == ["fmnist_2v4", "fmnist_4v2", "mnist_0v1", "mnist_1v0", "mnist_2v3",
                                          "mnist_3v2", "mnist_4v5", "mnist_5v4"]
    for dataset in ("mnist", "fashion_mnist"):
        used = {}
        for split in ("train", "val"):  # both index the training images: they must never share one
            ids = arrays[f"{split}_task"]
            rows = np.array([tasks[t]["dataset"] == dataset for t in ids])
            used[split] = set(np.concatenate([arrays[f"{split}_support"][rows].ravel(),
                                              arrays[f"{split}_query"][rows].ravel()]).tolist())
        assert used["train"] and used["val"] and not used["train"] & used["val"]
    for split in ("train", "val", "test"):  # all images of an episode are distinct
        images = np.concatenate([arrays[f"{split}_support"], arrays[f"{split}_query"]], axis=1)
        assert all(len(set(row)) == row.size for row in images)
    assert np.bincount(arrays["test_task"], minlength=8).tolist() == [10] * 8


def test_binary_episodes_have_the_tasks_classes_and_labels(resources, tmp_path):
    binary_mnist.write_splits(tmp_path / "s.npz", binary_data(resources))
    tasks = binary_mnist.Tasks(tmp_path / "s.npz")
    for split in ("train", "test"):
        rows = np.arange(min(200, tasks.num_tasks(split)))
        batch, support_class, query_class = episode_images(tasks, split, rows)
        classes = torch.tensor([t["classes"] for t in tasks.tasks])[tasks.groups(split)[rows]]
        # label l of task (a, b) is class a for l = 0 and class b for l = 1
        assert torch.equal(support_class, classes.gather(1, batch.support_y))
        assert torch.equal(query_class, classes.gather(1, batch.query_y))
        assert (batch.support_y.sum(1) == 5).all() and (batch.query_y.sum(1) == 15).all()
        assert batch.support_x.min() >= 0 and batch.support_x.max() <= 1


def test_binary_training_distribution_follows_the_fashion_probability(resources, tmp_path):
    for probability in (0.1, 0.25):
        meta = binary_mnist.write_splits(tmp_path / f"p{probability}.npz",
                                         binary_data(resources, train_tasks=8000, fashion_probability=probability))
        ids = binary_mnist.Tasks(tmp_path / f"p{probability}.npz").train_groups.numpy()
        fashion = np.isin(ids, [0, 1]).mean()
        sd = np.sqrt(probability * (1 - probability) / ids.size)
        assert abs(fashion - probability) < 4 * sd
        assert meta["train_probabilities"][:2] == pytest.approx([probability / 2] * 2)


def test_binary_without_official_test_split_holds_out_training_images(resources, tmp_path):
    meta = binary_mnist.write_splits(tmp_path / "s.npz",
                                     binary_data(resources, mnist_dir=str(resources / "mnist_subset")))
    assert meta["test_source"] == {"mnist": "train", "fashion_mnist": "test"}
    assert "no official test split" in meta["images"]["test"]["mnist"]
    with np.load(tmp_path / "s.npz") as data:
        arrays = {key: data[key] for key in data.files}
    mnist_rows = {split: arrays[f"{split}_task"] >= 2 for split in ("train", "val", "test")}
    used = {split: set(np.concatenate([arrays[f"{split}_support"][rows].ravel(),
                                       arrays[f"{split}_query"][rows].ravel()]).tolist())
            for split, rows in mnist_rows.items()}
    assert not used["train"] & used["test"] and not used["val"] & used["test"] and not used["train"] & used["val"]
    tasks = binary_mnist.Tasks(tmp_path / "s.npz")
    rows = np.flatnonzero(tasks.groups("test").numpy() >= 2)[:40]
    batch, support_class, _ = episode_images(tasks, "test", rows)
    classes = torch.tensor([t["classes"] for t in tasks.tasks])[tasks.groups("test")[rows]]
    assert torch.equal(support_class, classes.gather(1, batch.support_y))


def test_binary_tasks_refuse_changed_dataset_files(resources, tmp_path):
    shutil.copytree(resources / "fashion_mnist", tmp_path / "fashion_mnist")
    binary_mnist.write_splits(tmp_path / "s.npz",
                              binary_data(resources, fashion_mnist_dir=str(tmp_path / "fashion_mnist")))
    make_dataset(tmp_path / "other", 9)
    shutil.copy(tmp_path / "other/t10k-images-idx3-ubyte.gz", tmp_path / "fashion_mnist/t10k-images-idx3-ubyte.gz")
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz differs"):
        binary_mnist.Tasks(tmp_path / "s.npz")


def test_binary_bad_config_names_the_field(resources, tmp_path):
    with pytest.raises(ValueError, match="data.fashion_probability"):
        binary_mnist.write_splits(tmp_path / "s.npz", binary_data(resources, fashion_probability=1.5))
    with pytest.raises(ValueError, match="data.mnist_pairs"):
        binary_mnist.write_splits(tmp_path / "s.npz", binary_data(resources, mnist_pairs=[[3, 3]]))
    with pytest.raises(ValueError, match="data.colour"):
        binary_mnist.write_splits(tmp_path / "s.npz", binary_data(resources, colour=1))


def test_curve_metrics_are_per_task_means_of_the_evaluation(resources, tmp_path):
    """The curve's per-task accuracy equals the mean of the evaluation's per-episode accuracies of that task
    (computed by MAML.evaluate_tasks one episode at a time, with a tanh MLP)."""
    from taskbal.learners import MAML
    from taskbal.models import build_model

    binary_mnist.write_splits(tmp_path / "s.npz", binary_data(resources, test_episodes=4))
    tasks = binary_mnist.Tasks(tmp_path / "s.npz")
    torch.manual_seed(0)
    learner = MAML(build_model({"name": "mlp", "hidden": [16], "activation": "tanh"}, tasks.io_dims),
                   inner_steps=1, inner_lr=0.5, loss="cross_entropy")
    curve = tasks.curve_metrics(learner, torch.device("cpu"), chunk=7)
    groups = tasks.groups("test").numpy()
    single = np.array([learner.evaluate_tasks(tasks.batch("test", [i]))["accuracy"].item()
                       for i in range(tasks.num_tasks("test"))])
    per_task = [single[groups == t].mean() for t in range(8)]
    for name, value in zip(tasks.task_names, per_task):
        assert curve[f"test_accuracy_{name}"] == pytest.approx(value, abs=1e-6)
    assert curve["test_accuracy_worst"] == pytest.approx(min(per_task), abs=1e-6)
    assert curve["test_accuracy_mean"] == pytest.approx(np.mean(per_task), abs=1e-6)


def test_tanh_mlp_batched_forward_matches_the_module(resources):
    from taskbal.models import build_model

    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [6, 5], "activation": "tanh"}, (4, 2)).double()
    assert isinstance(model[1], torch.nn.Tanh)
    x = torch.randn(3, 7, 4, dtype=torch.double)
    params = {name: p.detach().unsqueeze(0).repeat(3, *([1] * p.dim())) for name, p in model.named_parameters()}
    expected = torch.stack([model(x[i]) for i in range(3)])
    torch.testing.assert_close(model.batched_forward(params, x), expected)
    with pytest.raises(ValueError, match="model.activation"):
        build_model({"name": "mlp", "hidden": [4], "activation": "gelu"}, (4, 2))


# ----------------------------------------------------------------------------------------- hyper-cleaning
def test_hyper_cleaning_splits_are_deterministic_disjoint_and_exactly_corrupted(resources, tmp_path):
    a = hyper_cleaning.write_splits(tmp_path / "a.npz", hc_data(resources))
    b = hyper_cleaning.write_splits(tmp_path / "b.npz", hc_data(resources))
    c = hyper_cleaning.write_splits(tmp_path / "c.npz", hc_data(resources, split_seed=6))
    assert a["sha256"] == b["sha256"] and a["sha256"] != c["sha256"]
    tasks = hyper_cleaning.Tasks(tmp_path / "a.npz")
    assert tasks.task_names == ["mnist", "fashion_mnist"]
    for task in tasks.task_names:
        sets = {split: set(tasks.indices(split, task).tolist()) for split in ("train", "val", "val2")}
        assert [len(sets[s]) for s in ("train", "val", "val2")] == [400, 100, 100]
        assert not sets["train"] & sets["val"] and not sets["train"] & sets["val2"] and not sets["val"] & sets["val2"]
        assert tasks.indices("test", task).size == 300
        mask, clean = tasks.corrupted(task), tasks.clean_labels(task)
        x, noisy = tasks.arrays("train", task)
        assert mask.sum() == 200  # exactly half
        assert (noisy[mask] != clean[mask]).all() and (noisy[~mask] == clean[~mask]).all()
        assert noisy.min() >= 0 and noisy.max() <= 9
        assert np.array_equal(np.rint(x[:, 0] * 255).astype(int), clean)  # clean labels are the images' classes
        for split in ("val", "val2", "test"):  # clean labels everywhere else
            x, y = tasks.arrays(split, task)
            assert np.array_equal(np.rint(x[:, 0] * 255).astype(int), y)


def test_hyper_cleaning_corruption_rate_is_exact_for_any_rate(resources, tmp_path):
    for rate, n in ((0.0, 400), (0.3, 400), (0.25, 333), (1.0, 120)):
        hyper_cleaning.write_splits(tmp_path / "s.npz", hc_data(resources, corruption=rate, train=n))
        tasks = hyper_cleaning.Tasks(tmp_path / "s.npz")
        for task in tasks.task_names:
            assert tasks.corrupted(task).sum() == round(rate * n)


def test_hyper_cleaning_wrong_classes_are_uniform(resources, tmp_path):
    """Over many corrupted labels the shift (noisy − clean) mod 10 is uniform on 1..9 (chi-square)."""
    from scipy import stats

    hyper_cleaning.write_splits(tmp_path / "s.npz", hc_data(resources, train=1600, val=100, val2=100))
    tasks = hyper_cleaning.Tasks(tmp_path / "s.npz")
    shifts = np.concatenate([((tasks.arrays("train", t)[1] - tasks.clean_labels(t)) % 10)[tasks.corrupted(t)]
                             for t in tasks.task_names])
    counts = np.bincount(shifts, minlength=10)
    assert counts[0] == 0
    assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_hyper_cleaning_without_official_test_split(resources, tmp_path):
    subset = str(resources / "mnist_subset")
    meta = hyper_cleaning.write_splits(tmp_path / "s.npz", hc_data(resources, mnist_dir=subset, test=2000))
    assert meta["sizes"]["mnist"]["test"] == 2000 and meta["sizes"]["fashion_mnist"]["test"] == 2000
    assert "no official test split" in meta["images"]["test"]["mnist"]
    fewer = hyper_cleaning.write_splits(tmp_path / "f.npz", hc_data(resources, mnist_dir=subset, test=5000,
                                                                   datasets=["mnist"]))
    assert fewer["sizes"]["mnist"]["test"] == 3000 - 600  # all that is left, and the file says so
    tasks = hyper_cleaning.Tasks(tmp_path / "s.npz")
    used = set().union(*(set(tasks.indices(s, "mnist").tolist()) for s in ("train", "val", "val2")))
    assert not used & set(tasks.indices("test", "mnist").tolist())
    with pytest.raises(ValueError, match="data.train"):
        hyper_cleaning.write_splits(tmp_path / "t.npz", hc_data(resources, train=2500))


# ----------------------------------------------------------------------------------------- tiny tables
def mnist_workspace(repo, tmp_path, seeds=None, table=None):
    """The workflow with generated MNIST and Fashion-MNIST files in place of the downloads."""
    tiny_workspace(repo, tmp_path)
    if seeds is not None:
        edit_table(tmp_path, table, seeds=seeds)
    for name, seed in (("mnist", 0), ("fashion_mnist", 1)):
        make_dataset(tmp_path / "resources" / name, seed)
        mark_generated(tmp_path / "resources" / name)
    return tmp_path


@pytest.mark.slow
def test_tiny_damaml_figure1(repo, tool_env, tmp_path):
    work = mnist_workspace(repo, tmp_path, seeds=[0], table="damaml_figure1")
    build_tiny(work, tool_env, "damaml_figure1")
    page = (work / "results/figures/tiny/damaml_figure1.md").read_text()
    assert (work / "results/figures/tiny/damaml_figure1.png").stat().st_size > 0
    assert "DA-MAML clearly outperforms MAML" in page and "worst-task accuracy (final)" in page
    assert "generated for a test" in page  # the data source is printed
    assert page.count("| MAML |") == 1 and page.count("| DA-MAML |") == 1
    curves = list((work / "results/runs/tiny").glob("*/seed0/curve.csv"))
    assert len(curves) == 2
    for path in curves:
        curve = pd.read_csv(path)
        assert list(curve["iteration"]) == [0, 5, 10]
        assert ((curve["test_accuracy_worst"] <= curve["test_accuracy_mean"])
                & (curve["test_accuracy_mean"] <= 1)).all()


@pytest.mark.slow
def test_tiny_thesis_table3_2(repo, tool_env, tmp_path):
    work = mnist_workspace(repo, tmp_path, seeds=[0], table="thesis_table3_2")
    build_tiny(work, tool_env, "thesis_table3_2")
    table = pd.read_csv(work / "results/tables/tiny/thesis_table3_2.csv")
    assert set(table["row"]) == {"MOML", "MoCo", "FORUM"} and len(table) == 12
    assert table["ours_mean"].between(0, 100).all() and (table["n_seeds"] == 1).all()
    assert table.loc[table.row == "FORUM", "paper_mean"].tolist() == [90.81, 90.81, 82.07, 81.72]
    markdown = (work / "results/tables/tiny/thesis_table3_2.md").read_text()
    assert "generated for a test" in markdown and "tiny" in markdown
    check_tiny_thesis_figure3_1(work, tool_env)


def check_tiny_thesis_figure3_1(work, env):
    """Figure 3.1 on the same data: time and memory per UL iteration of MOML, MoCo and FORUM at T = 8 and with one
    more 512-wide layer, each run's train.json numbers drawn and judged."""
    build_tiny(work, env, "thesis_figure3_1")
    record = json.loads((work / "results/figures/tiny/thesis_figure3_1.json").read_text())
    runs = record["provenance"]["runs"].split(", ")
    assert len(runs) == 6  # 3 methods x (T = 8, p1)
    for run in runs:
        summary = json.loads((work / f"results/runs/tiny/{run}/seed0/train.json").read_text())
        assert summary["step_seconds_median"] > 0 and "peak_memory_measure" in summary
    judged = [claim for claim in record["claims"] if claim["verdict"] != "not run"]  # tiny: T = 8 and p1 only
    assert len(judged) == 4 * 2 and all(c["verdict"] in ("holds", "does not hold") for c in judged)
    assert (work / "results/figures/tiny/thesis_figure3_1.png").stat().st_size > 10_000


def test_curve_means_for_claims_skip_the_initial_point():
    from taskbal.cli import add_curve_means

    curve = pd.DataFrame({"iteration": [0, 10, 20], "test_accuracy_worst": [0.5, 0.7, 0.8], "name": ["a", "b", "c"]})
    finals = {("DA-MAML", "worst"): {0: {"accuracy_worst_group": 0.8}}, ("MAML", "worst"): {0: {}}}
    add_curve_means(finals, {("DA-MAML", "worst"): {0: curve}})
    assert finals[("DA-MAML", "worst")][0]["curve_mean_test_accuracy_worst"] == pytest.approx(0.75)
    assert "curve_mean_name" not in finals[("DA-MAML", "worst")][0] and finals[("MAML", "worst")][0] == {}
