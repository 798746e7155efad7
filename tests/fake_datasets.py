"""Small generated stand-ins for every dataset, in the real formats and layouts, and a loopback server.

``FAKES[name](rng)`` returns ``{relative file name (as in the module's FILES): bytes}`` for the
dataset's downloadable / placeable files (archives, pickles, IDX, CSV, ...), laid out inside as the
real files are. :class:`LoopbackServer` serves bytes over HTTP on 127.0.0.1 with ``Range`` support and
scripted faults (a connection dropped mid-transfer, a corrupted body, ignored ranges).
:func:`point_at` rewrites a dataset module's ``FILES`` to download from the server, with the
checksums of the generated files; split-builder tests can call :func:`fetch_fake` to get a
prepared dataset directory. :func:`omniglot_offline_copy` writes an offline copy of Omniglot (its own
zips and a ``sha256sum`` manifest of every image) in the format of the real one.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------ byte helpers


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def jpeg(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=80)
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return out.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", links: dict[str, tuple[str, str]] | None = None) -> bytes:
    """A tar archive; ``links`` maps member name -> (kind 'sym' | 'hard', target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as handle:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            handle.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target
            handle.addfile(info)
    return out.getvalue()


def zip_with_symlink(members: dict[str, bytes], link: str, target: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
        info = zipfile.ZipInfo(link)
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        handle.writestr(info, target)
    return out.getvalue()


def pickled(obj) -> bytes:
    return pickle.dumps(obj, protocol=4)


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


# ------------------------------------------------------------------------------------- generators


def fake_idx_family(rng: np.random.Generator, n_train: int = 60, n_test: int = 20) -> dict[str, bytes]:
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # recoverable marker
        files[f"{prefix}-images-idx3-ubyte.gz"] = gz(idx_bytes(images))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gz(idx_bytes(labels.astype(np.uint8)))
    return files


def fake_mnist(rng):
    return fake_idx_family(rng)


def fake_fashion_mnist(rng):
    return fake_idx_family(rng)


OMNIGLOT_ALPHABETS = {"images_background": ("Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian"),
                      "images_evaluation": ("Angelic", "Atemayar_Qelisayer")}


def fake_omniglot(rng, characters: int = 3, drawers: int = 4):
    files = {}
    code = 1
    for part, alphabets in OMNIGLOT_ALPHABETS.items():
        members = {}
        for alphabet in alphabets:
            for c in range(1, characters + 1):
                for d in range(1, drawers + 1):
                    image = (rng.random((105, 105)) > 0.1).astype(np.uint8) * 255
                    members[f"{part}/{alphabet}/character{c:02d}/{code:04d}_{d:02d}.png"] = png(image)
                code += 1
        files[f"omniglot-py/{part}.zip"] = zip_bytes(members)
    return files


def _wnids(rng, n, offset):
    return [f"n{offset + i:08d}" for i in range(n)]


def fake_mini_imagenet(rng, classes=(8, 4, 4), per_class: int = 6):
    files, offset = {}, 1000
    for split, k in zip(("train", "validation", "test"), classes):
        wnids = _wnids(rng, k, offset)
        offset += k
        data = rng.integers(0, 256, (k * per_class, 84, 84, 3), dtype=np.uint8)
        class_dict = {w: list(range(i * per_class, (i + 1) * per_class)) for i, w in enumerate(wnids)}
        files[f"mini-imagenet-cache-{split}.pkl"] = pickled({"image_data": data, "class_dict": class_dict})
    return files


def fake_tiered_imagenet(rng, classes=(6, 3, 3), per_class: int = 4, generals=(2, 1, 1)):
    files, names, synsets, offset = {}, [], [], 5000
    for split, k, g in zip(("train", "val", "test"), classes, generals):
        wnids = _wnids(rng, k, offset)
        offset += k
        images, specific, general = [], [], []
        for i in range(k):
            for _ in range(per_class):
                images.append(np.frombuffer(png(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)), np.uint8))
                specific.append(i)
                general.append(i % g)
        files[f"tiered-imagenet/{split}_images_png.pkl"] = pickled(images)
        files[f"tiered-imagenet/{split}_labels.pkl"] = pickled({
            "label_specific": np.array(specific), "label_general": np.array(general),
            "label_specific_str": wnids, "label_general_str": [f"n0{j:07d}" for j in range(g)]})
        names += [f"class {w}" for w in wnids]
        synsets += wnids
    files["tiered-imagenet/class_names.txt"] = ("\n".join(names) + "\n").encode()
    files["tiered-imagenet/synsets.txt"] = ("\n".join(synsets) + "\n").encode()
    return files


CUB_CLASSES = ("001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani",
               "005.Crested_Auklet", "006.Least_Auklet")


def fake_cub(rng, per_class: int = 3):
    members, images, labels, split, boxes = {}, [], [], [], []
    image_id = 1
    for c, cls in enumerate(CUB_CLASSES, start=1):
        for i in range(per_class):
            rel = f"{cls}/{cls.split('.', 1)[1]}_{i + 1:04d}_{100 + image_id}.jpg"
            members[f"CUB_200_2011/images/{rel}"] = jpeg(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(i < per_class - 1)}")
            boxes.append(f"{image_id} 1.0 2.0 30.0 20.0")
            image_id += 1
    members["CUB_200_2011/images.txt"] = ("\n".join(images) + "\n").encode()
    members["CUB_200_2011/classes.txt"] = "".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, 1)).encode()
    members["CUB_200_2011/image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    members["CUB_200_2011/train_test_split.txt"] = ("\n".join(split) + "\n").encode()
    members["CUB_200_2011/bounding_boxes.txt"] = ("\n".join(boxes) + "\n").encode()
    members["attributes.txt"] = b"1 has_bill_shape::curved_(up_or_down)\n"
    return {"CUB_200_2011.tgz": tar_bytes(members)}


CELEBA_ATTRIBUTES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
                     "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
                     "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
                     "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
                     "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie "
                     "Young").split()


