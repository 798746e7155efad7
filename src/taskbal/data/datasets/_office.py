"""The split builder Office-31 and Office-Home share (LibMTL's protocol on either dataset).

LibMTL's 60 / 20 / 20 image lists per domain when ``data_txt/<domain>_<split>.txt`` is present in
the resource directory (exact); otherwise a seeded 60 / 20 / 20 split stratified by (domain, class)
(an approximation; the split file's ``deviation`` says so). Image paths are relative to the image
root (``office-31/``, ``OfficeHomeDataset_10072016/``), as in LibMTL.

A dataset module describes its layout as ``{"libmtl": <LibMTL's folder name>, "image_root":
[candidate folders], "domains": {<domain>: [candidate folders under the image root]}}``.
"""
from __future__ import annotations

from pathlib import Path

from ..resources import find_dir
from ..split_building import finish, image_files, seeded_rng, subdirs
from ..splitfile import SPLITS


def _lists(root: Path, layout: dict) -> Path | None:
    """LibMTL's list folder: ``data_txt/<domain>_<split>.txt`` or ``data_txt/<office-31|office-home>/...``."""
    first = next(iter(layout["domains"]))
    for folder in (root / "data_txt", root / "data_txt" / layout["libmtl"]):
        if (folder / f"{first}_train.txt").is_file():
            return folder
    return None


def build_office_splits(name: str, layout: dict, resource_dir, out_path, fractions=(0.6, 0.2, 0.2),
                        seed: int = 0) -> dict:
    """The split file of dataset ``name`` (``office31`` / ``office_home``) laid out as ``layout``."""
    root = Path(resource_dir)
    lists = _lists(root, layout)
    splits = {s: {} for s in SPLITS}
    classes: set[str] = set()
    if lists is not None:
        for domain in layout["domains"]:
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
        image_root = find_dir(root, layout["image_root"], f"{name} images")
        for domain, candidates in layout["domains"].items():
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
