"""Channel groups of convolutional and residual networks (landscape.connect.graph) and the
connections built on them: permutations, OT matching, stage 1 and 2, the Arc's mean."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape.connect import (
    arc_path,
    identity_permutations,
    match_neurons,
    neuron_mean,
    ot_path,
    permute,
)
from landscape.connect.graph import UnsupportedModelError, group_mean, permute_groups, trace_groups

MODELS = {
    "vgg16_bn": ({"width": 0.0625}, (3, 32, 32)),
    "vgg16": ({"width": 0.0625}, (3, 32, 32)),
    "resnet20": ({"width": 4}, (3, 8, 8)),
    "preresnet20": ({"width": 4}, (3, 8, 8)),
    "small_cnn": ({"width": 4}, (1, 8, 8)),
    "convfc": ({"in_channels": 1, "input_size": 8, "channels": [4, 8, 8], "hidden": 16}, (1, 8, 8)),
}


def _model(spec):
    kwargs, shape = MODELS[spec]
    torch.manual_seed(0)
    model = ls.build_model(spec, kwargs).double().eval()
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():  # BatchNorm channels that differ from each other
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(n, generator=g, dtype=torch.float64))
            mod.running_var.copy_(0.5 + torch.rand(n, generator=g, dtype=torch.float64))
            mod.weight.data.copy_(1 + 0.2 * torch.randn(n, generator=g, dtype=torch.float64))
            mod.bias.data.copy_(0.1 * torch.randn(n, generator=g, dtype=torch.float64))
    x = torch.randn(6, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    return model, ls.Weights.from_module(model), x, y


def _planted(model, w, seed=2):
    g = torch.Generator().manual_seed(seed)
    perms = {k: torch.randperm(len(v), generator=g) for k, v in identity_permutations(model).items()}
    return perms, permute(w, model, perms)


def _out(model, w, x):
    return functional_call(model, dict(w.tensors), (x,))


@pytest.mark.parametrize("spec", sorted(MODELS))
def test_a_permuted_copy_computes_the_same_function_and_is_matched_exactly(spec):
    model, A, x, _ = _model(spec)
    perms, B = _planted(model, A)
    assert any(not torch.equal(A[n], B[n]) for n in A.tensors)
    torch.testing.assert_close(_out(model, B, x), _out(model, A, x), rtol=0, atol=1e-10)
    found = match_neurons(A, B, model)
    for k, p in perms.items():
        # slot i of B holds A's channel p[i], so A's channel i sits in slot argsort(p)[i]
        assert torch.equal(found[k], torch.argsort(p)), k
    back = permute(B, model, found)
    for n in A.tensors:
        assert torch.equal(back[n], A[n]), n


@pytest.mark.parametrize("spec", ["vgg16_bn", "resnet20"])
def test_stage_one_of_a_permuted_copy_has_constant_loss_and_stage_two_ends_at_b(spec):
    model, A, x, y = _model(spec)
    _, B = _planted(model, A, seed=3)
    path = ot_path(A, B, model, np.linspace(0.0, 1.0, 5))
    r1 = ls.evaluate(model, path.stage1, (x, y), precision="fp64", progress=False)
    np.testing.assert_allclose(r1["loss"], r1["loss"][0], rtol=0, atol=1e-6)
    # stage 2: each swap's end is a reordering of B (same loss); the last point is B itself
    assert path.swaps and path.stage2.K == 2 * len(path.swaps) + 1
    ends = [0, 2, 4, path.stage2.K - 1]
    r2 = ls.evaluate(model, path.stage2.subset(ends), (x, y), precision="fp64", progress=False)
    np.testing.assert_allclose(r2["loss"], r1["loss"][0], rtol=0, atol=1e-9)
    last = path.stage2.point(path.stage2.K - 1)
    for n in B.tensors:
        assert torch.equal(last[n], B[n]), n


def test_groups_of_an_mlp_are_its_hidden_layers_and_agree_with_the_mlp_functions():
    model = ls.build_model("mlp", {"widths": [12, 8]})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("mlp", {"widths": [12, 8]}))
    groups = trace_groups(model)
    assert [(g.name, g.size) for g in groups] == [("1", 12), ("3", 8)]
    assert [(p.name, p.axis, p.role) for p in groups[0].parts] == [
        ("1.weight", 0, "out"),
        ("1.bias", 0, "out"),
        ("3.weight", 1, "in"),
    ]
    perms = {"1": torch.randperm(12), "3": torch.randperm(8)}
    via_groups, via_chain = permute_groups(A, groups, perms), permute(A, model, perms)
    mu_groups, mu_chain = group_mean(A, B, groups), neuron_mean(A, B, model)
    for n in A.tensors:
        assert torch.equal(via_groups[n], via_chain[n])
        torch.testing.assert_close(mu_groups[n], mu_chain[n], rtol=0, atol=1e-7)


def test_flattened_channels_permute_in_blocks():
    model, A, x, _ = _model("small_cnn")  # conv 4 -> conv 8 -> pool -> flatten -> Linear(8 * 16, 10)
    groups = {g.name: g for g in trace_groups(model)}
    last = groups["3"]
    fc = [p for p in last.parts if p.role == "in"]
    assert [(p.name, p.axis, p.block) for p in fc] == [("8.weight", 1, 16)]
    p = torch.randperm(8)
    B = permute_groups(A, list(groups.values()), {"3": p})
    expect = A["8.weight"].reshape(10, 8, 16)[:, p].reshape(10, 128)
    assert torch.equal(B["8.weight"], expect)
    torch.testing.assert_close(_out(model, B, x), _out(model, A, x), rtol=0, atol=1e-10)


def test_group_mean_averages_each_filter_bank_and_the_arc_ends_at_both_networks():
    model, A, x, _ = _model("vgg16_bn")
    B = ls.Weights.from_module(ls.build_model("vgg16_bn", MODELS["vgg16_bn"][0]).double())
    mu = neuron_mean(A, B, model)
    w = "features.0.weight"
    expect = torch.cat([A[w], B[w]]).mean(0, keepdim=True).expand_as(A[w])
    torch.testing.assert_close(mu[w], expect, rtol=0, atol=1e-12)
    rm = "features.1.running_mean"
    assert torch.allclose(mu[rm], torch.cat([A[rm], B[rm]]).mean().expand_as(A[rm]))
    # the classifier's last layer is outside every group: (A + B) / 2
    last = "classifier.6.bias"
    torch.testing.assert_close(mu[last], (A[last] + B[last]) / 2, rtol=0, atol=1e-12)
    arc = arc_path(A, B, model, [0.0, 0.5, 1.0])
    for n in A.tensors:
        assert torch.equal(arc.point(0)[n], A[n]) and torch.equal(arc.point(2)[n], B[n])


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not traceable
            return self.fc(x)
        return -self.fc(x)


@pytest.mark.parametrize(
    "model,fragment",
    [
        (_Concat(), "node 'cat'"),
        (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2)), "grouped convolution"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(6), nn.Flatten(), nn.Linear(144, 2)), "normalises over"),
        (_Branchy(), "cannot trace _Branchy"),
    ],
)
def test_unsupported_models_get_one_clear_error(model, fragment):
    with pytest.raises(UnsupportedModelError, match="cannot") as info:
        trace_groups(model)
    assert fragment in str(info.value)
    with pytest.raises(UnsupportedModelError):
        identity_permutations(model)


def test_user_models_with_residual_blocks_are_traced():
    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)) + x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 6, 3, padding=1)
            self.blocks = nn.Sequential(Block(6), Block(6))
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    model = Net().double().eval()
    groups = trace_groups(model)
    # the stem and both blocks write one residual stream: a single group of 6 channels
    assert [(g.name, g.size) for g in groups] == [("stem", 6)]
    names = {p.name for p in groups[0].parts}
    assert {"stem.weight", "blocks.0.conv.weight", "blocks.1.bn.running_var", "head.weight"} <= names
    A = ls.Weights.from_module(model)
    perms, B = _planted(model, A)
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(_out(model, B, x), _out(model, A, x), rtol=0, atol=1e-10)
    assert torch.equal(match_neurons(A, B, model)["stem"], torch.argsort(perms["stem"]))
