"""Split builders: each paper's train / validation / test protocol for each real dataset.

``build_<dataset>(resource_dir, out_path, **options)`` reads the dataset in its upstream
layout under ``resource_dir`` (``resources/<dataset>/``), applies the protocol and writes a
split file (:mod:`taskbal.data.splitfile`: canonical JSON with its SHA-256; the same files
and options always give a byte-identical file). ``BUILDERS`` maps dataset names to builders;
``taskbal data split <name>`` and the ``splits_<name>`` Snakemake rules call them.

Every split lists classes in sorted order and, per class, its images in sorted order (file
names, or row indices into the upstream array file); episode sets (``episodes=...``) and
samplers address images by (class position, image position) in these lists.

Protocols (``exact`` in the file says whether it is the published split itself):

* mini-ImageNet — Ravi & Larochelle (2017) 64 / 16 / 20 classes, checked against
  :data:`standard_classes.MINI_IMAGENET`. Exact.
* tiered-ImageNet — Ren et al. (2018) 351 / 97 / 160 classes (the upstream files are
  already split), checked against :data:`standard_classes.TIERED_IMAGENET`. Exact.
* Omniglot — ``alphabet`` (TOW: the original 30 background / 20 evaluation alphabets; a
  seeded validation set of ``val_alphabets`` background alphabets, which the paper does not
  describe), ``alphabet_pooled`` (TR-MAML's code: 50 alphabets permuted into 25 / 5 / 20 —
  its permutation is not published, so a seeded one), ``character`` (Vinyals et al.: 1,623
  characters shuffled into 1,200 train / 423 test, ``val_characters`` taken from train;
  ``rotations`` multiply classes by 90° rotations).
* CUB-200-2011 — the standard 100 / 50 / 50 class split of Chen et al. (2019): classes in
  sorted folder order, index i → train if i even, val if i ≡ 1 (mod 4), test if i ≡ 3 (mod 4).
* CelebA — the official ``list_eval_partition.txt`` (162,770 / 19,867 / 19,962). Exact.
* Office-31 / Office-Home — LibMTL's 60 / 20 / 20 image lists per domain when
  ``data_txt/<domain>_<split>.txt`` is present (exact); otherwise a
  seeded 60 / 20 / 20 split stratified by (domain, class) (approximation).
* NYUv2 — LibMTL / MTAN preprocessed data: the 795 ``train/`` scenes for training and the 654
  ``val/`` scenes as the test set, no validation split (as in LibMTL). Exact.
* QM9 — Nash-MTL / LibMTL: a random permutation of the 130,831 molecules, first 10,000 test,
  next 10,000 validation, the rest train; exact when their ``random_split.t`` is placed in the
  resource directory, otherwise a seeded permutation (approximation).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np

from .fixed_episodes import draw_episodes
from .resources import find_dir, find_file
from .splitfile import SPLITS, write_split_file
from .standard_classes import MINI_IMAGENET, TIERED_IMAGENET

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".PNG")


# ----------------------------------------------------------------------------- helpers


def subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))


def check_classes(found: dict[str, list[str]], expected: dict[str, list[str]], where: str) -> None:
    for split in SPLITS:
        got, want = set(found[split]), set(expected[split])
        if got != want:
            missing, extra = sorted(want - got)[:5], sorted(got - want)[:5]
            raise ValueError(f"{where}: the {split} classes are not the standard split "
                             f"({len(got)} found, {len(want)} expected; "
                             f"missing e.g. {missing}, unexpected e.g. {extra})")


def episode_sets(splits: dict, episodes: dict | None, rotations: int = 1) -> dict:
    """Fixed evaluation episodes per split: ``episodes={"test": {"ways", "shots", "queries", "count", "seed"}}``."""
    out = {}
    for split, spec in sorted((episodes or {}).items()):
        if split not in splits:
            raise ValueError(f"episodes: unknown split {split!r}; splits are {sorted(splits)}")
        unknown = set(spec) - {"ways", "shots", "queries", "count", "seed"}
        if unknown:
            raise ValueError(f"episodes.{split}: unknown key(s) {sorted(unknown)}")
        part = splits[split]
        sizes = [len(part["images"][c]) for c in part["classes"] for _ in range(rotations)]
        out[split] = draw_episodes(sizes, int(spec.get("ways", 5)), spec.get("shots", 1),
                                   int(spec.get("queries", 15)), int(spec.get("count", 600)), int(spec.get("seed", 0)))
    return out


def class_counts(splits: dict) -> dict:
    return {split: {"classes": len(part["classes"]), "images": sum(len(v) for v in part["images"].values())}
            for split, part in splits.items()}


def finish(out_path, dataset: str, protocol: str, exact: bool, options: dict, splits: dict, *,
           unit: str = "class", counts: dict | None = None, deviation: str | None = None,
           episodes: dict | None = None, extra: dict | None = None) -> dict:
    data = {"dataset": dataset, "protocol": protocol, "exact": exact, "options": options, "unit": unit,
            "counts": counts if counts is not None else class_counts(splits), "splits": splits}
    if deviation:
        data["deviation"] = deviation
    if episodes:
        data["episodes"] = episodes
    if extra:
        data.update(extra)
    return write_split_file(out_path, data)


def seeded_rng(seed: int, *labels: str) -> np.random.Generator:
    """A NumPy generator depending only on the seed and the labels (stable across runs and platforms)."""
    words = [int(seed)] + [b for label in labels for b in label.encode()]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


# ----------------------------------------------------------------------------- mini-ImageNet


def _load_pickle(path: Path):
    with open(path, "rb") as handle:
        try:
            return pickle.load(handle)
        except UnicodeDecodeError:
            handle.seek(0)
            return pickle.load(handle, encoding="latin1")
        except Exception as error:  # noqa: BLE001 - an HTML page saved as .pkl is the usual cause
            raise ValueError(f"{path}: not a readable pickle ({error})") from error


def build_mini_imagenet(resource_dir, out_path, episodes: dict | None = None) -> dict:
    """Ravi & Larochelle 64 / 16 / 20 classes from the pickles, the csv lists or class folders."""
    root = Path(resource_dir)
    splits, source = {}, None
    pkl_names = {"train": ["mini-imagenet-cache-train.pkl"],
                 "val": ["mini-imagenet-cache-validation.pkl", "mini-imagenet-cache-val.pkl"],
                 "test": ["mini-imagenet-cache-test.pkl"]}
    csv_names = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
    if find_file(root, pkl_names["train"], "mini-ImageNet", required=False):
        source = "pickle: mini-imagenet-cache-{train,validation,test}.pkl class_dict (row indices into image_data)"
        for split in SPLITS:
            path = find_file(root, pkl_names[split], f"mini-ImageNet {split} pickle")
            data = _load_pickle(path)
            if not isinstance(data, dict) or "class_dict" not in data:
                raise ValueError(f"{path}: expected a dict with 'class_dict' and 'image_data'")
            images = {str(k): sorted(int(i) for i in v) for k, v in data["class_dict"].items()}
            splits[split] = {"classes": sorted(images), "images": images}
    elif all((root / name).is_file() for name in csv_names.values()):
        source = "csv: {train,val,test}.csv (filename,label) of Ravi & Larochelle"
        for split in SPLITS:
            path = root / csv_names[split]
            lines = path.read_text().splitlines()
            if not lines or lines[0].strip().lower() != "filename,label":
                raise ValueError(f"{path}: expected the header 'filename,label'")
            images: dict[str, list[str]] = {}
            for number, line in enumerate(lines[1:], start=2):
                if not line.strip():
                    continue
                parts = line.strip().split(",")
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected 'filename,label', got {line!r}")
                images.setdefault(parts[1], []).append(parts[0])
            splits[split] = {"classes": sorted(images), "images": {k: sorted(v) for k, v in images.items()}}
    else:
        source = "folders: {train,val,test}/<wnid>/*.jpg"
        for split in SPLITS:
            base = find_dir(root, [split], f"mini-ImageNet {split} folder (or the pickles / csv lists)")
            images = {c: image_files(base / c) for c in subdirs(base)}
            splits[split] = {"classes": sorted(images), "images": images}
    check_classes({s: splits[s]["classes"] for s in SPLITS}, MINI_IMAGENET, f"mini-ImageNet ({root})")
    return finish(out_path, "mini_imagenet", "Ravi & Larochelle (2017) 64/16/20 classes", True,
                  {"episodes": episodes or {}}, splits, episodes=episode_sets(splits, episodes),
                  extra={"source": source, "complete": all(len(v) == 600 for p in splits.values()
                                                           for v in p["images"].values())})


# ----------------------------------------------------------------------------- tiered-ImageNet


def build_tiered_imagenet(resource_dir, out_path, episodes: dict | None = None) -> dict:
    """Ren et al. 351 / 97 / 160 classes from ``{train,val,test}_labels.pkl`` (``label_specific[_str]``)."""
    root = Path(resource_dir)
    splits, general = {}, {}
    for split in SPLITS:
        path = find_file(root, [f"{split}_labels.pkl", f"tiered-imagenet/{split}_labels.pkl"],
                         f"tiered-ImageNet {split} labels")
        data = _load_pickle(path)
        for key in ("label_specific", "label_specific_str"):
            if key not in data:
                raise ValueError(f"{path}: missing key {key!r} (expected Ren et al.'s labels pickle)")
        labels = np.asarray(data["label_specific"]).astype(np.int64)
        names = [str(n) for n in data["label_specific_str"]]
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(f"{path}: label_specific has values outside 0..{len(names) - 1}")
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(len(names) + 1))
        images = {names[c]: order[bounds[c]:bounds[c + 1]].tolist() for c in range(len(names))}
        splits[split] = {"classes": sorted(images), "images": images}
        if "label_general_str" in data:
            general[split] = sorted(str(n) for n in data["label_general_str"])
    check_classes({s: splits[s]["classes"] for s in SPLITS}, TIERED_IMAGENET, f"tiered-ImageNet ({root})")
    extra = {"source": "{train,val,test}_labels.pkl label_specific (row indices into *_images_png.pkl)"}
    if general:
        extra["categories"] = general
    return finish(out_path, "tiered_imagenet", "Ren et al. (2018) 351/97/160 classes (20/6/8 categories)", True,
                  {"episodes": episodes or {}}, splits, episodes=episode_sets(splits, episodes), extra=extra)


# ----------------------------------------------------------------------------- Omniglot

OMNIGLOT_PROTOCOLS = ("alphabet", "alphabet_pooled", "character")


def omniglot_tree(root: Path) -> dict[str, dict[str, dict[str, list[str]]]]:
    """{background|evaluation: {alphabet: {character: [png files]}}}."""
    tree = {}
    for part in ("background", "evaluation"):
        base = find_dir(root, [f"images_{part}", f"omniglot-py/images_{part}", f"python/images_{part}"],
                        f"Omniglot images_{part}")
        tree[part] = {a: {c: image_files(base / a / c) for c in subdirs(base / a)} for a in subdirs(base)}
    return tree


def build_omniglot(resource_dir, out_path, protocol: str = "alphabet", val_alphabets: int = 5,
                   train_characters: int = 1200, val_characters: int = 0, rotations: list[int] | None = None,
                   seed: int = 0, episodes: dict | None = None) -> dict:
    """Omniglot by alphabet (TOW, TR-MAML) or by character (Vinyals et al.), optionally with rotations."""
    if protocol not in OMNIGLOT_PROTOCOLS:
        raise ValueError(f"omniglot: unknown protocol {protocol!r}; known: {list(OMNIGLOT_PROTOCOLS)}")
    rotations = [0] if rotations is None else [int(r) for r in rotations]
    if not rotations or any(r % 90 for r in rotations) or len(set(rotations)) != len(rotations):
        raise ValueError(f"omniglot: rotations must be distinct multiples of 90 degrees, got {rotations}")
    tree = omniglot_tree(Path(resource_dir))
    options = {"protocol": protocol, "rotations": rotations, "seed": seed, "episodes": episodes or {}}
    rng = seeded_rng(seed, "omniglot", protocol)
    background, evaluation = sorted(tree["background"]), sorted(tree["evaluation"])
    deviation = None
    if protocol == "alphabet":
        options["val_alphabets"] = val_alphabets
        if not 0 <= val_alphabets < len(background):
            raise ValueError(f"omniglot: val_alphabets must be in 0..{len(background) - 1}")
        val = sorted(rng.choice(background, size=val_alphabets, replace=False).tolist()) if val_alphabets else []
        groups = {"train": [("background", a) for a in background if a not in val],
                  "val": [("background", a) for a in val], "test": [("evaluation", a) for a in evaluation]}
        exact, name = True, "TOW: original background (train) / evaluation (test) alphabets"
        if val_alphabets:
            deviation = f"validation = {val_alphabets} seeded background alphabets (the paper describes none)"
    elif protocol == "alphabet_pooled":
        pooled = [("background", a) for a in background] + [("evaluation", a) for a in evaluation]
        perm = rng.permutation(len(pooled))
        n_train, n_val = 25 * len(pooled) // 50, 5 * len(pooled) // 50
        pick = lambda idx: sorted(pooled[i] for i in idx)  # noqa: E731
        groups = {"train": pick(perm[:n_train]), "val": pick(perm[n_train:n_train + n_val]),
                  "test": pick(perm[n_train + n_val:])}
        exact, name = False, "TR-MAML: 50 alphabets permuted into 25/5/20"
        deviation = "the alphabet permutation of TR-MAML's code is not published; a seeded one is used"
    else:
        options.update(train_characters=train_characters, val_characters=val_characters)
        chars = [(p, a, c) for p in ("background", "evaluation") for a in sorted(tree[p]) for c in sorted(tree[p][a])]
        if not 0 < train_characters < len(chars) or not 0 <= val_characters < train_characters:
            raise ValueError(f"omniglot: need 0 < train_characters < {len(chars)} and 0 <= val_characters < "
                             "train_characters")
        perm = rng.permutation(len(chars))
        n_fit = train_characters - val_characters
        pick = lambda idx: sorted(chars[i] for i in idx)  # noqa: E731
        parts = {"train": pick(perm[:n_fit]), "val": pick(perm[n_fit:train_characters]),
                 "test": pick(perm[train_characters:])}
        exact, name = False, "Vinyals et al. (2016): characters shuffled into 1200 train / 423 test"
        deviation = "Vinyals et al.'s exact character permutation is not published; a seeded one is used"
        splits = {s: {"classes": [f"{p}/{a}/{c}" for p, a, c in v],
                      "images": {f"{p}/{a}/{c}": tree[p][a][c] for p, a, c in v}} for s, v in parts.items()}
    if protocol != "character":
        splits = {}
        for split, alphabets in groups.items():
            images = {f"{p}/{a}/{c}": files for p, a in alphabets for c, files in sorted(tree[p][a].items())}
            splits[split] = {"classes": sorted(images), "images": images,
                             "alphabets": [f"{p}/{a}" for p, a in alphabets]}
    counts = {s: {"characters": len(v["classes"]), "classes": len(v["classes"]) * len(rotations),
                  "images": sum(len(x) for x in v["images"].values())} for s, v in splits.items()}
    name += f"; rotations {rotations} (class = character x rotation, rotation fastest)"
    complete = (len(background), len(evaluation)) == (30, 20) and sum(
        len(files) for part in tree.values() for chars in part.values() for files in chars.values()) == 1623 * 20
    return finish(out_path, "omniglot", name, exact, options, splits, counts=counts, deviation=deviation,
                  episodes=episode_sets(splits, episodes, rotations=len(rotations)), extra={"complete": complete})


# ----------------------------------------------------------------------------- CUB


def build_cub(resource_dir, out_path, episodes: dict | None = None) -> dict:
    """CUB-200-2011 100 / 50 / 50 classes (Chen et al. 2019 rule on the sorted class folders)."""
    base = find_dir(Path(resource_dir), ["CUB_200_2011/images", "images"], "CUB-200-2011 images")
    classes = subdirs(base)
    if len(classes) < 4:
        raise ValueError(f"{base}: expected the 200 class folders, found {len(classes)}")
    listed = base.parent / "classes.txt"
    if listed.is_file():  # the archive's own class list (``<id> <NNN.Name>``) must match the folders
        names = [line.split()[1] for line in listed.read_text().splitlines() if line.strip()]
        if names != classes:
            raise ValueError(f"{listed}: the class list does not match the folders of {base}")
    rule = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1, "test": lambda i: i % 4 == 3}
    splits = {}
    for split in SPLITS:
        chosen = [c for i, c in enumerate(classes) if rule[split](i)]
        splits[split] = {"classes": chosen, "images": {c: image_files(base / c) for c in chosen}}
    return finish(out_path, "cub", "Chen et al. (2019) 100/50/50 classes: sorted index i even -> train, "
                  "i%4==1 -> val, i%4==3 -> test", True, {"episodes": episodes or {}}, splits,
                  episodes=episode_sets(splits, episodes),
                  extra={"note": "TOW tests on 50 CUB classes after Lee et al. (2020), who do not list them; "
                                 "these are the 50 test classes of the standard split",
                         "complete": len(classes) == 200 and sum(
                             len(p["images"][c]) for p in splits.values() for c in p["classes"]) == 11788})


# ----------------------------------------------------------------------------- CelebA

CELEBA_SIZES = {"train": 162770, "val": 19867, "test": 19962}


def build_celeba(resource_dir, out_path) -> dict:
    """CelebA's official partition (0 train, 1 val, 2 test) from ``list_eval_partition.txt``."""
    root = Path(resource_dir)
    path = find_file(root,
                     ["list_eval_partition.txt", "celeba/list_eval_partition.txt", "Eval/list_eval_partition.txt"],
                     "CelebA list_eval_partition.txt")
    names = {"0": "train", "1": "val", "2": "test"}
    parts = {s: [] for s in SPLITS}
    seen = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1] not in names:
            raise ValueError(f"{path}:{number}: expected '<image> <0|1|2>', got {line!r}")
        if fields[0] in seen:
            raise ValueError(f"{path}:{number}: image {fields[0]} listed twice")
        seen.add(fields[0])
        parts[names[fields[1]]].append(fields[0])
    splits = {s: {"images": sorted(v)} for s, v in parts.items()}
    counts = {s: {"images": len(v)} for s, v in parts.items()}
    full = {s: counts[s]["images"] for s in SPLITS} == CELEBA_SIZES
    return finish(out_path, "celeba", "official partition (list_eval_partition.txt)", True, {}, splits,
                  unit="image", counts=counts, extra={"complete": full})


