"""Small generated datasets in the upstream layouts the split builders read.

Class names are the real ones where the protocol depends on them (mini- and tiered-ImageNet
WordNet ids; 30 background + 20 evaluation Omniglot alphabets; 200 CUB class folders), with
few, tiny images per class, so the builders' counts can be checked against the papers'.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from taskbal.data.datasets.mini_imagenet import STANDARD_CLASSES as MINI_IMAGENET
from taskbal.data.datasets.tiered_imagenet import STANDARD_CLASSES as TIERED_IMAGENET


def _png(path: Path, rng: np.random.Generator, size=(8, 8), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)


def _jpg(path: Path, rng: np.random.Generator, size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(path, format="JPEG")


def mini_imagenet_pickles(root: Path, per_class: int = 20, side: int = 4, drop: str | None = None) -> Path:
    """``mini-imagenet-cache-{train,validation,test}.pkl``: {'image_data': N×s×s×3 uint8, 'class_dict'}."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, file in (("train", "train"), ("val", "validation"), ("test", "test")):
        classes = [c for c in MINI_IMAGENET[split] if c != drop]
        n = len(classes) * per_class
        order = rng.permutation(n)  # rows of a class are not contiguous in the real files either
        class_dict = {c: sorted(order[i * per_class:(i + 1) * per_class].tolist()) for i, c in enumerate(classes)}
        data = {"image_data": rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8), "class_dict": class_dict}
        with open(root / f"mini-imagenet-cache-{file}.pkl", "wb") as handle:
            pickle.dump(data, handle, protocol=4)
    return root


