"""The networks of the models registry against learn2learn / torchvision and hand-written forwards."""
from __future__ import annotations

import learn2learn as l2l
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.func import functional_call, vmap

from taskbal.models import MLP, build_model


def copy_parameters(source: torch.nn.Module, target: torch.nn.Module, rename) -> None:
    """Copy every parameter of ``source`` into ``target`` (names mapped by ``rename``); all must match."""
    targets = dict(target.named_parameters())
    copied = set()
    with torch.no_grad():
        for name, value in source.named_parameters():
            targets[rename(name)].copy_(value)
            copied.add(rename(name))
    assert copied == set(targets), set(targets) ^ copied


def test_mlp_is_the_default_and_keeps_its_layout():
    model = build_model({"hidden": [8, 8]}, (1, 1))
    assert isinstance(model, MLP)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias",
                                                               "4.weight", "4.bias"]


def test_mlp_context_is_concatenated_to_the_input():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "hidden": [6], "context": 3}, (2, 1)).double()
    x, context = torch.randn(5, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    first = model[0]
    hidden = torch.relu(x @ first.weight[:, :2].T + context @ first.weight[:, 2:].T + first.bias)
    by_hand = hidden @ model[2].weight.T + model[2].bias
    torch.testing.assert_close(model(x, context), by_hand)
    # Without a context the network sees the zero context (CAVIA's φ_0).
    torch.testing.assert_close(model(x), model(x, torch.zeros(3, dtype=torch.float64)))


def test_mlp_batched_forward_with_context_equals_vmap():
    torch.manual_seed(1)
    model = build_model({"hidden": [5, 4], "context": 2}, (3, 2)).double()
    k = 3
    params = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()) + 0.1 * torch.randn(k, *p.shape, dtype=torch.float64)
              for n, p in model.named_parameters()}
    x, context = torch.randn(k, 4, 3, dtype=torch.float64), torch.randn(k, 2, dtype=torch.float64)
    generic = vmap(lambda p, xi, ci: functional_call(model, p, (xi, ci)),
                   in_dims=(0, 0, None if context is None else 0))(params, x, context)
    torch.testing.assert_close(model.batched_forward(params, x, context), generic)


def test_conv4_equals_learn2learn_cnn4():
    torch.manual_seed(2)
    ours = build_model({"name": "conv4", "filters": 4}, ((3, 16, 16), 5)).double()
    theirs = l2l.vision.models.CNN4(output_size=5, hidden_size=4, channels=3, embedding_size=4).double()
    renames = {"features": "embedding.blocks", "normalize": "norm", "classifier": "head"}

    def rename(name):
        for old, new in renames.items():
            name = name.replace(old, new)
        return name

    copy_parameters(theirs, ours, rename)
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs.train()(x))  # learn2learn in training mode: batch statistics


def test_conv4_film_equals_a_hand_written_forward():
    torch.manual_seed(3)
    model = build_model({"name": "conv4", "filters": 3, "context": 2, "film_blocks": [2, 3]},
                        ((1, 16, 16), 4)).double()
    x, context = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    h = x
    for i, block in enumerate(model.embedding.blocks):
        h = F.conv2d(h, block.conv.weight, block.conv.bias, padding=1)
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5) * block.norm.weight.view(-1, 1, 1) + block.norm.bias.view(-1, 1, 1)
        if i + 1 in (2, 3):  # CAVIA's order: BatchNorm, max-pool, FiLM, ReLU
            film = block.film.weight @ context + block.film.bias
            h = F.max_pool2d(h, 2) * film[:3].view(-1, 1, 1) + film[3:].view(-1, 1, 1)
            h = torch.relu(h)
        else:
            h = F.max_pool2d(torch.relu(h), 2)
    by_hand = h.flatten(1) @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(x, context), by_hand)
    assert [b.film is not None for b in model.embedding.blocks] == [False, True, True, False]


