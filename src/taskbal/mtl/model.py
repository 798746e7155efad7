"""The multi-task network: a shared encoder, an optional shared neck, one head per task.

Hard parameter sharing (HPS, thesis Ch. 2): one encoder for every task and a Linear head per task
(``head_hidden`` puts Linear → ReLU layers before it).
Two encoders (``mtl.encoder``):

* ``mlp``: inputs are flattened, then Linear → ReLU per entry of ``hidden`` (the thesis' hyper-cleaning
  model is [512, 256]: "Linear(784→512)+ReLU → Linear(512→256)+ReLU").
* ``resnet18_dilated``, ``resnet50_dilated``: torchvision's ResNet-18 / -50 without pooling, layers 3
  and 4 dilated (output stride 8; feature maps of 512 / 2048 channels), with one ASPP head per task whose
  map is upsampled to the input's size (DeepLabV3+ as LibMTL builds it for NYUv2; dense tasks).
* ``mpnn``: the message-passing network of the thesis' QM9 table on packed molecules (mtl/mpnn.py,
  PyTorch Geometric's layers), 64 features per molecule.
* ``resnet18``: torchvision's ResNet-18 up to its global average pooling (512 features), then per entry
  of ``hidden`` Linear → BatchNorm1d → ReLU → Dropout(0.5), the block LibMTL's Office encoder adds
  (``hidden: [512]``; ``[]`` reads the pooled features directly). uint8 images [n, 3, H, W] are scaled
  to [0, 1] and normalised with ImageNet's channel statistics inside the model, so the data can stay
  uint8 in memory. ``weights`` is a torchvision ResNet-18 state-dict file (ImageNet-pretrained, the
  thesis' backbone), or None for a random initialisation.

``sharing: none`` is single-task learning (STL, the thesis' Δp reference): every task gets its own
copy of the encoder, so nothing is shared and each copy only ever sees its own task's gradient.

NORMAL (Ch. 5) inserts its time-aware neural ODE as the ``neck`` between encoder and heads; the neck
sees the task index, because each task reads the ODE at its own position.

Parameter groups the loop needs: ``shared_parameters`` (encoder + the neck's shared part: the ones
whose per-task gradients are combined by a weighting), ``head_parameters(i)`` (task i's head, and under
STL its encoder), and the neck's task-specific parameters (NORMAL's positions), which have their own
update rule.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ENCODERS = ("mlp", "resnet18", "resnet18_dilated", "resnet50_dilated", "mpnn")
DENSE_ENCODERS = {"resnet18_dilated": 512, "resnet50_dilated": 2048}  # feature maps: their channels
INPUT_NORMS = ("imagenet", "none")
SHARING = ("hard", "none")
RESNET18_FEATURES = 512  # ResNet-18's globally pooled features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageInput(nn.Module):
    """uint8 images → floats in [0, 1] → normalised with ImageNet's channel mean and std (``input_norm:
    imagenet``), or left in [0, 1] (``none``: LibMTL feeds NYUv2's pre-processed images as they are)."""

    def __init__(self, input_norm: str = "imagenet"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"mtl.input_norm: unknown {input_norm!r}; known: {list(INPUT_NORMS)}")
        self.normalise = input_norm == "imagenet"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return (x - self.mean) / self.std if self.normalise else x


def mlp_encoder(input_dim: int, hidden: list[int]) -> tuple[nn.Module, int]:
    if not hidden or any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ValueError(f"mtl.hidden: expected a non-empty list of positive integers, got {hidden!r}")
    layers, width = [nn.Flatten()], input_dim
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers), width


