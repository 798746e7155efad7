"""Split builders on generated data in the upstream layouts: protocol counts, disjointness, determinism."""
from __future__ import annotations

import json

import pytest

import fake_split_layouts as fake
from taskbal.data import datasets
from taskbal.data.datasets import celeba, cub, mini_imagenet, nyuv2, office31, omniglot, qm9, tiered_imagenet
from taskbal.data.datasets.mini_imagenet import STANDARD_CLASSES as MINI_IMAGENET
from taskbal.data.datasets.tiered_imagenet import STANDARD_CLASSES as TIERED_IMAGENET
from taskbal.data.splitfile import content_hash, read_split_file


def build_twice(builder, resource_dir, tmp_path, **options):
    """Build into two files; they must be byte-identical. Returns the parsed, hash-checked file."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    builder(resource_dir, a, **options)
    builder(resource_dir, b, **options)
    assert a.read_bytes() == b.read_bytes()
    return read_split_file(a)


def assert_disjoint(parts):
    parts = [set(p) for p in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not parts[i] & parts[j]


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory):
    return fake.mini_imagenet_pickles(tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    return fake.omniglot_tree(tmp_path_factory.mktemp("omniglot"))


def test_mini_imagenet_ravi_larochelle(mini_dir, tmp_path):
    episodes = {"test": {"ways": 5, "shots": 1, "queries": 15, "count": 30, "seed": 3}}
    data = build_twice(mini_imagenet.build_splits, mini_dir, tmp_path, episodes=episodes)
    assert data["exact"] and data["unit"] == "class"
    assert [data["counts"][s]["classes"] for s in ("train", "val", "test")] == [64, 16, 20]
    for split in ("train", "val", "test"):
        assert data["splits"][split]["classes"] == sorted(MINI_IMAGENET[split])
    assert_disjoint(data["splits"][s]["classes"] for s in ("train", "val", "test"))
    test = data["episodes"]["test"]
    assert len(test["classes"]) == 30 and all(len(set(c)) == 5 for c in test["classes"])
    # a different episode seed changes the episodes and the hash
    other = mini_imagenet.build_splits(mini_dir, tmp_path / "c.json",
                                       episodes={"test": {**episodes["test"], "seed": 4}})
    assert other["episodes"]["test"]["classes"] != test["classes"] and other["sha256"] != data["sha256"]


def test_mini_imagenet_rejects_a_nonstandard_split(tmp_path):
    root = fake.mini_imagenet_pickles(tmp_path / "mini", per_class=2, drop=MINI_IMAGENET["val"][0])
    with pytest.raises(ValueError, match="val classes are not the standard split"):
        mini_imagenet.build_splits(root, tmp_path / "out.json")


def test_mini_imagenet_csv_layout(tmp_path):
    root = tmp_path / "mini"
    root.mkdir()
    for split in ("train", "val", "test"):
        rows = [f"{c}{i:08d}.jpg,{c}" for c in reversed(MINI_IMAGENET[split]) for i in range(3)]
        (root / f"{split}.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    data = build_twice(mini_imagenet.build_splits, root, tmp_path)
    assert data["source"].startswith("csv")
    assert data["splits"]["test"]["images"][MINI_IMAGENET["test"][0]][0] == f"{MINI_IMAGENET['test'][0]}00000000.jpg"


def test_tiered_imagenet_351_97_160(tmp_path):
    root = fake.tiered_imagenet_labels(tmp_path / "tiered")
    data = build_twice(tiered_imagenet.build_splits, root, tmp_path)
    assert [data["counts"][s]["classes"] for s in ("train", "val", "test")] == [351, 97, 160]
    assert [len(data["categories"][s]) for s in ("train", "val", "test")] == [20, 6, 8]
    assert_disjoint(data["splits"][s]["classes"] for s in ("train", "val", "test"))
    for split in ("train", "val", "test"):
        assert set(data["splits"][split]["classes"]) == set(TIERED_IMAGENET[split])
        rows = [i for c in data["splits"][split]["classes"] for i in data["splits"][split]["images"][c]]
        assert sorted(rows) == list(range(3 * len(TIERED_IMAGENET[split])))  # every row exactly once


def test_omniglot_alphabet_split(omniglot_dir, tmp_path):
    data = build_twice(omniglot.build_splits, omniglot_dir, tmp_path, protocol="alphabet", val_alphabets=5)
    splits = data["splits"]
    assert [len(splits[s]["alphabets"]) for s in ("train", "val", "test")] == [25, 5, 20]
    assert all(a.startswith("evaluation/") for a in splits["test"]["alphabets"])
    assert all(a.startswith("background/") for s in ("train", "val") for a in splits[s]["alphabets"])
    assert_disjoint(splits[s]["alphabets"] for s in ("train", "val", "test"))
    assert_disjoint(splits[s]["classes"] for s in ("train", "val", "test"))
    assert data["counts"]["test"] == {"characters": 40, "classes": 40, "images": 800}


def test_omniglot_character_split_with_rotations(omniglot_dir, tmp_path):
    episodes = {"test": {"ways": 20, "shots": 5, "queries": 15, "count": 10, "seed": 0}}
    data = build_twice(omniglot.build_splits, omniglot_dir, tmp_path, protocol="character",
                       train_characters=60, val_characters=10, rotations=[0, 90, 180, 270], episodes=episodes)
    counts = data["counts"]
    assert [counts[s]["characters"] for s in ("train", "val", "test")] == [50, 10, 40]
    assert counts["train"]["classes"] == 200 and not data["exact"] and "deviation" in data
    assert_disjoint(data["splits"][s]["classes"] for s in ("train", "val", "test"))
    assert max(max(c) for c in data["episodes"]["test"]["classes"]) < 160  # character x rotation classes
    seeded = omniglot.build_splits(omniglot_dir, tmp_path / "s1.json", protocol="character",
                                   train_characters=60, seed=1)
    assert seeded["splits"]["test"]["classes"] != data["splits"]["test"]["classes"]


def test_omniglot_pooled_alphabets(omniglot_dir, tmp_path):
    data = build_twice(omniglot.build_splits, omniglot_dir, tmp_path, protocol="alphabet_pooled")
    assert [len(data["splits"][s]["alphabets"]) for s in ("train", "val", "test")] == [25, 5, 20]
    assert_disjoint(data["splits"][s]["alphabets"] for s in ("train", "val", "test"))


def test_cub_100_50_50(tmp_path):
    root = fake.cub_tree(tmp_path / "cub", per_class=1)
    data = build_twice(cub.build_splits, root, tmp_path,
                       episodes={"test": {"ways": 5, "shots": 0, "queries": 1, "count": 5, "seed": 0}})
    splits = data["splits"]
    assert [len(splits[s]["classes"]) for s in ("train", "val", "test")] == [100, 50, 50]
    assert_disjoint(splits[s]["classes"] for s in ("train", "val", "test"))
    assert splits["train"]["classes"][:2] == ["001.Bird_001", "003.Bird_003"]
    assert splits["val"]["classes"][0] == "002.Bird_002" and splits["test"]["classes"][0] == "004.Bird_004"
    assert data["complete"] is False  # 200 classes but not the 11,788 images
    listed = "".join(f"{i} {c:03d}.Bird_{c:03d}\n" for i, c in enumerate(range(1, 201), start=1))
    (root / "CUB_200_2011" / "classes.txt").write_text(listed)
    cub.build_splits(root, tmp_path / "listed.json")  # the archive's class list agrees with the folders
    (root / "CUB_200_2011" / "classes.txt").write_text(listed.replace("002.Bird_002", "002.Other"))
    with pytest.raises(ValueError, match="classes.txt"):
        cub.build_splits(root, tmp_path / "bad.json")


def test_celeba_official_partition(tmp_path):
    root = fake.celeba_partition(tmp_path / "celeba", sizes=(8, 3, 4))
    data = build_twice(celeba.build_splits, root, tmp_path)
    assert {s: data["counts"][s]["images"] for s in ("train", "val", "test")} == {"train": 8, "val": 3, "test": 4}
    assert data["splits"]["val"]["images"] == ["000009.jpg", "000010.jpg", "000011.jpg"]
    assert_disjoint(data["splits"][s]["images"] for s in ("train", "val", "test"))
    assert data["complete"] is False
    (root / "list_eval_partition.txt").write_text("000001.jpg 7\n")
    with pytest.raises(ValueError, match=r"list_eval_partition.txt:1"):
        celeba.build_splits(root, tmp_path / "bad.json")


@pytest.mark.parametrize("name", ["office31", "office_home"])
def test_office_seeded_60_20_20(name, tmp_path):
    layout = datasets.DATASETS[name].LAYOUT
    domains = {d: f"{layout['image_root'][0]}/{c[-1]}" for d, c in layout["domains"].items()}
    root = fake.office_tree(tmp_path / name, domains, per_class=10)
    data = build_twice(datasets.DATASETS[name].build_splits, root, tmp_path)
    assert not data["exact"] and "data_txt" in data["deviation"]
    for domain in domains:
        assert [data["counts"][s][domain] for s in ("train", "val", "test")] == [18, 6, 6]
        assert_disjoint(data["splits"][s]["images"][domain] for s in ("train", "val", "test"))
    assert data["classes"] == ["back_pack", "bike", "calculator"]


def test_office31_uses_libmtl_lists(tmp_path):
    root = tmp_path / "office31"
    lists = root / "data_txt"
    lists.mkdir(parents=True)
    for d in ("amazon", "dslr", "webcam"):
        for k, split in enumerate(("train", "val", "test")):
            (lists / f"{d}_{split}.txt").write_text(f"{d}/images/bike/frame_{k:04d}.jpg 27\n"
                                                   f"{d}/images/back_pack/frame_{k:04d}.jpg 0\n")
    data = build_twice(office31.build_splits, root, tmp_path)
    assert data["exact"] and data["splits"]["val"]["images"]["dslr"] == [
        "dslr/images/back_pack/frame_0001.jpg", "dslr/images/bike/frame_0001.jpg"]


def test_nyuv2_train_and_test_folders(tmp_path):
    root = fake.nyuv2_tree(tmp_path / "nyuv2", train=5, test=4)
    data = build_twice(nyuv2.build_splits, root, tmp_path)
    assert data["splits"]["train"]["images"] == [0, 1, 2, 3, 4] and data["splits"]["test"]["images"] == [0, 1, 2, 3]
    assert data["splits"]["test"]["folder"] == "val" and data["counts"]["val"]["images"] == 0
    (root / "val" / "depth" / "3.npy").unlink()
    with pytest.raises(ValueError, match="depth"):
        nyuv2.build_splits(root, tmp_path / "bad.json")


def test_qm9_nash_mtl_split(tmp_path):
    root = fake.qm9_raw(tmp_path / "qm9", molecules=60, uncharacterized=(3, 17, 42))
    data = build_twice(qm9.build_splits, root, tmp_path, test_size=10, val_size=5)
    counts = {s: data["counts"][s]["molecules"] for s in ("train", "val", "test")}
    assert counts == {"train": 42, "val": 5, "test": 10}
    parts = [data["splits"][s]["images"] for s in ("train", "val", "test")]
    assert_disjoint(parts) and sorted(sum(parts, [])) == list(range(57))
    with pytest.raises(ValueError, match="test_size"):
        qm9.build_splits(root, tmp_path / "bad.json", test_size=50, val_size=10)


def test_qm9_uses_the_saved_permutation(tmp_path):
    import torch

    root = fake.qm9_raw(tmp_path / "qm9", molecules=30, uncharacterized=())
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(5))
    torch.save(perm, root / "random_split.t")
    data = qm9.build_splits(root, tmp_path / "out.json", test_size=4, val_size=3)
    assert data["exact"] and data["splits"]["test"]["images"] == sorted(perm[:4].tolist())
    assert data["splits"]["val"]["images"] == sorted(perm[4:7].tolist())


def test_split_file_hash_detects_edits(mini_dir, tmp_path):
    path = tmp_path / "mini.json"
    written = mini_imagenet.build_splits(mini_dir, path)
    assert written["sha256"] == content_hash(json.loads(path.read_text()))
    text = path.read_text().replace(MINI_IMAGENET["test"][0], MINI_IMAGENET["train"][0], 1)
    path.write_text(text)
    with pytest.raises(ValueError, match="sha256"):
        read_split_file(path)


def test_missing_dataset_names_the_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="images_background"):
        omniglot.build_splits(tmp_path, tmp_path / "out.json")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.build_splits("imagenet", tmp_path, tmp_path / "out.json")


def test_registry_dispatches_to_the_dataset_modules(tmp_path):
    """One list of datasets: the builders, variants and image loaders are found through DATASETS."""
    assert datasets.splittable() == [name for name in datasets.DATASETS if name not in ("mnist", "fashion_mnist")]
    root = fake.celeba_partition(tmp_path / "celeba")
    via_registry = datasets.build_splits("celeba", root, tmp_path / "a.json")
    assert via_registry == celeba.build_splits(root, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    with pytest.raises(ValueError, match="'mnist' has no split builder"):
        datasets.build_splits("mnist", tmp_path, tmp_path / "out.json")
    for name in datasets.splittable():
        module = datasets.DATASETS[name]
        assert datasets.split_variants(name) == module.SPLIT_VARIANTS
        assert hasattr(module, "load_images") == (name in ("omniglot", "mini_imagenet", "tiered_imagenet", "cub"))
    config = {"dataset_splits": {"cub": {"anyshot": {"episodes": {}}, "small": {"episodes": {}}}}}
    assert sorted(datasets.split_variants("cub", config)) == ["anyshot", "small"]
    assert datasets.split_options_json("cub", "anyshot", config) == '{"episodes": {}}'
    assert json.loads(datasets.split_options_json("omniglot", "character"))["rotations"] == [0, 90, 180, 270]
    with pytest.raises(ValueError, match="dataset_splits.cub: unknown variant 'tiny'"):
        datasets.split_options_json("cub", "tiny", config)


def test_cli_data_split(tmp_path, capsys):
    from taskbal import cli

    fake.celeba_partition(tmp_path / "resources" / "celeba" / "celeba")
    out = tmp_path / "splits" / "celeba.json"
    cli.main(["data", "split", "celeba", "--root", str(tmp_path / "resources"), "--out", str(out)])
    assert read_split_file(out)["counts"]["test"] == {"images": 4}
    assert "sha256" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        cli.main(["data", "split", "celeba", "--root", str(tmp_path / "resources"), "--out", str(out),
                  "--options", '{"seed": 1}'])
    assert stop.value.code == 2 and "seed" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["omniglot", "cub", "celeba", "office31", "office_home", "nyuv2", "qm9"])
def test_builders_read_what_the_download_rules_prepare(name, tmp_path, monkeypatch):
    """Download (loopback) -> verify -> prepare -> split: the builders read the prepared layouts.

    (mini- and tiered-ImageNet are covered above with the standard class names, which their
    download fakes do not use.)
    """
    import fake_datasets

    directory = fake_datasets.fetch_fake(name, tmp_path / "resources", monkeypatch)
    options = {"qm9": {"test_size": 2, "val_size": 2}, "omniglot": {"val_alphabets": 0}}.get(name, {})
    data = build_twice(datasets.DATASETS[name].build_splits, directory, tmp_path, **options)
    assert all(sum(data["counts"][split].values()) > 0 for split in ("train", "test"))
    if name in ("office31", "office_home"):
        assert data["exact"]  # the LibMTL lists are part of the download