@pytest.mark.parametrize("options", [{}, {"context": 2, "film_blocks": [1, 3]}, {"bn_affine": False}])
def test_conv4_batched_over_tasks_uses_each_tasks_batch_statistics(options):
    torch.manual_seed(4)
    model = build_model({"name": "conv4", "filters": 3, **options}, ((3, 16, 16), 5)).double()
    k = 3
    params = {n: p.detach().unsqueeze(0).repeat(k, *[1] * p.dim())
              + 0.05 * torch.randn(k, *p.shape, dtype=torch.float64)
              for n, p in model.named_parameters()}
    x = torch.randn(k, 5, 3, 16, 16, dtype=torch.float64) * torch.arange(1, k + 1).view(k, 1, 1, 1, 1)
    context = torch.randn(k, 2, dtype=torch.float64) if "context" in options else None
    one_by_one = torch.stack([functional_call(model, {n: v[i] for n, v in params.items()},
                                              (x[i], None if context is None else context[i])) for i in range(k)])
    generic = vmap(lambda p, xi, ci: functional_call(model, p, (xi, ci)),
                   in_dims=(0, 0, None if context is None else 0))(params, x, context)
    torch.testing.assert_close(generic, one_by_one)
    # The hand-batched forward (grouped convolutions over stacked task channels) is the same function.
    torch.testing.assert_close(model.batched_forward(params, x, context), one_by_one)
    embedding = {n[len("embedding."):]: v for n, v in params.items() if n.startswith("embedding.")}
    torch.testing.assert_close(model.embedding.batched_forward(embedding, x, context),
                               torch.stack([functional_call(model.embedding, {n: v[i] for n, v in embedding.items()},
                                                            (x[i], None if context is None else context[i]))
                                            for i in range(k)]))


def test_resnet12_equals_learn2learn_backbone():
    torch.manual_seed(5)
    ours = build_model({"name": "resnet12", "pool": "flatten"}, ((3, 16, 16), 5)).double()
    theirs = l2l.vision.models.ResNet12Backbone(avg_pool=False, wider=True, dropblock_dropout=0.0, channels=3).double()
    copy_parameters(theirs, ours.embedding, lambda name: name)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(ours.embedding(x), theirs.train()(x))
    assert ours.head.in_features == 640


def test_resnet10_equals_torchvision_basic_block_resnet():
    torch.manual_seed(6)
    ours = build_model({"name": "resnet10"}, ((3, 32, 32), 5)).double()
    theirs = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                              num_classes=5).double()
    copy_parameters(theirs, ours, lambda name: "head" + name[2:] if name.startswith("fc.") else "embedding." + name)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs.train()(x))


def test_dropout_draws_a_mask_per_task_under_vmap():
    torch.manual_seed(7)
    model = build_model({"name": "resnet10", "channels": [2, 2, 2, 2], "dropout": 0.5}, ((1, 16, 16), 3))
    params = {n: p.detach().expand(2, *p.shape) for n, p in model.named_parameters()}
    x = torch.randn(1, 4, 1, 16, 16).expand(2, 4, 1, 16, 16)
    out = vmap(lambda p, xi: functional_call(model, p, (xi,)), randomness="different")(params, x)
    assert not torch.allclose(out[0], out[1])
    model.eval()
    out = vmap(lambda p, xi: functional_call(model, p, (xi,)), randomness="different")(params, x)
    torch.testing.assert_close(out[0], out[1])


def test_flat_image_inputs_are_reshaped():
    torch.manual_seed(8)
    model = build_model({"name": "conv4", "filters": 2, "in_channels": 1, "image_size": 16}, (256, 3)).double()
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(model(x.flatten(1)), model(x))


@pytest.mark.parametrize("config, io_dims, field", [
    ({"name": "vgg"}, ((3, 84, 84), 5), "model.name"),
    ({"name": "conv4", "width": 3}, ((3, 84, 84), 5), "model.width"),
    ({"name": "conv4", "filters": 0}, ((3, 84, 84), 5), "model.filters"),
    ({"name": "conv4", "image_size": 28}, ((3, 84, 84), 5), "model.image_size"),
    ({"name": "conv4", "in_channels": 1}, ((3, 84, 84), 5), "model.in_channels"),
    ({"name": "conv4"}, (100, 5), "model.image_size"),
    ({"name": "conv4", "context": 4, "film_blocks": [5]}, ((3, 84, 84), 5), "model.film_blocks"),
    ({"name": "conv4", "init": "orthogonal"}, ((3, 84, 84), 5), "model.init"),
    ({"name": "conv4", "bn_affine": "yes"}, ((3, 84, 84), 5), "model.bn_affine"),
    ({"name": "mlp"}, (1, 1), "model.hidden"),
    ({"hidden": [0]}, (1, 1), "model.hidden"),
    ({"hidden": [8], "context": -1}, (1, 1), "model.context"),
    ({"name": "resnet12", "pool": "max"}, ((3, 84, 84), 5), "model.pool"),
    ({"name": "resnet12", "context": 4}, ((3, 84, 84), 5), "model.context"),
    ({"name": "resnet10", "dropout": 1.5}, ((3, 84, 84), 5), "model.dropout"),
    ({"name": "resnet10", "channels": [64, 128, 256]}, ((3, 84, 84), 5), "model.channels"),
])
def test_bad_model_option_names_the_field(config, io_dims, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build_model(config, io_dims)