def fake_celeba(rng, n: int = 12):
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    images = {f"img_align_celeba/{name}": jpeg(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8))
              for name in names}
    attrs = rng.choice([-1, 1], size=(n, 40))
    attr_text = f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "".join(
        name + " " + " ".join(f"{v:2d}" for v in row) + "\n" for name, row in zip(names, attrs))
    partition = "".join(f"{name} {0 if i < n * 0.6 else 1 if i < n * 0.8 else 2}\n" for i, name in enumerate(names))
    identity = "".join(f"{name} {1 + i % 4}\n" for i, name in enumerate(names))
    bbox = f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{name} 95 71 226 313\n" for name in names)
    landmarks = (f"{n}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
                 "rightmouth_x rightmouth_y\n" + "".join(f"{name} 69 109 106 113 77 142 73 152 108 154\n"
                                                         for name in names))
    return {"celeba/img_align_celeba.zip": zip_bytes(images), "celeba/list_attr_celeba.txt": attr_text.encode(),
            "celeba/list_eval_partition.txt": partition.encode(), "celeba/identity_CelebA.txt": identity.encode(),
            "celeba/list_bbox_celeba.txt": bbox.encode(),
            "celeba/list_landmarks_align_celeba.txt": landmarks.encode()}


OFFICE31_CLASSES = ("back_pack", "bike", "calculator")
OFFICE_HOME_CLASSES = ("Alarm_Clock", "Backpack", "Batteries")


