"""Pretrained weights the models load: where a run finds them, and how they are put there.

Weights are never downloaded by a training job. A run that names a weights file (``mtl.weights:
resources/weights/<file>``) has that file as an input of its training job; rule ``weights`` makes it
with ``taskbal weights fetch <file>``, which copies it from the first of

1. the folder config ``weights_dir`` names (``--local``), then
2. PyTorch's hub cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``),
   where ``torchvision.models.resnet18(weights=...)`` leaves the file on a machine with internet, and for
   the CLIP checkpoint the Hugging Face cache where OpenCLIP leaves it,

and checks it as torchvision does: the file name ends in the first hex digits of its SHA-256. When no
copy is found, the job stops with a message that names the file, where to put it and where to get it.

:data:`KNOWN` lists the files the table configs name (their upstream URL is said in that message).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

WEIGHTS_DIR = "resources/weights"
KNOWN = {
    "resnet18-f37072fd.pth": {
        "what": "torchvision's ImageNet ResNet-18 (ResNet18_Weights.IMAGENET1K_V1)",
        "url": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    },
    "clip-rn50-openai.safetensors": {
        "what": "OpenAI's CLIP RN50 in OpenCLIP's format (open_clip.create_model('RN50-quickgelu', "
                "pretrained='openai') leaves it in the Hugging Face cache as open_clip_model.safetensors)",
        "url": "https://huggingface.co/timm/resnet50_clip.openai/resolve/main/open_clip_model.safetensors",
        "hf_cache": "models--timm--resnet50_clip.openai/snapshots/*/open_clip_model.safetensors",
    },
    "resnet50-0676ba61.pth": {
        "what": "torchvision's ImageNet ResNet-50 (ResNet50_Weights.IMAGENET1K_V1)",
        "url": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    },
}
HASH_SUFFIX = re.compile(r"-([a-f0-9]{8,})\.")


class WeightsMissing(FileNotFoundError):
    """No copy of a weights file was found; the message says where to put one."""


def hub_cache() -> Path:
    """PyTorch's hub checkpoint folder (``torch.hub.get_dir()/checkpoints``), without importing torch."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def hf_cache() -> Path:
    """The Hugging Face hub's cache folder (``$HF_HOME/hub``, by default ``~/.cache/huggingface/hub``)."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def check_hash(path: Path) -> None:
    """torchvision's check: the hex digits after the last '-' of the name start the file's SHA-256."""
    match = HASH_SUFFIX.search(path.name)
    if match is None:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise ValueError(f"{path}: its SHA-256 starts {digest[:len(match.group(1))]}, its name says "
                         f"{match.group(1)}: a damaged or different file")


def fetch_weights(name: str, out_dir: Path | str = WEIGHTS_DIR, local: Path | str | None = None) -> Path:
    """Copy weights file ``name`` into ``out_dir`` from ``local`` or the hub cache; return its path."""
    out = Path(out_dir) / name
    candidates = ([Path(local).expanduser() / name] if local else []) + [hub_cache() / name]
    if KNOWN.get(name, {}).get("hf_cache"):
        candidates += sorted(hf_cache().glob(KNOWN[name]["hf_cache"]))
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        known = KNOWN.get(name, {})
        where = f" ({known['what']}; {known['url']})" if known else ""
        raise WeightsMissing(
            f"weights file {name}{where} not found. Put it at {out}, or in a folder named by config "
            f"`weights_dir`, or in PyTorch's hub cache ({hub_cache()}); looked in: "
            + ", ".join(str(path.parent) for path in candidates) + ". Jobs never download weights.")
    check_hash(found)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.tmp")
    shutil.copyfile(found, tmp)
    os.replace(tmp, out)
    return out
