"""Gauss–Newton curvature of a meta-batch's query losses, J_oᵀ H_o J_o per task (TOW Sec. 3.1): through a
vmapped Jacobian of the query outputs for any network, or from per-point backward passes for networks
that map query points independently (k·n weight copies; the closed-form diagonal for models that report
their linear layers' inputs and pre-activations, such as models/mlp.py)."""
from __future__ import annotations

import torch


def output_hessian(loss: str, outputs: torch.Tensor) -> torch.Tensor:
    """Hessian of the per-task loss w.r.t. the query outputs: [k, n, c, c] (block per query point)."""
    k, n, c = outputs.shape
    if loss == "mse":
        eye = torch.eye(c, dtype=outputs.dtype, device=outputs.device)
        return (2.0 / (n * c)) * eye.expand(k, n, c, c)
    p = outputs.softmax(-1)
    return (torch.diag_embed(p) - p[..., :, None] * p[..., None, :]) / n


PROBE_CHUNK = 32  # output probes per batched backward: each holds a copy of the backward's activations


def _output_jacobian(outputs: torch.Tensor, leaves: list[torch.Tensor], retain: bool) -> torch.Tensor:
    """J_o of every task: [k, n, c, Σ leaf sizes], task i's outputs depending on row i of each leaf only.
    The n·c probes go through the backward ``PROBE_CHUNK`` at a time (a conv net's activations times n·c
    do not fit in memory)."""
    k, n, c = outputs.shape
    probes = torch.eye(n * c, dtype=outputs.dtype, device=outputs.device).view(n * c, 1, n, c).expand(n * c, k, n, c)
    parts = []
    for start in range(0, n * c, PROBE_CHUNK):
        chunk = probes[start:start + PROBE_CHUNK]
        last = start + PROBE_CHUNK >= n * c
        try:
            rows = torch.autograd.grad(outputs, leaves, grad_outputs=chunk, is_grads_batched=True,
                                       retain_graph=retain or not last, allow_unused=True, materialize_grads=True)
        except RuntimeError:  # an op without a batched backward: one probe at a time
            per = [torch.autograd.grad(outputs, leaves, grad_outputs=probe, retain_graph=True,
                                       allow_unused=True, materialize_grads=True) for probe in chunk]
            rows = [torch.stack(col) for col in zip(*per)]
        parts.append(torch.cat([r.reshape(len(chunk), k, -1) for r in rows], dim=2))
    jac = torch.cat(parts)
    return jac.permute(1, 0, 2).reshape(k, n, c, -1)


def gauss_newton(loss: str, outputs: torch.Tensor, jac: torch.Tensor, form: str) -> torch.Tensor:
    """Σ_n J_nᵀ H_n J_n per task: diagonals [k, D] (``form`` diagonal) or matrices [k, D, D]."""
    HJ = torch.einsum("kncm,knmd->kncd", output_hessian(loss, outputs), jac)
    if form == "diagonal":
        return (jac * HJ).sum((1, 2))
    return torch.einsum("kncd,knce->kde", jac, HJ)


def output_hessian_factor(loss: str, outputs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A and s with s·A Aᵀ = ``output_hessian`` at every query point: A [k, n, c, c]. MSE: A = I,
    s = 2/(n·c); cross-entropy: A = diag(√p) − p √pᵀ (column j is √p_j (e_j − p); A Aᵀ = diag p − ppᵀ
    because Σ_j p_j = 1), s = 1/n."""
    k, n, c = outputs.shape
    if loss == "mse":
        return torch.eye(c, dtype=outputs.dtype, device=outputs.device).expand(k, n, c, c), 2.0 / (n * c)
    p = outputs.softmax(-1)
    root = p.sqrt()
    return torch.diag_embed(root) - p[..., :, None] * root[..., None, :], 1.0 / n


def holds_batch_statistics(model: torch.nn.Module) -> bool:
    """Whether the network can normalise with held batch statistics (``batch_statistics_held``: conv4)."""
    return callable(getattr(model, "batch_statistics_held", None))


def points_independent(model: torch.nn.Module) -> bool:
    """Whether the network maps each input row without looking at the other rows of its batch: no
    batch-statistics normalisation, no random masks. Then a task's outputs on n query points are the
    outputs of n copies of its weights on one point each."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and (
                module.training or not module.track_running_stats):
            return False
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            return False
    return True


def _output_probes(loss: str, out: torch.Tensor, k: int, n: int) -> tuple[list[torch.Tensor], float]:
    """The columns of the output-Hessian factor as backward probes shaped like ``out``, and s."""
    c = out.shape[-1]
    if loss == "mse" and c == 1:
        return [torch.ones_like(out)], 2.0 / n
    factor, scale = output_hessian_factor(loss, out.detach().view(k, n, c))
    return [factor[..., j].reshape(out.shape) for j in range(c)], scale


