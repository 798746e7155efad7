"""The 4-block convolutional network of few-shot classification (Vinyals et al. 2016; Finn et al. 2017).

Each block is conv 3×3 (padding 1) → BatchNorm → ReLU → max-pool 2×2; a linear head maps the
flattened features to ``n_way`` logits (84×84 inputs → 5×5×filters features, 28×28 → 1×1×filters).

Config (``model:``): ``{name: conv4, filters: 32, in_channels, image_size, context: 0,
film_blocks: [3], bn_affine: true, init: xavier}``.

- ``filters``: channels of every block. Finn et al. (MAML) use 32 on mini-ImageNet, Snell et al.
  (ProtoNet) and learn2learn's CNN4 64; CAVIA(32)/CAVIA(128) of Nash-GBML are 32 / 128.
- ``in_channels``, ``image_size``: default to the task family's input shape (io_dims); when given
  they must agree with it.
- BatchNorm always uses the statistics of the batch it sees (``track_running_stats=False``), as
  MAML's reference code and learn2learn's examples do in effect (transductive: one task's support
  or query set at a time). This is also what lets the network run batched over tasks with
  ``torch.func.vmap``: there is no running state to update.
- ``bn_affine``: learnable BatchNorm scale and shift (MAML, learn2learn: true; TOW's code: false).
- ``context``: number of CAVIA context parameters (Zintgraf et al. 2019, Sec. 5.3: 100 on
  mini-ImageNet). Each block listed in ``film_blocks`` (1-based; CAVIA's code conditions block 3)
  gets a FiLM layer, a linear map context → (γ, β) of 2·filters values, applied as γ·h + β after
  BatchNorm and max-pooling and before the ReLU — CAVIA's order (``classification/models.py`` of
  the authors' code). For blocks without FiLM, pooling before the ReLU equals pooling after it
  (both are monotone), so the network is the standard one. The FiLM layers keep PyTorch's default
  initialisation, as CAVIA's code does. A network built with context but called without one sees
  the zero context.
- ``init``: ``xavier`` (conv and head weights Xavier-uniform, biases 0: MAML / learn2learn's
  ``maml_init_``) or ``kaiming`` (Kaiming-uniform for ReLU: CAVIA's default); BatchNorm γ = 1, β = 0.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .layers import as_images, check_bool, check_positive_int, image_shape


def max_pool_2x2(h: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(h, 2)`` of an NCHW tensor: the same values, gradients and double backward, bit for bit.

    On the CPU, PyTorch's NCHW max-pool kernel is several times slower than its channels-last one; in
    a second-order MAML step it was the costliest op after the convolutions. So the window maxima are
    located on a channels-last copy, without a graph (same indices: the first maximum of each window in
    row-major order, as the NCHW kernel picks), and taken from ``h`` with ``gather``, whose backward
    (scatter-add into zeros) and double backward (gather) are max-pool's since the windows do not
    overlap. Other devices call ``F.max_pool2d``.
    """
    if h.device.type != "cpu":
        return F.max_pool2d(h, 2)
    n, channels, height, width = h.shape
    with torch.no_grad():
        _, index = F.max_pool2d(h.detach().contiguous(memory_format=torch.channels_last), 2, return_indices=True)
    return h.flatten(2).gather(2, index.contiguous().flatten(2)).view(n, channels, height // 2, width // 2)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, filters: int, context: int, film: bool, bn_affine: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(filters, affine=bn_affine, track_running_stats=False)
        self.film = nn.Linear(context, 2 * filters) if film else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = F.max_pool2d(self.norm(self.conv(x)), 2)
        if self.film is not None:
            if context is None:
                context = x.new_zeros(self.film.in_features)
            gamma, beta = self.film(context).chunk(2, dim=-1)
            h = gamma.view(-1, 1, 1) * h + beta.view(-1, 1, 1)
        return F.relu(h)


class Conv4Embedding(nn.Module):
    """The four blocks, flattened: the embedding ProtoNet uses and the trunk of the classifier."""

    def __init__(self, in_channels: int, filters: int, context: int, film_blocks: list[int], bn_affine: bool):
        super().__init__()
        self.in_channels = in_channels
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else filters, filters, context, i + 1 in film_blocks, bn_affine)
            for i in range(4))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = as_images(x, self.in_channels)
        for block in self.blocks:
            h = block(h, context)
        return h.flatten(1)

    @contextmanager
    def batch_statistics_held(self):
        """Inside, BatchNorm's statistics are held: the first ``batched_forward`` normalises with its own
        batch statistics and records them per task and block; every later one, of k·r tasks ordered
        task-major, normalises task i·r + j with task i's recorded statistics, as constants (no gradient
        flows through them). TOW's Gauss–Newton curvature uses this to see each query point on its own
        (``weighting/tow/curvature.py``): BatchNorm with its statistics fixed maps every input on its own,
        as it does in evaluation mode."""
        self._held = []
        try:
            yield
        finally:
            self._held = None

    def normalise(self, block: int, h: torch.Tensor, k: int, scale, shift, eps: float) -> torch.Tensor:
        """BatchNorm of stacked channels [n, k·F, H, W]: each task's batch statistics, or the held ones."""
        held = getattr(self, "_held", None)
        if held is None:
            return F.batch_norm(h, None, None, scale, shift, training=True, eps=eps)
        if len(held) <= block:  # recording: this forward's own statistics, per task and channel
            flat = h.detach().transpose(0, 1).flatten(1)  # [k·F, n·H·W]
            held.append((flat.mean(1).view(k, -1), flat.var(1, unbiased=False).view(k, -1)))
            return F.batch_norm(h, None, None, scale, shift, training=True, eps=eps)
        mean, var = held[block]
        repeat = k // mean.shape[0]
        if repeat * mean.shape[0] != k:
            raise ValueError(f"held batch statistics of {mean.shape[0]} tasks cannot serve {k}")
        mean, var = (s.repeat_interleave(repeat, 0).reshape(-1) for s in (mean, var))
        return F.batch_norm(h, mean, var, scale, shift, training=False, eps=eps)

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        context: torch.Tensor | None = None, prefix: str = "") -> torch.Tensor:
        """k networks on k tasks: params[name] is [k, *shape], x [k, n, C, H, W], context [k, c] → [k, n, F].

        The tasks' channels are stacked, [n, k·C, H, W], so that one grouped convolution
        (groups = k) applies every task's filters to its own channels, and BatchNorm over the
        stacked channels computes each task's own batch statistics. Same function as
        ``vmap(functional_call(...))``, faster on the CPU (no batching-rule copies;
        benchmarks/bench_learners.py measures both). It pools with ``max_pool_2x2`` (the same numbers
        as ``F.max_pool2d``, a faster CPU kernel); the one-task ``forward`` keeps ``F.max_pool2d``.
        """
        k, n = x.shape[:2]
        h = as_images(x.flatten(0, 1), self.in_channels)
        h = h.view(k, n, *h.shape[1:]).transpose(0, 1).reshape(n, k * h.shape[1], *h.shape[2:])
        for i, block in enumerate(self.blocks):
            name = f"{prefix}blocks.{i}."
            weight = params[name + "conv.weight"]
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), params[name + "conv.bias"].reshape(-1),
                         padding=1, groups=k)
            scale, shift = (params[name + "norm.weight"].reshape(-1), params[name + "norm.bias"].reshape(-1)) \
                if block.norm.affine else (None, None)
            h = max_pool_2x2(self.normalise(i, h, k, scale, shift, block.norm.eps))
            if block.film is not None:
                if context is None:
                    context = h.new_zeros(k, block.film.in_features)
                film = torch.baddbmm(params[name + "film.bias"].unsqueeze(-1), params[name + "film.weight"],
                                     context.unsqueeze(-1)).squeeze(-1)  # [k, 2F]
                gamma, beta = film.chunk(2, dim=-1)
                h = gamma.reshape(1, -1, 1, 1) * h + beta.reshape(1, -1, 1, 1)
            h = F.relu(h)
        return h.reshape(n, k, -1).transpose(0, 1)


