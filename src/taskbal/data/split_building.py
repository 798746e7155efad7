"""Helpers shared by the split builders and image loaders of the dataset modules (:mod:`taskbal.data.datasets`).

Each dataset module's ``build_splits(resource_dir, out_path, **options)`` reads the dataset in its
upstream layout under ``resource_dir`` (``resources/<dataset>/``), applies its paper's protocol and
writes a split file with :func:`finish` (:mod:`taskbal.data.splitfile`: canonical JSON with its
SHA-256; the same files and options always give a byte-identical file).

Every split lists classes in sorted order and, per class, its images in sorted order (file names,
or row indices into the upstream array file); episode sets (``episodes=...``, :func:`episode_sets`)
and samplers address images by (class position, image position) in these lists.

NumPy only at import (no torch): the workflow imports the dataset modules when it is parsed. PIL is
imported by the image decoders when they run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .fixed_episodes import draw_episodes
from .splitfile import SPLITS, write_split_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPEG", ".JPG", ".PNG")

# Lee et al. (2020) / TOW any-shot: per task, with probability 0.5 one k ~ U{1..50} per class, else one shared k.
ANY_SHOT = {"min": 1, "max": 50, "per_class_prob": 0.5}


def eval_episodes(ways, shots, count, queries=15, seed=0, val=None) -> dict:
    """The ``episodes`` option of a split variant: ``count`` test episodes (and ``val`` validation ones)."""
    sets = {"test": {"ways": ways, "shots": shots, "queries": queries, "count": count, "seed": seed}}
    if val:
        sets["val"] = {"ways": ways, "shots": shots, "queries": queries, "count": val, "seed": seed + 1}
    return {"episodes": sets}


# ----------------------------------------------------------------------------- reading upstream layouts


def subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))


def load_pickle(path: Path):
    """A pickle written by Python 2 or 3; a clear error for anything else (an HTML page saved as .pkl)."""
    import pickle

    with open(path, "rb") as handle:
        try:
            return pickle.load(handle)
        except UnicodeDecodeError:
            handle.seek(0)
            return pickle.load(handle, encoding="latin1")
        except Exception as error:  # noqa: BLE001 - an HTML page saved as .pkl is the usual cause
            raise ValueError(f"{path}: not a readable pickle ({error})") from error


def check_classes(found: dict[str, list[str]], expected: dict[str, list[str]], where: str) -> None:
    for split in SPLITS:
        got, want = set(found[split]), set(expected[split])
        if got != want:
            missing, extra = sorted(want - got)[:5], sorted(got - want)[:5]
            raise ValueError(f"{where}: the {split} classes are not the standard split "
                             f"({len(got)} found, {len(want)} expected; "
                             f"missing e.g. {missing}, unexpected e.g. {extra})")


# ----------------------------------------------------------------------------- writing the split file


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


# ----------------------------------------------------------------------------- images of a split, in memory


def decode_image(source, side: int, channels: int) -> np.ndarray:
    """An image file, file object or PIL image as uint8 [C, side, side] (grey for ``channels == 1``, else RGB)."""
    from PIL import Image

    image = source if isinstance(source, Image.Image) else Image.open(source)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def image_from_array(array: np.ndarray):
    """A PIL image of an [H, W, C] uint8 array (to resize it with :func:`decode_image`)."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(array))