# ----------------------------------------------------------------------------- Office-31 / Office-Home

OFFICE = {
    "office31": {"libmtl": "office-31", "image_root": ["office-31", "."],
                 "domains": {"amazon": ["amazon/images"], "dslr": ["dslr/images"], "webcam": ["webcam/images"]}},
    "office_home": {"libmtl": "office-home", "image_root": ["OfficeHomeDataset_10072016", "."],
                    "domains": {"Art": ["Art"], "Clipart": ["Clipart"], "Product": ["Product"],
                                "Real_World": ["Real_World", "Real World"]}},
}


def _office_lists(root: Path, spec: dict) -> Path | None:
    """LibMTL's list folder: ``data_txt/<domain>_<split>.txt`` or ``data_txt/<office-31|office-home>/...``."""
    first = next(iter(spec["domains"]))
    for folder in (root / "data_txt", root / "data_txt" / spec["libmtl"]):
        if (folder / f"{first}_train.txt").is_file():
            return folder
    return None


def _office(name: str, resource_dir, out_path, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict:
    """Image paths are relative to the image root (``office-31/``, ``OfficeHomeDataset_10072016/``), as in LibMTL."""
    spec, root = OFFICE[name], Path(resource_dir)
    lists = _office_lists(root, spec)
    splits = {s: {} for s in SPLITS}
    classes: set[str] = set()
    if lists is not None:
        for domain in spec["domains"]:
            for split in SPLITS:
                path = lists / f"{domain}_{split}.txt"
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: missing LibMTL split list")
                entries = []
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    if not line.strip():
                        continue
                    fields = line.strip().rsplit(" ", 1)
                    if len(fields) != 2 or not fields[1].isdigit():
                        raise ValueError(f"{path}:{number}: expected '<image path> <label>', got {line!r}")
                    entries.append(fields[0])
                    classes.add(Path(fields[0]).parent.name)
                splits[split][domain] = sorted(entries)
        exact, deviation, protocol = True, None, "LibMTL 60/20/20 image lists (data_txt)"
        options = {}
    else:
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-9 or min(fractions) < 0:
            raise ValueError(f"{name}: fractions must be three non-negative numbers summing to 1, got {fractions}")
        image_root = find_dir(root, spec["image_root"], f"{name} images")
        for domain, candidates in spec["domains"].items():
            base = find_dir(image_root, candidates, f"{name} domain {domain}")
            folder = base.relative_to(image_root).as_posix()
            for split in SPLITS:
                splits[split][domain] = []
            for cls in subdirs(base):
                classes.add(cls)
                files = [f"{folder}/{cls}/{f}" for f in image_files(base / cls)]
                perm = seeded_rng(seed, name, domain, cls).permutation(len(files))
                n_train = int(round(fractions[0] * len(files)))
                n_val = int(round(fractions[1] * len(files)))
                cut = {"train": perm[:n_train], "val": perm[n_train:n_train + n_val], "test": perm[n_train + n_val:]}
                for split in SPLITS:
                    splits[split][domain].extend(files[i] for i in cut[split])
            for split in SPLITS:
                splits[split][domain].sort()
        exact, protocol = False, "seeded 60/20/20 split stratified by (domain, class)"
        deviation = ("LibMTL's data_txt lists were not found in the resource directory; a seeded split with the "
                     "same proportions is used")
        options = {"fractions": list(fractions), "seed": seed}
    counts = {s: {d: len(v) for d, v in splits[s].items()} for s in SPLITS}
    return finish(out_path, name, protocol, exact, options, {s: {"images": splits[s]} for s in SPLITS},
                  unit="image", counts=counts, deviation=deviation, extra={"classes": sorted(classes)})


def build_office31(resource_dir, out_path, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict:
    return _office("office31", resource_dir, out_path, tuple(fractions), seed)


def build_office_home(resource_dir, out_path, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> dict:
    return _office("office_home", resource_dir, out_path, tuple(fractions), seed)


# ----------------------------------------------------------------------------- NYUv2

NYU_MODALITIES = ("image", "label", "depth", "normal")


def build_nyuv2(resource_dir, out_path) -> dict:
    """MTAN/LibMTL NYUv2: ``train/`` (795) for training, ``val/`` (654) as the test set."""
    root = Path(resource_dir)
    if not (root / "train").is_dir():
        root = find_dir(root, ["nyuv2", "nyuv2/nyuv2"], "NYUv2 train/ and val/ folders")
    splits = {}
    for split, folder in (("train", "train"), ("test", "val")):
        indices = None
        for modality in NYU_MODALITIES:
            base = find_dir(root, [f"{folder}/{modality}"], f"NYUv2 {folder}/{modality}")
            found = set()
            for f in base.iterdir():
                match = re.fullmatch(r"(\d+)\.npy", f.name)
                if match:
                    found.add(int(match.group(1)))
            if indices is None:
                indices = found
            elif found != indices:
                raise ValueError(f"{base}: the scene indices differ from {folder}/{NYU_MODALITIES[0]} "
                                 f"(e.g. {sorted(found ^ indices)[:5]})")
        if indices != set(range(len(indices))):
            raise ValueError(f"{root / folder}: scene files are not numbered 0..{len(indices) - 1}")
        splits[split] = {"folder": folder, "images": sorted(indices)}
    splits["val"] = {"folder": None, "images": []}
    counts = {s: {"images": len(v["images"])} for s, v in splits.items()}
    return finish(out_path, "nyuv2", "LibMTL/MTAN: train/ (795) train, val/ (654) test, no validation split", True,
                  {}, splits, unit="image", counts=counts,
                  extra={"complete": (len(splits["train"]["images"]), len(splits["test"]["images"])) == (795, 654)})


# ----------------------------------------------------------------------------- QM9


def qm9_molecule_count(root: Path) -> int:
    """Molecules PyTorch Geometric keeps: rows of gdb9.sdf.csv minus the uncharacterized ones."""
    csv = find_file(root, ["raw/gdb9.sdf.csv", "gdb9.sdf.csv"], "QM9 gdb9.sdf.csv")
    rows = sum(1 for line in csv.read_text().splitlines()[1:] if line.strip())
    skip_file = find_file(root, ["raw/uncharacterized.txt", "uncharacterized.txt"], "QM9 uncharacterized.txt")
    skipped = set()
    for line in skip_file.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            skipped.add(int(fields[0]))
    return rows - len(skipped)


def build_qm9(resource_dir, out_path, test_size: int = 10000, val_size: int = 10000, seed: int = 0) -> dict:
    """Nash-MTL / LibMTL QM9 split: permutation → first ``test_size`` test, next ``val_size`` val, rest train."""
    root = Path(resource_dir)
    saved = find_file(root, ["random_split.t"], "QM9 random_split.t", required=False)
    count = qm9_molecule_count(root)
    if saved is not None:
        import torch

        perm = np.asarray(torch.load(saved, map_location="cpu", weights_only=True)).astype(np.int64).ravel()
        if sorted(perm.tolist()) != list(range(count)):
            raise ValueError(f"{saved}: not a permutation of the {count} molecules")
        exact, deviation, options = True, None, {"test_size": test_size, "val_size": val_size}
    else:
        perm = seeded_rng(seed, "qm9").permutation(count)
        exact, options = False, {"test_size": test_size, "val_size": val_size, "seed": seed}
        deviation = "Nash-MTL's random_split.t was not found in the resource directory; a seeded permutation is used"
    if test_size + val_size >= count:
        raise ValueError(f"qm9: test_size + val_size ({test_size + val_size}) must be below the {count} molecules")
    parts = {"test": perm[:test_size], "val": perm[test_size:test_size + val_size],
             "train": perm[test_size + val_size:]}
    splits = {s: {"images": sorted(int(i) for i in v)} for s, v in parts.items()}
    counts = {s: {"molecules": len(v["images"])} for s, v in splits.items()}
    return finish(out_path, "qm9", "Nash-MTL: random permutation, 10k test / 10k val / rest train "
                  "(indices into PyG's QM9 order)", exact, options, splits, unit="molecule", counts=counts,
                  deviation=deviation, extra={"complete": count == 130831})


BUILDERS = {
    "mini_imagenet": build_mini_imagenet, "tiered_imagenet": build_tiered_imagenet, "omniglot": build_omniglot,
    "cub": build_cub, "celeba": build_celeba, "office31": build_office31, "office_home": build_office_home,
    "nyuv2": build_nyuv2, "qm9": build_qm9,
}


def build_splits(name: str, resource_dir, out_path, **options) -> dict:
    if name not in BUILDERS:
        raise ValueError(f"splits: unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](resource_dir, out_path, **options)