def _split_lists(entries: dict[str, list[str]], classes) -> dict[str, bytes]:
    """LibMTL-style ``<domain>_<split>.txt``: 60/20/20 of each domain's images, ``<path> <label>`` lines."""
    files = {}
    for domain, paths in entries.items():
        chunks = {"train": paths[0::5] + paths[1::5] + paths[2::5], "val": paths[3::5], "test": paths[4::5]}
        for split, chunk in chunks.items():
            lines = [f"{p} {next(i for i, c in enumerate(classes) if f'/{c}/' in p)}" for p in sorted(chunk)]
            files[f"data_txt/{domain}_{split}.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def fake_office31(rng, per_class: int = 5):
    members, entries = {}, {}
    for domain in ("amazon", "dslr", "webcam"):
        entries[domain] = []
        for cls in OFFICE31_CLASSES:
            for i in range(1, per_class + 1):
                rel = f"{domain}/images/{cls}/frame_{i:04d}.jpg"
                members[rel] = jpeg(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
                entries[domain].append(rel)
    return {"domain_adaptation_images.tar.gz": tar_bytes(members), **_split_lists(entries, OFFICE31_CLASSES)}


def fake_office_home(rng, per_class: int = 5):
    members, entries = {}, {}
    for domain in ("Art", "Clipart", "Product", "Real World"):
        key = domain.replace(" ", "_")
        entries[key] = []
        for cls in OFFICE_HOME_CLASSES:
            for i in range(1, per_class + 1):
                members[f"OfficeHomeDataset_10072016/{domain}/{cls}/{i:05d}.jpg"] = jpeg(
                    rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
                entries[key].append(f"{key}/{cls}/{i:05d}.jpg")
    members["OfficeHomeDataset_10072016/ImageInfo.csv"] = b"image_name,source_url,license\n"
    return {"OfficeHomeDataset_10072016.zip": zip_bytes(members), **_split_lists(entries, OFFICE_HOME_CLASSES)}


def fake_nyuv2(rng, n_train: int = 4, n_val: int = 3, height: int = 12, width: int = 16):
    members = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            base = f"nyuv2/{split}"
            members[f"{base}/image/{i}.npy"] = npy(rng.random((height, width, 3), dtype=np.float32))
            label = rng.integers(-1, 13, (height, width)).astype(np.float32)
            members[f"{base}/label/{i}.npy"] = npy(label)
            members[f"{base}/depth/{i}.npy"] = npy(rng.random((height, width, 1), dtype=np.float32) * 10)
            normal = rng.normal(size=(height, width, 3)).astype(np.float32)
            members[f"{base}/normal/{i}.npy"] = npy(normal / np.linalg.norm(normal, axis=-1, keepdims=True))
    return {"nyuv2.zip": zip_bytes(members)}


QM9_CSV_HEADER = ("mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,"
                  "h298_atom,g298_atom")


def fake_qm9(rng, n: int = 8):
    import torch

    sdf, rows = [], [QM9_CSV_HEADER]
    for i in range(1, n + 1):
        sdf.append(f"gdb_{i}\n     RDKit          3D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
                   "   -0.0127    1.0858    0.0080 C   0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n")
        values = rng.normal(size=19)
        rows.append(f"gdb_{i}," + ",".join(f"{v:.6f}" for v in values))
    uncharacterized = ("Molecules that failed the geometry consistency check\n" + "=" * 20 + "\n"
                       + "   Index   GDB17\n" + "-" * 20 + "\n" + f"   {n}   C\n" + "=" * 20 + "\n")
    split = io.BytesIO()
    torch.save(torch.randperm(n - 1, generator=torch.Generator().manual_seed(0)), split)
    return {"raw/qm9.zip": zip_bytes({"gdb9.sdf": "".join(sdf).encode(),
                                      "gdb9.sdf.csv": ("\n".join(rows) + "\n").encode()}),
            "raw/uncharacterized.txt": uncharacterized.encode(), "random_split.t": split.getvalue()}


FAKES = {"mnist": fake_mnist, "fashion_mnist": fake_fashion_mnist, "omniglot": fake_omniglot,
         "mini_imagenet": fake_mini_imagenet, "tiered_imagenet": fake_tiered_imagenet, "cub": fake_cub,
         "celeba": fake_celeba, "office31": fake_office31, "office_home": fake_office_home, "nyuv2": fake_nyuv2,
         "qm9": fake_qm9}


# --------------------------------------------------------------------------------- loopback server


class LoopbackServer:
    """HTTP on 127.0.0.1 serving ``files[path] = bytes`` with Range support and scripted faults.

    ``faults[path]`` is a list consumed one request at a time: ``"drop"`` sends the headers of the full
    response (or of the requested range) and half the bytes, then closes the connection; ``"corrupt"``
    flips a byte; ``"no-range"`` ignores a Range header (answers 200 with the whole file); ``"500"``
    answers a server error. ``requests`` logs ``(path, range header)``.
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                wanted = self.headers.get("Range")
                server.requests.append((path, wanted))
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                fault = server.faults.get(path, []).pop(0) if server.faults.get(path) else None
                if fault == "500":
                    self.send_error(500)
                    return
                if fault == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                start = 0
                if wanted and fault != "no-range":
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if fault == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, data: bytes) -> str:
        path = "/" + path.lstrip("/")
        self.files[path] = data
        return self.url + path

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def point_at(module, server: LoopbackServer, payloads: dict[str, bytes], *, serve_manual: bool = False):
    """The module's FILES with URLs on ``server`` and the generated files' SHA-256 (MD5s dropped).

    Manual files are served too when ``serve_manual`` (their ``manual`` flag is cleared then).
    Returns the new FILES tuple; assign it with ``monkeypatch.setattr(module, "FILES", ...)``.
    """
    specs = []
    for spec in module.FILES:
        data = payloads[spec.name]
        url = server.add(f"{module.__name__.rsplit('.', 1)[1]}/{spec.name}", data)
        specs.append(replace(spec, urls=(url,), sha256=sha256(data), md5=None, content_sha256=None, size=len(data),
                             manual=spec.manual and not serve_manual))
    return tuple(specs)


def write_payloads(directory: Path, payloads: dict[str, bytes]) -> Path:
    """Write generated files flat into ``directory`` (as a user would place downloads)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in payloads.items():
        (directory / Path(name).name).write_bytes(data)
    return directory


def zip_members(data: bytes) -> dict[str, bytes]:
    """{member name: bytes} of a zip archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as handle:
        return {name: handle.read(name) for name in handle.namelist()}


def sha256sum_manifest(members: dict[str, bytes]) -> bytes:
    """``sha256sum`` output for every file, sorted by path in C locale (the format of Omniglot's MANIFEST.sha256)."""
    return "".join(f"{sha256(data)}  {name}\n" for name, data in sorted(members.items())).encode()


def omniglot_offline_copy(folder: Path, zips: dict[str, dict[str, bytes]], manifest: bytes | None = None) -> dict:
    """An offline copy of Omniglot as in ``../shared/data/omniglot``: the zips ``{zip name: {member: bytes}}``
    and ``MANIFEST.sha256`` (of every member unless ``manifest`` is given) in ``folder``.

    Returns the SHA-256 of the three files: the ``omniglot.OFFLINE_SHA256`` that accepts them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: zip_bytes(members) for name, members in zips.items()}
    files["MANIFEST.sha256"] = manifest if manifest is not None else sha256sum_manifest(
        {member: data for members in zips.values() for member, data in members.items()})
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: sha256(data) for name, data in files.items()}


def fetch_fake(name: str, root: Path, monkeypatch, seed: int = 0) -> Path:
    """A prepared fake dataset under ``root/<name>`` (fetched over loopback HTTP); returns its directory."""
    from taskbal.data.datasets import dataset_module, fetch_dataset

    module = dataset_module(name)
    payloads = FAKES[name](np.random.default_rng(seed))
    with LoopbackServer() as server:
        monkeypatch.setattr(module, "FILES", point_at(module, server, payloads, serve_manual=True))
        if hasattr(module, "PREFER_OFFLINE"):
            monkeypatch.setattr(module, "PREFER_OFFLINE", False)
        fetch_dataset(name, root, progress=False, retries=1, backoff=0.0)
    return root / name


__all__ = ["FAKES", "LoopbackServer", "point_at", "fetch_fake", "write_payloads", "sha256", "idx_bytes", "gz",
           "png", "jpeg", "zip_bytes", "tar_bytes", "zip_with_symlink", "pickled", "npy", "json", "zip_members",
           "sha256sum_manifest", "omniglot_offline_copy"]