def _replicated_rows(learner, fast, query_x, wanted, form):
    """Per-point rows (A_pᵀ J_p)_j by one backward per column j through k·n weight copies: their squares
    summed over the points (``diagonal``, by parameter name) or all rows [k, n·c, Σ wanted sizes]."""
    k, n = query_x.shape[:2]
    with torch.enable_grad():
        copies = {name: p.detach().unsqueeze(1).expand(k, n, *p.shape[1:]).reshape(k * n, *p.shape[1:])
                  for name, p in fast.items()}
        leaves = [copies[name].requires_grad_() for name in wanted]
        out = learner.predict(copies, query_x.reshape(k * n, 1, *query_x.shape[2:]))
        probes, scale = _output_probes(learner.loss, out, k, n)
        blocks: dict[str, torch.Tensor] = {}
        rows = []
        for j, probe in enumerate(probes):
            grads = torch.autograd.grad(out, leaves, grad_outputs=probe, retain_graph=j < len(probes) - 1,
                                        allow_unused=True, materialize_grads=True)
            if form == "diagonal":
                for name, g in zip(wanted, grads):
                    square = (g * g).unflatten(0, (k, n)).sum(1).reshape(k, -1)
                    blocks[name] = square if j == 0 else blocks[name] + square
            else:
                rows.append(torch.cat([g.reshape(k, n, -1) for g in grads], dim=2))
    return (blocks if form == "diagonal" else torch.cat(rows, dim=1)), scale


def _closed_form_diagonal(learner, fast, query_x):
    """The diagonal in closed form, or None when the learner's ``predict`` is not its model's batched
    forward or the model cannot report its linear layers (``records_linear_layers``: models/mlp.py).
    Layer l computes z = W h + b at every point, so point p's row of W is δ_p h_pᵀ with
    δ_p = ∂(A_pᵀ f_p)_j/∂z_p, and Σ_p (δ_p h_pᵀ)² = (δ²)ᵀ h²: one [k, out, n] × [k, n, in] product
    per layer instead of k·n per-point gradients. The δ_p of all points come from one backward per
    column j of A (the points are independent)."""
    model = learner.model
    if not (learner.predicts_with_model_forward and getattr(model, "records_linear_layers", False)):
        return None
    weights, context = learner.model_inputs(fast)
    weights = {name: w.detach() for name, w in weights.items()}
    context = None if context is None else context.detach()
    k, n = query_x.shape[:2]
    layers: list = []
    with torch.enable_grad():  # an input that requires grad puts every layer's output z in the graph
        out = model.batched_forward(weights, query_x.detach().requires_grad_(), context, record=layers)
        probes, scale = _output_probes(learner.loss, out, k, n)
        squares = [h.detach() * h.detach() for _, h, _ in layers]
        outputs = [z for _, _, z in layers]
        blocks: dict[str, torch.Tensor] = {}
        for j, probe in enumerate(probes):
            deltas = torch.autograd.grad(out, outputs, grad_outputs=probe, retain_graph=j < len(probes) - 1)
            for (index, _, _), delta, square in zip(layers, deltas, squares):
                d2 = delta * delta
                for name, block in ((f"{index}.weight", (d2.transpose(1, 2) @ square).reshape(k, -1)),
                                    (f"{index}.bias", d2.sum(1))):
                    blocks[name] = block if j == 0 else blocks[name] + block
    return blocks, scale


def at_meta_positions(columns: torch.Tensor, layout: list[tuple[str, int]], learner,
                      num_params: int) -> torch.Tensor:
    """``columns`` [..., Σ sizes] holds one block per (name, size) of ``layout``, in that order (columns of
    adapted weights); returns [..., num_params] with each block at its meta-parameter's position and 0 for
    meta-parameters not in ``layout`` (Meta-SGD's rates). Blocks of weights that are not meta-parameters
    (CAVIA's context) are dropped. When the layout is the meta-parameters themselves (MAML): ``columns``."""
    if [name for name, _ in layout] == learner.names:
        return columns
    starts, begin = {}, 0
    for name, size in layout:
        starts[name], begin = begin, begin + size
    placed = columns.new_zeros(*columns.shape[:-1], num_params)
    offset = 0
    for name, shape in zip(learner.names, learner.shapes):
        size = shape.numel()
        if name in starts:
            placed[..., offset:offset + size] = columns[..., starts[name]:starts[name] + size]
        offset += size
    return placed