class Conv4(nn.Module):
    def __init__(self, in_channels: int, image_size: int, n_way: int, filters: int = 32, context: int = 0,
                 film_blocks: list[int] = (3,), bn_affine: bool = True, init: str = "xavier"):
        super().__init__()
        self.num_context = context
        self.embedding = Conv4Embedding(in_channels, filters, context, list(film_blocks) if context else [],
                                        bn_affine)
        side = image_size
        for _ in range(4):
            side //= 2
        self.head = nn.Linear(filters * side * side, n_way)
        self._initialise(init)

    def _initialise(self, init: str) -> None:
        for module in [block.conv for block in self.embedding.blocks] + [self.head]:
            if init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            else:
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)

    def batch_statistics_held(self):
        return self.embedding.batch_statistics_held()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """One task: x is [n, C, H, W], context [num_context]; returns logits [n, n_way]."""
        return self.head(self.embedding(x, context))

    def batched_forward(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        context: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [k, n, n_way] of k networks on k tasks (see ``Conv4Embedding.batched_forward``)."""
        features = self.embedding.batched_forward(params, x, context, prefix="embedding.")
        return torch.baddbmm(params["head.bias"].unsqueeze(1), features, params["head.weight"].transpose(1, 2))


def build(io_dims, filters: int = 32, in_channels: int | None = None, image_size: int | None = None,
          context: int = 0, film_blocks: list[int] | None = None, bn_affine: bool = True,
          init: str = "xavier") -> Conv4:
    channels, size = image_shape(io_dims, in_channels, image_size)
    check_positive_int("filters", filters)
    if size < 16:
        raise ValueError(f"model.image_size: conv4 halves the image 4 times, needs >= 16, got {size}")
    if not isinstance(context, int) or isinstance(context, bool) or context < 0:
        raise ValueError(f"model.context: expected an integer >= 0, got {context!r}")
    film_blocks = [3] if film_blocks is None else film_blocks
    if not isinstance(film_blocks, (list, tuple)) or any(b not in (1, 2, 3, 4) for b in film_blocks):
        raise ValueError(f"model.film_blocks: expected a list of block numbers in 1..4, got {film_blocks!r}")
    check_bool("bn_affine", bn_affine)
    if init not in ("xavier", "kaiming"):
        raise ValueError(f"model.init: expected 'xavier' or 'kaiming', got {init!r}")
    n_way = io_dims[1]
    return Conv4(channels, size, n_way, filters=filters, context=context, film_blocks=film_blocks,
                 bn_affine=bn_affine, init=init)