def load_resnet_weights(resnet: nn.Module, path: Path | str) -> None:
    """A torchvision ResNet state dict into ``resnet`` (whose ``fc`` the heads replace: the file's is dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mtl.weights: {path} does not exist (run `snakemake {path}` to place it)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    try:
        missing, unexpected = resnet.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a parameter of another shape
        raise ValueError(f"mtl.weights: {path} is not a ResNet-18 state dict ({str(error).splitlines()[-1].strip()})") \
            from None
    if missing or unexpected:
        raise ValueError(f"mtl.weights: {path} is not a ResNet-18 state dict "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def resnet18_encoder(hidden: list[int], weights: Path | str | None,
                     input_norm: str = "imagenet") -> tuple[nn.Module, int]:
    from torchvision.models import resnet18

    if any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ValueError(f"mtl.hidden: expected a list of positive integers, got {hidden!r}")
    resnet = resnet18(weights=None)
    resnet.fc = nn.Identity()
    if weights is not None:
        load_resnet_weights(resnet, weights)
    layers, width = [ImageInput(input_norm), resnet], RESNET18_FEATURES
    for size in hidden:
        layers += [nn.Linear(width, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(0.5)]
        width = size
    return nn.Sequential(*layers), width


def encoder_width(encoder: str, input_dim: int, hidden: list[int]) -> int:
    """The width of the features an encoder gives (its last hidden layer, else ResNet-18's 512)."""
    if hidden:
        return int(hidden[-1])
    if encoder in DENSE_ENCODERS:
        return DENSE_ENCODERS[encoder]
    if encoder == "mpnn":
        from .mpnn import WIDTH

        return WIDTH
    return RESNET18_FEATURES if encoder == "resnet18" else input_dim


def dilate(layer: nn.Module, dilation: int) -> None:
    """Output stride 16 → 8 → ... : the layer keeps its input's resolution. Its strided convolutions take
    stride 1, and its 3 × 3 convolutions dilation ``dilation`` (the first block's dilation // 2, which saw
    the stride), as torchvision's ``replace_stride_with_dilation`` does for Bottleneck blocks; this also
    serves the BasicBlocks of ResNet-18, which torchvision's option refuses."""
    for index, block in enumerate(layer):
        rate = dilation // 2 if index == 0 else dilation
        for module in block.modules():
            if isinstance(module, nn.Conv2d):
                if module.stride == (2, 2):
                    module.stride = (1, 1)
                if module.kernel_size == (3, 3):
                    module.dilation, module.padding = (rate, rate), (rate, rate)


def dilated_resnet_encoder(encoder: str, weights: Path | str | None, input_norm: str) -> tuple[nn.Module, int]:
    """A ResNet without its pooling and classifier, layers 3 and 4 dilated (output stride 8): the shared
    extractor of DeepLabV3+ in LibMTL's NYUv2 model; feature maps [n, 512 | 2048, H / 8, W / 8]."""
    from torchvision.models import resnet18, resnet50

    resnet = (resnet18 if encoder == "resnet18_dilated" else resnet50)(weights=None)
    resnet.fc = nn.Identity()
    if weights is not None:
        load_resnet_weights(resnet, weights)
    dilate(resnet.layer3, 2)
    dilate(resnet.layer4, 4)
    stem = [resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2, resnet.layer3,
            resnet.layer4]
    return nn.Sequential(ImageInput(input_norm), *stem), DENSE_ENCODERS[encoder]


def build_encoder(encoder: str, input_dim: int, hidden: list[int], weights,
                  input_norm: str = "imagenet") -> tuple[nn.Module, int]:
    if encoder == "mlp":
        if weights is not None:
            raise ValueError("mtl.weights: only the ResNet encoders load pretrained weights")
        return mlp_encoder(input_dim, hidden)
    if encoder == "resnet18":
        return resnet18_encoder(hidden, weights, input_norm)
    if encoder == "mpnn":
        from .mpnn import WIDTH, MPNNEncoder

        if hidden or weights is not None:
            raise ValueError("mtl.hidden / mtl.weights: the mpnn encoder takes neither (hidden: [], weights: null)")
        return MPNNEncoder(), WIDTH
    if encoder in DENSE_ENCODERS:
        if hidden:
            raise ValueError(f"mtl.hidden: the {encoder} encoder gives feature maps, it takes no hidden layers "
                             f"(hidden: []); got {hidden!r}")
        return dilated_resnet_encoder(encoder, weights, input_norm)
    raise ValueError(f"mtl.encoder: unknown {encoder!r}; known: {list(ENCODERS)}")


def head(width: int, hidden: list[int], classes: int) -> nn.Module:
    """A task's head: Linear, or Linear → ReLU per entry of ``hidden`` then Linear (thesis Table 5.4's
    "task-specific layers" ablation)."""
    if any((not isinstance(h, int)) or h < 1 for h in hidden):
        raise ValueError(f"mtl.head_hidden: expected a list of positive integers, got {hidden!r}")
    layers = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, classes)) if layers else nn.Linear(width, classes)


