"""Black-box multi-task prompt tuning of CLIP (thesis Ye 2024, §4.6.2, Eq. 4.25, Table 4.1).

CLIP (OpenCLIP's ``RN50``: a ResNet-50 image encoder, a 12-layer text transformer) is frozen and seen
as a black box. A prompt of ``tokens`` context embeddings is shared by every task and class, CoOp's
"X X X X {class}." with the X embeddings replaced: p = A v ∈ R^{tokens × width}, where v ∈ R^d is what
the optimiser searches and A ∈ R^{(tokens · width) × d} is fixed, random, with entries
N(0, (σ_e / √d)²), σ_e the standard deviation of CLIP's word embeddings (BBTv2's projection; the thesis'
"N(0, σ_e/√d)" read as a standard deviation, notes/002 §7 #16). Task i's objective on a mini-batch B_i
is the summed cross-entropy Σ_{(x, y) ∈ B_i} ℓ(CLIP(A v; x), y) of the cosine-similarity logits
(scaled by CLIP's logit scale) between the image and the class texts.

The image encoder is frozen, so every image's normalised feature is computed once; an objective query is
then one text-encoder pass over the classes' prompts per population member. The text pass is OpenCLIP's
``encode_text`` with the token embeddings of the context positions replaced (token embedding, positional
embedding, transformer with its causal mask, final layer norm, the end-of-text token's state, text
projection).

Zero-shot CLIP (Table 4.1's first row) uses the handcrafted prompt "a photo of a {class}.".

Weights: OpenCLIP's ``RN50`` / ``openai`` checkpoint from a local file (``clip.weights``), never from the
internet; ``null`` builds the architecture at random (tests; the table page then says so).
``architecture`` overrides OpenCLIP's model config (``embed_dim``, ``vision_cfg``, ``text_cfg``): the tests
build a small CLIP of the same kind (a modified ResNet and a text transformer) from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CONTEXT = "X"  # the placeholder word whose embeddings the prompt replaces
ZERO_SHOT_TEMPLATE = "a photo of a {}."


def class_text(name: str) -> str:
    """A class folder's name as words: ``back_pack`` → ``back pack``."""
    return name.replace("_", " ").replace("-", " ").strip().lower()


def load_clip(model: str, weights: Path | str | None, architecture: dict | None):
    import open_clip

    clip = open_clip.create_model(model, pretrained=None, **(architecture or {}))
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"clip.weights: {path} does not exist (run `snakemake {path}` to place it)")
        open_clip.load_checkpoint(clip, str(path))
    clip.eval()
    for parameter in clip.parameters():
        parameter.requires_grad_(False)
    return clip, open_clip.get_tokenizer(model)