def per_point_gauss_newton(learner, fast: dict[str, torch.Tensor], query_x: torch.Tensor, num_params: int,
                           form: str) -> torch.Tensor:
    """The Gauss–Newton curvature at the adapted weights ``fast`` without a Jacobian. With H_p = s A_p A_pᵀ
    (``output_hessian_factor``), Σ_p J_pᵀ H_p J_p = s Σ_p Σ_j (A_pᵀ J_p)_jᵀ (A_pᵀ J_p)_j, and the rows
    (A_pᵀ J_p)_j of all tasks and points come from one ordinary backward per output column j: every task's
    weights are copied once per query point (k·n copies, copy (i, p) sees point p of task i only, through
    the learner's own batched ``predict``). c backward passes instead of one vmapped over n·c probes.
    The diagonal is summed in closed form where the model reports its linear layers (no per-point copies). Needs
    ``points_independent``. Columns of meta-parameters outside ``fast`` (Meta-SGD's rates) are 0; fast
    weights that are not meta-parameters (CAVIA's context) get none."""
    k = query_x.shape[0]
    names, shapes = learner.names, learner.shapes
    wanted = [name for name in names if name in fast]
    if form == "diagonal":
        closed_form = _closed_form_diagonal(learner, fast, query_x)
        blocks, scale = closed_form if closed_form is not None else _replicated_rows(
            learner, fast, query_x, wanted, form)
        parts = [blocks[name] if name in blocks else query_x.new_zeros(k, shape.numel())
                 for name, shape in zip(names, shapes)]
        return scale * torch.cat(parts, dim=1)
    rows, scale = _replicated_rows(learner, fast, query_x, wanted, form)  # [k, n·c, Σ wanted sizes]
    layout = [(name, shape.numel()) for name, shape in zip(names, shapes) if name in fast]
    rows = at_meta_positions(rows, layout, learner, num_params)
    return scale * rows.transpose(1, 2) @ rows


def per_query_point_gauss_newton(learner, flat: torch.Tensor, batch, form: str) -> torch.Tensor:
    """The Gauss–Newton curvature of learners whose query outputs depend on the support set but on no other
    query point (ProtoNet: a query's logits are its distances to the support prototypes), through the
    learner's own ``query_outputs``: every task is copied once per query point (k·n tasks, each with the
    whole support set and one query point, and its own copy of the meta-parameters ``flat``), and the rows
    (A_pᵀ J_p)_j of all points come from one ordinary backward per output column j, as in
    ``per_point_gauss_newton``. Needs ``points_independent`` (or statistics held by the caller)."""
    from ...learners import TaskBatch

    k, n = batch.query_x.shape[:2]

    def replicate(t):
        return t.repeat_interleave(n, 0)

    points = TaskBatch(replicate(batch.support_x), replicate(batch.support_y),
                       batch.query_x.reshape(k * n, 1, *batch.query_x.shape[2:]),
                       batch.query_y.reshape(k * n, 1, *batch.query_y.shape[2:]), replicate(batch.features))
    with torch.enable_grad():
        copies = learner.per_task_copies(learner.unflatten(flat), k * n)
        leaves = list(copies.values())
        out = learner.query_outputs(copies, points, create_graph=False)
        probes, scale = _output_probes(learner.loss, out, k, n)
        total, rows = None, []
        for j, probe in enumerate(probes):
            grads = torch.autograd.grad(out, leaves, grad_outputs=probe, retain_graph=j < len(probes) - 1,
                                        allow_unused=True, materialize_grads=True)
            row = torch.cat([g.reshape(k, n, -1) for g in grads], dim=2)
            if form == "diagonal":
                square = (row * row).sum(1)
                total = square if total is None else total + square
            else:
                rows.append(row)
    if form == "diagonal":
        return scale * total
    rows = torch.cat(rows, dim=1)
    return scale * rows.transpose(1, 2) @ rows


def class_major_support(batch) -> tuple[int, int] | None:
    """(ways, shots) when every task's support set is laid out class by class (labels 0 … ways−1, each
    ``shots`` times in a row, as the image families build it), else None."""
    k, m = batch.support_y.shape[:2]
    ways = int(batch.support_y.max()) + 1
    if batch.support_y.dim() != 2 or m % ways:
        return None
    shots = m // ways
    expected = torch.arange(ways, device=batch.support_y.device).repeat_interleave(shots)
    return (ways, shots) if bool((batch.support_y == expected).all()) else None


def prototype_factored_pays(batch, embedding_dim: int) -> bool:
    """Whether ``prototype_factored_gauss_newton`` needs fewer image backward passes than
    ``per_query_point_gauss_newton``: per task and output column, c·n query images plus E probes through the
    support set, against c·n copies of the whole support set and its query point (Omniglot's 32-dimensional
    embedding: about 4 times fewer; mini-ImageNet's 800: more)."""
    layout = class_major_support(batch)
    if layout is None:
        return False
    ways, shots = layout
    n = batch.query_x.shape[1]
    return ways * n + embedding_dim * ways * shots < ways * n * (1 + ways * shots)