def dense_head(channels: int, outputs: int) -> nn.Module:
    """An ASPP head of DeepLabV3 on feature maps (torchvision's ``DeepLabHead``: atrous rates 12, 24, 36),
    one per task as in LibMTL's NYUv2 model; the forward pass upsamples its map to the input's size."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    return DeepLabHead(channels, outputs)


class MultiTaskNet(nn.Module):
    def __init__(self, input_dim: int, hidden: list[int], num_classes: list[int], neck: nn.Module | None = None, *,
                 encoder: str = "mlp", sharing: str = "hard", weights: Path | str | None = None,
                 head_hidden: list[int] | None = None, input_norm: str = "imagenet"):
        super().__init__()
        if sharing not in SHARING:
            raise ValueError(f"mtl.sharing: unknown {sharing!r}; known: {list(SHARING)}")
        if sharing == "none" and neck is not None:
            raise ValueError("mtl.sharing: 'none' (single-task learning) has no shared neck; NORMAL needs 'hard'")
        self.sharing, self.dense = sharing, encoder in DENSE_ENCODERS
        if self.dense and head_hidden:
            raise ValueError("mtl.head_hidden: the heads of a dense encoder are ASPP heads; it takes no hidden layers")
        if sharing == "hard":
            self.encoder, width = build_encoder(encoder, input_dim, hidden, weights, input_norm)
        else:
            built = [build_encoder(encoder, input_dim, hidden, weights, input_norm) for _ in num_classes]
            self.encoders = nn.ModuleList(module for module, _ in built)
            width = built[0][1]
        self.neck = neck
        self.heads = nn.ModuleList(dense_head(width, outputs) if self.dense else head(width, list(head_hidden or []),
                                                                                        outputs)
                                   for outputs in num_classes)
        self.feature_dim = width

    def encode(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.encoder(x) if self.sharing == "hard" else self.encoders[task](x)

    def forward(self, x: torch.Tensor, task: int, return_state: bool = False):
        """Logits of ``task``; with ``return_state`` also the neck's output z and its time derivative."""
        return self.from_features(self.encode(x, task), task, return_state, size=x.shape[-2:])

    def from_features(self, features: torch.Tensor, task: int, return_state: bool = False, size=None):
        """The neck and head of ``task`` on encoder features (one encoder pass can serve every task); a dense
        head's map is upsampled bilinearly to ``size``, the input's height and width. The neck acts on the
        channels of a feature map at every position (its FC layers are 1 × 1 convolutions, as the thesis'
        NYUv2 model has them)."""
        if self.neck is None:
            z, velocity = features, None
        elif self.dense:
            z, velocity = self.neck(features.movedim(1, -1), task)
            z, velocity = z.movedim(-1, 1), velocity.movedim(-1, 1)
        else:
            z, velocity = self.neck(features, task)
        logits = self.heads[task](z)
        if self.dense:
            logits = nn.functional.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
        return (logits, z, velocity) if return_state else logits

    def task_specific_names(self) -> set[str]:
        names = set()
        if self.neck is not None and hasattr(self.neck, "task_specific_parameter_names"):
            names |= {f"neck.{name}" for name in self.neck.task_specific_parameter_names()}
        return names

    def shared_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        skip = self.task_specific_names()
        return [(name, p) for name, p in self.named_parameters()
                if not name.startswith(("heads.", "encoders.")) and name not in skip]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.shared_named_parameters()]

    def head_parameters(self, task: int) -> list[nn.Parameter]:
        own = list(self.encoders[task].parameters()) if self.sharing == "none" else []
        return own + list(self.heads[task].parameters())