class PromptTuning:
    """The frozen CLIP, the tasks' images as features, and the objectives of a prompt vector v."""

    def __init__(self, tasks, *, model: str, weights, tokens: int, dim: int, batch_size: int, seed: int,
                 architecture: dict | None, device: torch.device, chunk: int = 256):
        self.clip, tokenizer = load_clip(model, weights, architecture)
        self.clip.to(device)
        side = tuple(tasks.arrays("train", tasks.task_names[0])[0].shape[-2:])
        expected = tuple(self.clip.visual.image_size) if isinstance(self.clip.visual.image_size, (tuple, list)) \
            else (self.clip.visual.image_size,) * 2
        if side != expected:
            raise ValueError(f"data.image_size: the images are {side[0]} x {side[1]}, CLIP's image encoder takes "
                             f"{expected[0]} x {expected[1]}")
        self.device, self.tokens, self.dim, self.batch_size, self.seed = device, tokens, dim, batch_size, seed
        self.names = list(tasks.task_names)
        classes = [class_text(c) for c in tasks.meta["classes"]]
        prompt = " ".join([CONTEXT] * tokens)
        self.prompted = tokenizer([f"{prompt} {c}." for c in classes]).to(device)
        self.zero_shot = tokenizer([ZERO_SHOT_TEMPLATE.format(c) for c in classes]).to(device)
        self.width = self.clip.token_embedding.weight.shape[1]
        sigma = float(self.clip.token_embedding.weight.std())
        generator = torch.Generator().manual_seed(int(seed))
        self.projection = (torch.randn(tokens * self.width, dim, generator=generator) * sigma / dim ** 0.5).to(device)
        self.features = {split: [self.image_features(tasks.arrays(split, name)[0], chunk) for name in self.names]
                         for split in tasks.splits}
        self.labels = {split: [torch.as_tensor(tasks.arrays(split, name)[1]).to(device) for name in self.names]
                       for split in tasks.splits}

    @property
    def num_objectives(self) -> int:
        return len(self.names)

    @torch.no_grad()
    def image_features(self, images: np.ndarray, chunk: int) -> torch.Tensor:
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        mean = torch.tensor(OPENAI_DATASET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_DATASET_STD, device=self.device).view(1, 3, 1, 1)
        out = []
        for i in range(0, len(images), chunk):
            x = torch.as_tensor(images[i:i + chunk]).to(self.device).float() / 255.0
            out.append(F.normalize(self.clip.encode_image((x - mean) / std), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.clip.text_projection.shape[1], device=self.device)

    @torch.no_grad()
    def text_features(self, context: torch.Tensor | None) -> torch.Tensor:
        """Normalised class features [C, D]: the learned context [tokens, width] in the prompt, or (None)
        the zero-shot template."""
        ids = self.zero_shot if context is None else self.prompted
        x = self.clip.token_embedding(ids)
        if context is not None:
            x = torch.cat([x[:, :1], context.expand(len(ids), -1, -1).to(x.dtype), x[:, 1 + self.tokens:]], 1)
        x = x + self.clip.positional_embedding
        x = self.clip.transformer(x, attn_mask=self.clip.attn_mask)
        x = self.clip.ln_final(x)
        x = x[torch.arange(len(ids)), ids.argmax(-1)] @ self.clip.text_projection  # the end-of-text token
        return F.normalize(x, dim=-1)

    def context(self, v: np.ndarray) -> torch.Tensor:
        return (self.projection @ torch.as_tensor(v, dtype=torch.float32, device=self.device)).view(
            self.tokens, self.width)

    def logits(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.clip.logit_scale.exp() * features @ text.T

    def batch_indices(self, iteration: int) -> list[torch.Tensor]:
        """Task i's mini-batch at ``iteration``: slice k mod B of a permutation of its training images drawn
        from (seed, task, epoch), so every image is seen once per epoch and a resumed run sees the same."""
        out = []
        for task, labels in enumerate(self.labels["train"]):
            n = len(labels)
            size = min(self.batch_size, n)
            per_epoch = max(n // size, 1)
            epoch, position = divmod(iteration, per_epoch)
            order = np.random.default_rng([self.seed, task, epoch]).permutation(n)
            out.append(torch.as_tensor(order[position * size:(position + 1) * size], device=self.device))
        return out

    @torch.no_grad()
    def objectives(self, points: np.ndarray, iteration: int) -> np.ndarray:
        """[n, d] prompt vectors → [n, m] summed cross-entropies on the tasks' mini-batches of ``iteration``."""
        batches = self.batch_indices(iteration)
        values = np.zeros((len(points), self.num_objectives))
        for row, v in enumerate(points):
            text = self.text_features(self.context(v))
            for task, indices in enumerate(batches):
                logits = self.logits(self.features["train"][task][indices], text)
                values[row, task] = float(F.cross_entropy(logits, self.labels["train"][task][indices], reduction="sum"))
        return values

    @torch.no_grad()
    def accuracies(self, v: np.ndarray | None, split: str) -> list[float]:
        """Per task: accuracy (%) on ``split`` of the prompt v (None: zero-shot)."""
        text = self.text_features(None if v is None else self.context(v))
        return [100.0 * float((self.logits(features, text).argmax(1) == labels).float().mean())
                for features, labels in zip(self.features[split], self.labels[split])]
