"""Image multi-task problems of the thesis (Tables 3.3, 5.1, 5.3, 5.4, Figure 5.2): Office-31 / Office-Home
domains as tasks (image_domains) and CelebA's attributes as tasks on shared images (celeba_attributes),
the ResNet-18 encoder against torchvision's own network, STL against independent single-task training,
one encoder pass for shared inputs against one pass per task, Δp against the formula written out, the
ablations' parameter budgets, pretrained weights placement, and a tiny end-to-end build of the targets."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_split_layouts as fake  # noqa: E402
from taskbal.config import load_table, table_cells  # noqa: E402
from taskbal.data import celeba_attributes, image_domains  # noqa: E402
from taskbal.data.datasets import build_splits  # noqa: E402
from taskbal.mtl.blobs import Tasks as BlobTasks  # noqa: E402
from taskbal.mtl.blobs import write_splits as write_blobs  # noqa: E402
from taskbal.mtl.data import MultiTaskData  # noqa: E402
from taskbal.mtl.model import MultiTaskNet  # noqa: E402
from taskbal.mtl.normal import NormalNeck, split_options  # noqa: E402
from taskbal.mtl.weighted import WeightedMTL, task_loss  # noqa: E402
from taskbal.tables import build_table  # noqa: E402
from taskbal.weights import WeightsMissing, fetch_weights  # noqa: E402
from workspaces import build_tiny, edit_table, mark_generated, tiny_workspace  # noqa: E402

OFFICE31 = {"amazon": "amazon/images", "dslr": "dslr/images", "webcam": "webcam/images"}
OFFICE_HOME = {d: d for d in ("Art", "Clipart", "Product", "Real_World")}


def office31_resources(root: Path) -> Path:
    fake.office_tree(root / "office31" / "office-31", OFFICE31, per_class=10)
    (root / "office31" / ".verified").write_text(json.dumps({"source": "generated for a test"}))
    return root


def office_home_resources(root: Path) -> Path:
    fake.office_tree(root / "office_home" / "OfficeHomeDataset_10072016", OFFICE_HOME, per_class=10)
    (root / "office_home" / ".verified").write_text(json.dumps({"source": "generated for a test"}))
    return root


@pytest.fixture
def office31_split(tmp_path):
    resources = office31_resources(tmp_path / "resources")
    build_splits("office31", resources / "office31", tmp_path / "splits/office31/libmtl.json")
    data = {"family": "image_domains", "dataset": "office31", "image_size": 16, "resources": str(resources),
            "dataset_splits": str(tmp_path / "splits")}
    path = tmp_path / "office31.npz"
    image_domains.write_splits(path, data)
    return path, data


# ----------------------------------------------------------------------------------------- the family
def test_domains_are_tasks_with_one_label_space(office31_split):
    path, _ = office31_split
    tasks = image_domains.Tasks(path)
    assert tasks.task_names == ["amazon", "dslr", "webcam"]
    classes = tasks.meta["classes"]
    assert classes == ["back_pack", "bike", "calculator"] and tasks.num_classes("dslr") == 3
    for domain in tasks.task_names:
        sizes = [tasks.arrays(split, domain)[1].size for split in ("train", "val", "test")]
        assert sizes == [18, 6, 6]  # 60 / 20 / 20 of 10 images of 3 classes, stratified by class
        images, labels = tasks.arrays("train", domain)
        assert images.dtype == np.uint8 and images.shape == (18, 3, 16, 16)
        assert np.bincount(labels, minlength=3).tolist() == [6, 6, 6]
    data = MultiTaskData(tasks)  # uint8 images stay uint8 in memory
    assert data.tensors["train"][0][0].dtype == torch.uint8


def test_image_labels_follow_their_class_folder(office31_split, tmp_path):
    """Every stored image is the file the split lists, resized, under the label of its folder."""
    from taskbal.data.split_building import decode_image

    path, data = office31_split
    split_file = json.loads((tmp_path / "splits/office31/libmtl.json").read_text())
    tasks = image_domains.Tasks(path)
    entries = split_file["splits"]["test"]["images"]["webcam"]
    images, labels = tasks.arrays("test", "webcam")
    for i, entry in enumerate(entries):
        expected = decode_image(tmp_path / "resources/office31/office-31" / entry, 16, 3)
        assert np.array_equal(images[i], expected)
        assert tasks.meta["classes"][labels[i]] == Path(entry).parent.name


def test_family_rejects_bad_settings(office31_split):
    _, data = office31_split
    with pytest.raises(ValueError, match="data.dataset"):
        image_domains.check_data({**data, "dataset": "cub"})
    with pytest.raises(ValueError, match="data.domains"):
        image_domains.check_data({**data, "domains": ["amazon", "Art"]})
    with pytest.raises(ValueError, match="data.image_size"):
        image_domains.check_data({**data, "image_size": 2})
    with pytest.raises(ValueError, match="data.colour"):
        image_domains.check_data({**data, "colour": True})


@pytest.fixture
def celeba_split(tmp_path):
    resources = fake.celeba_tree(tmp_path / "resources/celeba").parent
    (resources / "celeba/.verified").write_text(json.dumps({"source": "generated for a test"}))
    build_splits("celeba", resources / "celeba", tmp_path / "splits/celeba/official.json")
    data = {"family": "celeba_attributes", "image_size": 8, "resources": str(resources),
            "dataset_splits": str(tmp_path / "splits")}
    path = tmp_path / "celeba.npz"
    celeba_attributes.write_splits(path, data)
    return path, data


def test_celeba_attributes_are_tasks_on_the_same_images(celeba_split, tmp_path):
    path, data = celeba_split
    tasks = celeba_attributes.Tasks(path)
    assert tasks.task_names == fake.CELEBA_ATTRIBUTES and tasks.shared_inputs
    lines = (tmp_path / "resources/celeba/celeba/list_attr_celeba.txt").read_text().splitlines()
    signs = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    split_file = json.loads((tmp_path / "splits/celeba/official.json").read_text())
    for split, size in (("train", 12), ("val", 4), ("test", 4)):
        images, labels = tasks.arrays(split, "Smiling")
        assert images.shape == (size, 3, 8, 8) and images is tasks.arrays(split, "Male")[0]
        smiling = fake.CELEBA_ATTRIBUTES.index("Smiling")
        names = split_file["splits"][split]["images"]
        assert labels.tolist() == [int(signs[name][smiling] == "1") for name in names]
    data_ = MultiTaskData(tasks)  # one tensor for the 40 tasks, and one batch of the same images
    assert all(x is data_.tensors["train"][0][0] for x, _ in data_.tensors["train"])
    batches = data_.batch("train", 3, 0, 5, "train")
    assert all(torch.equal(b.indices, batches[0].indices) and b.x is batches[0].x for b in batches)
    few = {**data, "attributes": ["Smiling", "Male"], "max_images": 3}
    celeba_attributes.write_splits(tmp_path / "few.npz", few)
    small = celeba_attributes.Tasks(tmp_path / "few.npz")
    assert small.task_names == ["Smiling", "Male"] and small.arrays("train", "Male")[0].shape[0] == 3
    assert "the first 3 images of each split" in small.meta["data_source"]["celeba"]
    with pytest.raises(ValueError, match="data.attributes: 'Smile'"):
        celeba_attributes.write_splits(tmp_path / "bad.npz", {**data, "attributes": ["Smile"]})
    with pytest.raises(ValueError, match="data.max_images"):
        celeba_attributes.check_data({**data, "max_images": 0})


def test_one_encoder_pass_gives_each_tasks_own_gradients(celeba_split):
    """With shared inputs the step encodes a batch once and back-propagates every task's loss through
    that pass; the per-task losses and gradients equal one full forward and backward pass per task."""
    _, settings = celeba_split
    path = Path(settings["resources"]).parent / "four.npz"
    celeba_attributes.write_splits(path, {**settings, "attributes": ["Smiling", "Male", "Bald", "Young"]})
    data = MultiTaskData(celeba_attributes.Tasks(path))
    torch.manual_seed(0)
    model = MultiTaskNet(0, [], data.num_classes, encoder="resnet18")  # no dropout: the same function per pass
    step = WeightedMTL(model, data, 0, "mean", {}, batch_size=6)
    batches = data.batch("train", 0, 0, 6, "train")
    state = copy.deepcopy(model.state_dict())
    losses, grads, heads, _ = step.task_terms(batches)
    model.load_state_dict(state)  # BatchNorm's running statistics moved once; put them back
    data.shared_inputs = False
    separate_losses, separate_grads, separate_heads, _ = step.task_terms(batches)
    torch.testing.assert_close(losses, separate_losses)
    torch.testing.assert_close(grads, separate_grads, rtol=1e-4, atol=1e-6)
    for ours, theirs in zip(heads[-1], separate_heads[-1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------- the model
def test_resnet18_encoder_is_torchvisions_network_on_normalised_images(tmp_path):
    """Loaded from a torchvision state-dict file, the encoder's features are torchvision's ResNet-18 (fc
    removed) on images scaled to [0, 1] and normalised with torchvision's own transform."""
    from torchvision.models import resnet18
    from torchvision.transforms.v2 import functional as TF

    torch.manual_seed(0)
    reference = resnet18(weights=None)
    file = tmp_path / "resnet18-test.pth"
    torch.save(reference.state_dict(), file)
    reference.fc = torch.nn.Identity()
    reference.eval()
    model = MultiTaskNet(0, [], [5, 7], encoder="resnet18", weights=file).eval()
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8)
    expected = reference(TF.normalize(images.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    torch.testing.assert_close(model.encode(images, 1), expected, rtol=1e-5, atol=1e-5)
    assert model(images, 1).shape == (2, 7)


def test_missing_or_wrong_weights_name_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mtl.weights: .*nothere.pth does not exist"):
        MultiTaskNet(0, [], [3], encoder="resnet18", weights=tmp_path / "nothere.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ResNet-18 state dict"):
        MultiTaskNet(0, [], [3], encoder="resnet18", weights=tmp_path / "other.pth")
    with pytest.raises(ValueError, match="mtl.weights"):
        MultiTaskNet(4, [8], [3], encoder="mlp", weights=tmp_path / "other.pth")


@pytest.fixture
def blobs(tmp_path):
    path = tmp_path / "blobs.npz"
    write_blobs(path, {"family": "mtl_blobs", "tasks": 3, "classes": 3, "dim": 5, "train": 64, "val": 20,
                       "val2": 20, "test": 20})
    return MultiTaskData(BlobTasks(path))


def test_stl_trains_every_task_as_its_own_network(blobs):
    """sharing: none is m independent networks: three steps of the MTL loop give, for every task, the
    parameters of that task's network trained alone with Adam on its own batches."""
    torch.manual_seed(3)
    model = MultiTaskNet(blobs.input_dim, [8], blobs.num_classes, sharing="none")
    assert model.shared_parameters() == []
    alone = [torch.nn.Sequential(copy.deepcopy(model.encoders[i]), copy.deepcopy(model.heads[i])) for i in range(3)]
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4) for net in alone]
    step = WeightedMTL(model, blobs, 0, "mean", {}, batch_size=16, lr=1e-2, weight_decay=1e-4, scale="sum")
    for iteration in range(3):
        batches = blobs.batch("train", iteration, 0, 16, "train")
        step.step(iteration)
        for task, (net, optimizer) in enumerate(zip(alone, optimizers)):
            optimizer.zero_grad()
            task_loss(net(batches[task].x), batches[task].y).backward()
            optimizer.step()
    for task, net in enumerate(alone):
        ours = torch.nn.utils.parameters_to_vector(model.head_parameters(task))
        torch.testing.assert_close(ours, torch.nn.utils.parameters_to_vector(net.parameters()), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------- Δp
def count_improvement(base: np.ndarray, new: np.ndarray, lower: np.ndarray, tasks: list[list[int]]) -> float:
    """Eq. 3.33 written out: the mean over tasks of the mean over the task's metrics of the signed
    relative improvement, in percent."""
    relative = (new - base) / base * np.where(lower, -1.0, 1.0)
    return 100.0 * float(np.mean([np.mean(relative[metrics]) for metrics in tasks]))


def test_delta_p_matches_the_formula_and_is_linear_over_seeds():
    rng = np.random.default_rng(0)
    spec = {"name": "t", "lower_is_better": False, "rows": [{"label": "STL"}, {"label": "A"}],
            "columns": [{"key": "acc0", "label": "a0", "value": "v", "where": {"task": "t0"}},
                        {"key": "err0", "label": "e0", "value": "v", "where": {"task": "t0e"}, "lower_is_better": True},
                        {"key": "acc1", "label": "a1", "value": "v", "where": {"task": "t1"}},
                        {"key": "dp", "label": "Δp",
                         "delta_p": {"base": "STL", "tasks": [["acc0", "err0"], ["acc1"]]}}]}
    values = {(row, seed): rng.uniform(0.5, 2.0, size=3) for row in ("STL", "A") for seed in (0, 1, 2)}
    frames = {key: pd.DataFrame({"task": ["t0", "t0e", "t1"], "v": v}) for key, v in values.items()}
    cells = {(row, column["key"]): {seed: frames[row, seed] for seed in (0, 1, 2)}
             for row in ("STL", "A") for column in spec["columns"]}
    table = build_table(spec, cells, "tiny").set_index(["row", "column"])
    base = np.mean([values["STL", s] for s in (0, 1, 2)], axis=0)
    lower = np.array([False, True, False])
    per_seed = [count_improvement(base, values["A", s], lower, [[0, 1], [2]]) for s in (0, 1, 2)]
    assert json.loads(table.loc[("A", "dp"), "seed_values"]) == pytest.approx(per_seed)
    mean_metrics = np.mean([values["A", s] for s in (0, 1, 2)], axis=0)
    of_mean = count_improvement(base, mean_metrics, lower, [[0, 1], [2]])
    assert table.loc[("A", "dp"), "ours_mean"] == pytest.approx(of_mean)
    assert table.loc[("STL", "dp"), "ours_mean"] == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------- the configs
def extra_parameters(spec: dict, row: str, column: str, tasks: int, classes: int) -> int:
    """Parameters of a Table 5.4 cell's network beyond EW's (the same backbone, random initialisation)."""
    def count(experiment):
        conf = experiment["mtl"]
        options = dict(experiment["weighting"])
        name = options.pop("name")
        neck = NormalNeck(conf["hidden"][-1], tasks, **split_options(options)[0]) if name == "normal" else None
        model = MultiTaskNet(0, conf["hidden"], [classes] * tasks, neck, encoder="resnet18",
                             head_hidden=conf.get("head_hidden"))
        return sum(p.numel() for p in model.parameters())

    cells = {(c.row, c.column): c.experiment for c in table_cells(spec, "paper")}
    ew = copy.deepcopy(cells["NORMAL", column])
    ew["weighting"] = {"name": "mean"}
    return count(cells[row, column]) - count(ew)


@pytest.mark.parametrize("column, tasks, classes", [("o31_a", 3, 31), ("oh_ar", 4, 65)])
def test_table5_4_extra_layers_match_normals_extra_parameters(column, tasks, classes):
    """Table 5.4 (v) and (vi) size their extra layers to NORMAL's extra parameters (within 1 %)."""
    spec = load_table("thesis_table5_4")
    spec["experiment"]["mtl"]["weights"] = None
    normal = extra_parameters(spec, "NORMAL", column, tasks, classes)
    assert normal > 1_000_000
    for row in ("Adding task-shared layers", "Adding task-specific layers"):
        assert extra_parameters(spec, row, column, tasks, classes) == pytest.approx(normal, rel=0.01)


@pytest.mark.parametrize("scale", ["paper", "quick", "tiny"])
def test_figure5_2_draws_the_tables_normal_runs(scale):
    """Panels (a), (b) are Table 5.1's NORMAL runs, (c) Table 5.2's and (d) Table 5.3's, at every scale."""
    figure = {c.column: c.run for c in table_cells(load_table("thesis_figure5_2"), scale)}
    normal = {name: {c.run for c in table_cells(load_table(name), scale) if c.row == "NORMAL"}
              for name in ("thesis_table5_1", "thesis_table5_2", "thesis_table5_3")}
    assert {figure["office31"], figure["office_home"]} == normal["thesis_table5_1"]
    assert {figure["nyuv2"]} == normal["thesis_table5_2"] and {figure["celeba"]} == normal["thesis_table5_3"]


# ----------------------------------------------------------------------------------------- weights
def test_weights_come_from_a_local_folder_or_the_hub_cache_checked_by_their_name(tmp_path, monkeypatch):
    import hashlib

    payload = b"some weights"
    name = f"net-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    local = tmp_path / "local"
    local.mkdir()
    (local / name).write_bytes(payload)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = fetch_weights(name, tmp_path / "weights", local)
    assert out.read_bytes() == payload
    hub = tmp_path / "torch/hub/checkpoints"
    hub.mkdir(parents=True)
    (hub / name).write_bytes(payload)
    assert fetch_weights(name, tmp_path / "weights2").read_bytes() == payload
    (hub / "net-00000000.pth").write_bytes(payload)
    with pytest.raises(ValueError, match="damaged or different"):
        fetch_weights("net-00000000.pth", tmp_path / "weights3")
    assert not (tmp_path / "weights3/net-00000000.pth").exists()
    with pytest.raises(WeightsMissing, match=r"resnet18-f37072fd.pth .*download.pytorch.org.*Put it at"):
        fetch_weights("resnet18-f37072fd.pth", tmp_path / "weights4")


# ----------------------------------------------------------------------------------------- tiny build
TARGETS = ["thesis_table3_3", "thesis_table3_4", "thesis_table5_1", "thesis_table5_2", "thesis_table5_3",
           "thesis_table5_4", "thesis_figure5_2"]


@pytest.mark.slow
def test_tiny_office_tables_and_figure(repo, tool_env, tmp_path):
    """The image MTL targets built from nothing on generated Office-31, Office-Home, CelebA and NYUv2 layouts, one
    seed."""
    tiny_workspace(repo, tmp_path)
    for table in ("thesis_table3_3", "thesis_table3_4", "thesis_table5_2", "thesis_table5_3"):
        edit_table(tmp_path, table, seeds=[0])
    office31_resources(tmp_path / "resources")
    office_home_resources(tmp_path / "resources")
    fake.celeba_tree(tmp_path / "resources/celeba")
    fake.nyuv2_scenes(tmp_path / "resources/nyuv2/nyuv2")
    for dataset in ("celeba", "nyuv2"):
        mark_generated(tmp_path / f"resources/{dataset}")
    build_tiny(tmp_path, tool_env, config=(f"tables=[{','.join(TARGETS)}]",))
    table = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table3_3.csv").set_index(["row", "column"])
    assert table.loc[("STL", "delta_p"), "ours_mean"] == pytest.approx(0.0, abs=1e-9)
    for row in ("EW", "MGDA", "MOML", "MoCo", "FORUM"):
        assert 0 <= table.loc[(row, "avg"), "ours_mean"] <= 100
    assert table.loc[("UW", "avg"), "verdict"] == "not run"
    ablations = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table5_4.csv").set_index(["row", "column"])
    assert ablations.loc[("Constant but different {p_i} (Office-31)", "o31_avg"), "n_seeds"] == 1
    assert ablations.loc[("Constant but different {p_i} (Office-31)", "oh_avg"), "verdict"] == "not run"
    page = (tmp_path / "results/tables/tiny/thesis_table5_4.md").read_text()
    assert "fixed positions (A, D, W) =" in page and "fixed positions (Ar, Cl, Pr, Rw) =" in page
    assert "weights: none: random initialisation, not the pretrained ImageNet weights" in page
    record = json.loads((tmp_path / "results/figures/tiny/thesis_figure5_2.json").read_text())
    assert {claim["verdict"] for claim in record["claims"]} <= {"holds", "does not hold", "holds (significant)",
                                                                 "does not hold (significant)"}
    curve = pd.read_csv(next((tmp_path / "results/runs/tiny").glob("image_domains-normal-*/seed0/curve.csv")))
    assert any(column.startswith("position_") for column in curve.columns)
    celeba = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table5_3.csv").set_index(["row", "column"])
    assert 0 <= celeba.loc[("NORMAL", "avg"), "ours_mean"] <= 100 and celeba.loc[("NORMAL", "avg"), "n"] == 40
    mgda = next((tmp_path / "results/runs/tiny").glob("celeba_attributes-mgda-*/seed0/eval.csv"))
    assert len(pd.read_csv(mgda)) == 40
    nyuv2 = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table3_4.csv").set_index(["row", "column"])
    assert nyuv2.loc[("STL", "delta_p"), "ours_mean"] == pytest.approx(0.0, abs=1e-9)
    assert 0 <= nyuv2.loc[("FORUM", "miou"), "ours_mean"] <= 100 and nyuv2.loc[("EW", "abs_err"), "ours_mean"] > 0
    normal = pd.read_csv(tmp_path / "results/tables/tiny/thesis_table5_2.csv").set_index(["row", "column"])
    assert normal.loc[("EW", "delta"), "ours_mean"] == pytest.approx(0.0, abs=1e-9)
    assert 0 <= normal.loc[("NORMAL", "within_30"), "ours_mean"] <= 1
    assert (tmp_path / "results/figures/tiny/thesis_figure5_2.png").stat().st_size > 10_000


@pytest.mark.parametrize("shared, method", [(False, "mean"), (True, "mean"), (True, "normal_manual"),
                                            (True, "normal_autograd"), (False, "stl")])
def test_equal_weighting_takes_one_backward_pass_with_the_same_step(blobs, shared, method):
    """EW's step from one backward pass of the summed loss equals the step from every task's own gradients
    (the weighting's mean of them): the shared gradient, each head's, and NORMAL's position gradients."""
    from taskbal.mtl.normal import NORMAL

    blobs.shared_inputs = shared
    if shared:  # the same inputs for every task, as a single-input family has them
        for split, pairs in blobs.tensors.items():
            x = pairs[0][0]
            blobs.tensors[split] = [(x, y[:len(x)]) for _, y in pairs]

    def build():
        torch.manual_seed(5)
        neck = NormalNeck(8, 3, ode_steps=4) if method.startswith("normal") else None
        sharing = "none" if method == "stl" else "hard"
        model = MultiTaskNet(blobs.input_dim, [8], blobs.num_classes, neck, sharing=sharing)
        if neck is not None:
            gradient = method.split("_")[1]
            return model, NORMAL(model, blobs, 0, position_lr=0.3, position_gradient=gradient, batch_size=16,
                                 optimizer="sgd", lr=0.1, scale="sum", heads="unit")
        return model, WeightedMTL(model, blobs, 0, "mean", {}, batch_size=16, optimizer="sgd", lr=0.1, scale="sum",
                                  heads="unit")

    fast_model, fast = build()
    slow_model, slow = build()
    slow.summed_terms = None  # not used: the reference takes the per-task path below
    batches = blobs.batch("train", 0, 0, 16, "train")
    tasks, head_grads, extras = slow.task_gradients(batches, 0)
    combined = slow.weighting.combine(tasks.only(slow.weighting.reads))
    slow.after_combine(extras, 0)
    slow.apply(combined, head_grads)
    fast.step(0)
    for (name, ours), (_, reference) in zip(fast_model.named_parameters(), slow_model.named_parameters()):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6, msg=name)
