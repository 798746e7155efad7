"""The skewed-amplitude sinusoid split file (TR-MAML / Nash-GBML protocol): deterministic, binned, hash-checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskbal.data import family_module
from taskbal.data.skewed_sinusoid import SkewedSinusoidTasks, write_splits
from taskbal.io import sidecar

BASE = dict(family="skewed_sinusoid", shots=5, query=5, eval_query=40, train_tasks=3000, val_tasks=30,
            test_tasks=1470, split_seed=3)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("skewed") / "skewed.npz"
    write_splits(path, BASE)
    return path


def test_registered_as_a_family():
    assert family_module("skewed_sinusoid").Tasks is SkewedSinusoidTasks


def test_same_seed_same_bytes_other_seed_other_file(tmp_path):
    small = dict(BASE, train_tasks=200, test_tasks=100)
    a = write_splits(tmp_path / "a.npz", small)
    b = write_splits(tmp_path / "b.npz", small)
    c = write_splits(tmp_path / "c.npz", dict(small, split_seed=4))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert a["sha256"] == b["sha256"] != c["sha256"]


def test_bins_cover_their_intervals(split):
    tasks = SkewedSinusoidTasks(split)
    edges = {"train": tasks.arrays["train_bin_edges"].numpy(), "test": tasks.arrays["eval_bin_edges"].numpy()}
    # Training: 95 bins tile [0.1, 1.05], 5 bins tile [4.95, 5.0]; evaluation: 490 bins tile [0.1, 5.0].
    train, test = edges["train"], edges["test"]
    assert train.shape == (100, 2) and test.shape == (490, 2)
    np.testing.assert_allclose(train[:, 1] - train[:, 0], 0.01, atol=1e-12)
    np.testing.assert_allclose(test[:, 1] - test[:, 0], 0.01, atol=1e-12)
    np.testing.assert_allclose(train[1:95, 0], train[:94, 1], atol=1e-12)
    np.testing.assert_allclose(train[96:, 0], train[95:99, 1], atol=1e-12)
    np.testing.assert_allclose([train[0, 0], train[94, 1], train[95, 0], train[99, 1]], [0.1, 1.05, 4.95, 5.0])
    np.testing.assert_allclose(test[1:, 0], test[:-1, 1], atol=1e-12)
    np.testing.assert_allclose([test[0, 0], test[-1, 1]], [0.1, 5.0])
    for name in ("train", "test"):
        table = tasks.task_table(name)
        low, high = table["bin_low"].astype(np.float32), table["bin_high"].astype(np.float32)
        assert np.all(low <= table["amplitude"]) and np.all(table["amplitude"] <= high)
        np.testing.assert_array_equal(table["bin_low"], edges[name][table["group"], 0])
        assert table["phase"].min() >= 0 and table["phase"].max() <= np.pi
    # Within a bin the amplitude is spread over the bin, not stuck at an edge.
    offsets = (tasks.task_table("train")["amplitude"] - tasks.task_table("train")["bin_low"]) / 0.01
    assert offsets.min() < 0.1 and offsets.max() > 0.9 and abs(offsets.mean() - 0.5) < 0.05


def test_training_bins_are_uniform_so_five_percent_of_amplitudes_are_large(split):
    tasks = SkewedSinusoidTasks(split)
    bins = tasks.train_groups.numpy()
    counts = np.bincount(bins, minlength=100)
    assert tasks.num_train_groups == 100 and bins.min() >= 0 and bins.max() <= 99
    # 3000 uniform draws over 100 bins: a chi-square test of uniformity (df = 99) at a generous level.
    chi2 = ((counts - 30) ** 2 / 30).sum()
    assert chi2 < 160
    amplitude = tasks.task_table("train")["amplitude"]
    assert np.all((amplitude <= 1.05 + 1e-6) | (amplitude >= 4.95 - 1e-6))
    assert abs(np.mean(amplitude > 2) - 0.05) < 0.015


def test_counts_shapes_and_targets(split):
    tasks = SkewedSinusoidTasks(split)
    assert (tasks.num_tasks("train"), tasks.num_tasks("val"), tasks.num_tasks("test")) == (3000, 30, 1470)
    assert tasks.num_groups("test") == 490 and tasks.groups("test").dtype == torch.int64
    train = tasks.batch("train", torch.tensor([4, 9]))
    assert train.support_x.shape == (2, 5, 1) and train.query_x.shape == (2, 5, 1)  # fresh K query points
    test = tasks.batch("test", torch.tensor([0, 7, 11]))
    assert test.support_x.shape == (3, 5, 1) and test.query_x.shape == (3, 40, 1)
    assert test.features.shape == (3, tasks.feature_dim) == (3, 10)
    table = tasks.task_table("test")
    a, b = table["amplitude"][7], table["phase"][7]
    np.testing.assert_allclose(test.query_y[1, :, 0].numpy(), a * np.sin(test.query_x[1, :, 0].numpy() + b),
                               rtol=1e-5, atol=1e-5)
    assert train.support_x.abs().max() <= 5 and test.query_x.abs().max() <= 5
    # The support and query inputs of a task are different draws.
    assert not torch.equal(test.support_x[:, :5], test.query_x[:, :5])


def test_random_test_assignment_gives_about_ten_tasks_per_bin_balanced_gives_exact_counts(tmp_path, split):
    random_counts = np.bincount(SkewedSinusoidTasks(split).groups("test").numpy(), minlength=490)
    assert random_counts.sum() == 1470 and random_counts.std() > 0.5  # multinomial, not stratified
    path = tmp_path / "balanced.npz"
    write_splits(path, dict(BASE, train_tasks=10, eval_assignment="balanced"))
    balanced = SkewedSinusoidTasks(path).groups("test").numpy()
    assert np.array_equal(np.bincount(balanced, minlength=490), np.full(490, 3))
    assert not np.array_equal(balanced[:490], np.arange(490))  # shuffled


def test_train_and_test_draws_are_disjoint_and_independent(tmp_path, split):
    tasks = SkewedSinusoidTasks(split)
    # No test task repeats a training task: compare whole tasks (amplitude, phase, support inputs);
    # single float32 numbers may coincide by chance, whole tasks may not.
    def rows(name):
        table = tasks.task_table(name)
        columns = [table["amplitude"][:, None], table["phase"][:, None], tasks.arrays[f"{name}_x_support"].numpy()]
        return {tuple(row) for row in np.concatenate(columns, axis=1).tolist()}

    assert len(rows("train")) == 3000 and len(rows("test")) == 1470
    assert not rows("train") & rows("test")
    # The test split does not depend on the size of the training pool (separate streams).
    other = tmp_path / "other.npz"
    write_splits(other, dict(BASE, train_tasks=57))
    torch.testing.assert_close(SkewedSinusoidTasks(other).batch("test").query_y, tasks.batch("test").query_y)


def test_sha_mismatch_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "s.npz"
    write_splits(path, dict(BASE, train_tasks=20, test_tasks=20))
    data = bytearray(path.read_bytes())
    data[-200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="s.npz.*SHA-256"):
        SkewedSinusoidTasks(path)


def test_missing_file_says_to_run_the_split_rule(tmp_path):
    with pytest.raises(FileNotFoundError, match="split rule"):
        SkewedSinusoidTasks(tmp_path / "none.npz")


def test_sidecar_records_seed_sizes_and_queries(split):
    from taskbal.io import read_json

    meta = read_json(sidecar(split))
    assert meta["seed"] == 3 and meta["sizes"] == {"train": 3000, "val": 30, "test": 1470}
    assert meta["query"] == {"train": 5, "val": 40, "test": 40} and meta["bins"]["train"] == 100


@pytest.mark.parametrize("change,field", [
    (dict(shots=0), "shots"),
    (dict(eval_query=2.5), "eval_query"),
    (dict(test_tasks=None), "test_tasks"),
    (dict(split_seed=-1), "split_seed"),
    (dict(eval_assignment="stratified"), "eval_assignment"),
    (dict(amplitude_range=[0.1, 5]), "amplitude_range"),
])
def test_bad_data_names_its_field(tmp_path, change, field):
    with pytest.raises(ValueError, match=rf"data\.{field}\b"):
        write_splits(tmp_path / "bad.npz", dict(BASE, **change))


def test_default_eval_query_is_the_codes_1000_points(tmp_path):
    data = {k: v for k, v in BASE.items() if k != "eval_query"}
    meta = write_splits(tmp_path / "d.npz", dict(data, train_tasks=10, val_tasks=2, test_tasks=3))
    assert meta["query"]["test"] == 1000