def prototype_factored_gauss_newton(learner, flat: torch.Tensor, batch) -> torch.Tensor | None:
    """The Gauss–Newton diagonal of ProtoNet's query losses (the same matrix as ``per_query_point_gauss_newton``,
    in fewer backward passes when the embedding is small). A logit z_qc = −dist(e_q, p_c) of query embedding e_q
    and prototype p_c has ∂z_qc/∂p_c = −∂z_qc/∂e_q = u_qc (u_qc = (e_q − p_c)/‖e_q − p_c‖ for the Euclidean
    distance, 2(e_q − p_c) for the squared one), so row j of A_qᵀ J_q (``output_hessian_factor``) is

        Σ_c A_qcj (−u_qc)ᵀ ∂e_q/∂θ  +  Σ_c A_qcj u_qcᵀ ∂p_c/∂θ.

    The first term comes from one backward per column j through k·n weight copies, each on one query image;
    the second from the prototypes' Jacobian ∂p_c/∂θ (E probes through k·ways copies, each on the support images
    of one class), contracted with the coefficients. Needs a class-major support set (``class_major_support``)
    and the network's batch statistics held by the caller (or none). None when it would not need fewer backward
    passes (``prototype_factored_pays``: known once the embedding's size is)."""
    if class_major_support(batch) is None:
        return None
    k, n = batch.query_x.shape[:2]
    ways, shots = class_major_support(batch)
    params = learner.unflatten(flat)
    with torch.no_grad():  # the embeddings and logits at flat: constants of the linearisation
        shared = {name: p.detach().expand(k, *p.shape) for name, p in params.items()}
        embedded = learner.predict(shared, torch.cat([batch.support_x, batch.query_x], dim=1))
        if not prototype_factored_pays(batch, embedded.shape[-1]):
            return None
        support, query = embedded[:, :ways * shots], embedded[:, ways * shots:]
        prototypes = support.view(k, ways, shots, -1).mean(2)  # [k, ways, E]
        logits = learner.logits(query, prototypes)  # [k, n, ways]
        factor, scale = output_hessian_factor(learner.loss, logits)  # [k, n, ways (c), ways (j)]
        diff = query[:, :, None, :] - prototypes[:, None, :, :]  # e_q − p_c: [k, n, ways, E]
        if learner.distance == "euclidean":
            norm = diff.norm(dim=-1, keepdim=True)
            u = torch.where(norm > 0, diff / norm.clamp_min(torch.finfo(diff.dtype).tiny), torch.zeros_like(diff))
        else:
            u = 2 * diff
        to_query = -torch.einsum("kncj,knce->knje", factor, u)  # cotangents on e_q, per column j
        to_prototypes = torch.einsum("kncj,knce->kncje", factor, u)  # on p_c, per (q, c, j)
    embedding_dim = query.shape[-1]
    with torch.enable_grad():
        class_copies = learner.per_task_copies(params, k * ways)
        class_leaves = list(class_copies.values())
        support_x = batch.support_x.reshape(k * ways, shots, *batch.support_x.shape[2:])
        class_prototypes = learner.predict(class_copies, support_x).mean(1)  # [k·ways, E]
        probes = torch.eye(embedding_dim, dtype=flat.dtype, device=flat.device)
        jacobian = []  # ∂p_c/∂θ: [E, k·ways, D] in chunks of probes
        for start in range(0, embedding_dim, PROBE_CHUNK):
            chunk = probes[start:start + PROBE_CHUNK, None, :].expand(-1, k * ways, -1)
            grads = torch.autograd.grad(class_prototypes, class_leaves, grad_outputs=chunk, is_grads_batched=True,
                                        retain_graph=start + PROBE_CHUNK < embedding_dim, allow_unused=True,
                                        materialize_grads=True)
            jacobian.append(torch.cat([g.reshape(len(chunk), k * ways, -1) for g in grads], dim=2))
        jacobian = torch.cat(jacobian).view(embedding_dim, k, ways, -1)
        copies = learner.per_task_copies(params, k * n)
        leaves = list(copies.values())
        out = learner.predict(copies, batch.query_x.reshape(k * n, 1, *batch.query_x.shape[2:]))  # [k·n, 1, E]
        total = None
        for j in range(ways):  # rows (A_qᵀ J_q)_j of every task and query point: [k, n, D]
            grads = torch.autograd.grad(out, leaves, grad_outputs=to_query[:, :, j].reshape(k * n, 1, embedding_dim),
                                        retain_graph=j < ways - 1, allow_unused=True, materialize_grads=True)
            rows = torch.cat([g.reshape(k, n, -1) for g in grads], dim=2)
            rows += torch.einsum("knce,ekcd->knd", to_prototypes[:, :, :, j], jacobian)
            square = (rows * rows).sum(1)
            total = square if total is None else total + square
    return scale * total