def tiered_imagenet_labels(root: Path, per_class: int = 3) -> Path:
    """``{train,val,test}_labels.pkl`` with Ren et al.'s keys (label_specific[_str], label_general[_str])."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        names = list(TIERED_IMAGENET[split])
        rng.shuffle(names)
        labels = rng.permutation(np.repeat(np.arange(len(names)), per_class))
        general = [f"category_{split}_{i}" for i in range({"train": 20, "val": 6, "test": 8}[split])]
        data = {"label_specific": labels, "label_specific_str": names,
                "label_general": labels % len(general), "label_general_str": general}
        with open(root / f"{split}_labels.pkl", "wb") as handle:
            pickle.dump(data, handle, protocol=2)
    return root


def tiered_imagenet_pickles(root: Path, per_class: int = 20, side: int = 8) -> Path:
    """The whole upstream layout (``tiered-imagenet/{split}_{images_png,labels}.pkl``, ``class_names.txt``,
    ``synsets.txt``) with the standard classes and ``per_class`` small PNG images each."""
    import io

    folder = tiered_imagenet_labels(root / "tiered-imagenet", per_class=per_class)
    rng = np.random.default_rng(2)
    synsets = []
    for split in ("train", "val", "test"):
        with open(folder / f"{split}_labels.pkl", "rb") as handle:
            labels = pickle.load(handle)
        synsets += list(labels["label_specific_str"])
        encoded = []
        for _ in labels["label_specific"]:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
            encoded.append(np.frombuffer(buffer.getvalue(), np.uint8))
        with open(folder / f"{split}_images_png.pkl", "wb") as handle:
            pickle.dump(encoded, handle, protocol=4)
    (folder / "class_names.txt").write_text("".join(f"class {w}\n" for w in synsets))
    (folder / "synsets.txt").write_text("".join(f"{w}\n" for w in synsets))
    return root


def omniglot_tree(root: Path, characters: int = 2, drawings: int = 20) -> Path:
    """``omniglot-py/images_{background,evaluation}/<Alphabet>/characterNN/<id>_NN.png``: 30 + 20 alphabets."""
    rng = np.random.default_rng(2)
    for part, count in (("background", 30), ("evaluation", 20)):
        for a in range(count):
            for c in range(1, characters + 1):
                for d in range(1, drawings + 1):
                    _png(root / "omniglot-py" / f"images_{part}" / f"{part.title()}_Alphabet_{a:02d}"
                         / f"character{c:02d}" / f"{a:02d}{c:02d}_{d:02d}.png", rng, size=(4, 4))
    return root


def cub_tree(root: Path, per_class: int = 3) -> Path:
    """``CUB_200_2011/images/NNN.Name/*.jpg`` for the 200 classes."""
    rng = np.random.default_rng(3)
    for c in range(1, 201):
        for i in range(per_class):
            _jpg(root / "CUB_200_2011" / "images" / f"{c:03d}.Bird_{c:03d}" / f"Bird_{c:03d}_{i:04d}_{c}.jpg",
                 rng, size=(4, 4))
    return root


def celeba_partition(root: Path, sizes=(8, 3, 4)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    labels = np.repeat([0, 1, 2], sizes)
    lines = [f"{i + 1:06d}.jpg {label}" for i, label in enumerate(labels)]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def office_tree(root: Path, domains: dict[str, str], classes=("back_pack", "bike", "calculator"), per_class=10) -> Path:
    rng = np.random.default_rng(4)
    for folder in domains.values():
        for cls in classes:
            for i in range(per_class):
                _jpg(root / folder / cls / f"frame_{i + 1:04d}.jpg", rng, size=(4, 4))
    return root


def nyuv2_tree(root: Path, train: int = 5, test: int = 4) -> Path:
    rng = np.random.default_rng(5)
    for folder, n in (("train", train), ("val", test)):
        for i in range(n):
            for modality, shape in (("image", (4, 6, 3)), ("label", (4, 6)), ("depth", (4, 6, 1)),
                                    ("normal", (4, 6, 3))):
                path = root / folder / modality / f"{i}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, rng.standard_normal(shape).astype(np.float32))
    return root


def qm9_raw(root: Path, molecules: int = 60, uncharacterized=(3, 17, 42)) -> Path:
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    header = "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,h298_atom,g298_atom"
    rows = [f"gdb_{i},1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0" for i in range(1, molecules + 1)]
    (raw / "gdb9.sdf.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    text = ["Uncharacterized molecules (fake)", "", "   Index   GDB17   ", "  ---"]
    text += [f"{i:7d}  C{i}  0.1  0.2" for i in uncharacterized]
    text += ["  ---", ""]
    (raw / "uncharacterized.txt").write_text("\n".join(text) + "\n")
    return root


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male "
    "Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young").split()


def celeba_tree(root: Path, sizes=(12, 4, 4), side=(6, 5)) -> Path:
    """CelebA's layout under ``root`` (= resources/celeba): the partition, the 40 attributes as ±1 and
    aligned-face JPEGs (tiny) in ``celeba/img_align_celeba``."""
    rng = np.random.default_rng(6)
    folder = root / "celeba"
    celeba_partition(folder, sizes)
    names = [f"{i + 1:06d}.jpg" for i in range(sum(sizes))]
    values = rng.choice([-1, 1], size=(len(names), len(CELEBA_ATTRIBUTES)))
    lines = [str(len(names)), " ".join(CELEBA_ATTRIBUTES)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, values)]
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    for name in names:
        _jpg(folder / "img_align_celeba" / name, rng, size=side)
    return root


def nyuv2_scenes(root: Path, train: int = 4, test: int = 3, shape=(16, 24)) -> Path:
    """MTAN / LibMTL's NYUv2 layout under ``root`` (= resources/nyuv2/nyuv2) with values of the real kinds:
    images in [0, 1], labels −1 … 12, depths ≥ 0 (0: none), unit normals (0: none)."""
    rng = np.random.default_rng(7)
    for folder, n in (("train", train), ("val", test)):
        for i in range(n):
            normal = rng.standard_normal((*shape, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            hole = rng.random(shape) < 0.1
            normal[hole] = 0.0
            depth = rng.uniform(0.5, 5.0, (*shape, 1))
            depth[hole] = 0.0
            for modality, array in (("image", rng.random((*shape, 3))), ("label", rng.integers(-1, 13, shape)),
                                    ("depth", depth), ("normal", normal)):
                path = root / folder / modality / f"{i}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, np.asarray(array, dtype=np.float32))
    return root


QM9_SMILES = ("C", "N", "O", "CC", "CO", "C=O", "CN", "C#N", "CC#C", "OCC=O", "c1ccoc1", "CC(C)O")


def qm9_molecules(root: Path, uncharacterized=(2,), smiles=QM9_SMILES) -> Path:
    """QM9's raw files under ``root`` (= resources/qm9) as PyTorch Geometric reads them: small molecules
    embedded in 3D by RDKit (gdb9.sdf), 19 random targets per molecule (gdb9.sdf.csv) and the
    uncharacterized list in its file's layout (9 header lines, 2 trailing)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    writer = Chem.SDWriter(str(raw / "gdb9.sdf"))
    for i, text in enumerate(smiles, start=1):
        molecule = Chem.AddHs(Chem.MolFromSmiles(text))
        AllChem.EmbedMolecule(molecule, randomSeed=i)
        molecule.SetProp("_Name", f"gdb_{i}")
        writer.write(molecule)
    writer.close()
    header = "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,h298_atom,g298_atom"
    rows = [f"gdb_{i}," + ",".join(f"{v:.5f}" for v in rng.normal(size=19)) for i in range(1, len(smiles) + 1)]
    (raw / "gdb9.sdf.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    lines = ["Uncharacterized molecules (fake)"] + [""] * 8 + [f"{i:7d}  C{i}  0.1  0.2" for i in uncharacterized]
    (raw / "uncharacterized.txt").write_text("\n".join(lines + ["  ---", ""]))
    return root
