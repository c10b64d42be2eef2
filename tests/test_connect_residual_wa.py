"""Weight adjustment of residual networks (landscape.connect.adjust_graph): the cuts of the
graph, transitional networks that hand over there, and the WA path through them.

The oracle is the model's own forward pass with BatchNorm on batch statistics (what
``bn="recompute"`` evaluation does on the adjustment batch), not the fx evaluator the fits
use."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape.connect import UnsupportedModelError
from landscape.connect.adjust_graph import residual_transitional_network, residual_wa_path, wa_cuts


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: two OpenMP threads only contend (100x slower on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch_stat_logits(model, w, x):
    """Logits with every BatchNorm normalising by the statistics of ``x``."""
    m = copy.deepcopy(model).double().eval()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.train()
            mod.momentum = 0.0
    with torch.no_grad():
        return functional_call(m, {k: v.clone() for k, v in w.tensors.items()}, (x,))


def _perturbed(w, entries, seed):
    g = torch.Generator().manual_seed(seed)
    t = dict(w.tensors)
    for e in entries:
        if t[e].is_floating_point() and "running" not in e:
            t[e] = t[e] + 0.3 * torch.randn(t[e].shape, generator=g, dtype=t[e].dtype)
    return ls.Weights(t, w.layout)


class _UserBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        out = self.conv2(torch.relu(self.conv1(x)))
        out += x  # in-place residual sum, no BatchNorm, biases on the writers
        return torch.relu(out)


class _UserNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 5, 3, padding=1)
        self.block = _UserBlock(5)
        self.fc1, self.bn = nn.Linear(5, 7), nn.BatchNorm1d(7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        h = self.block(self.stem(x)).mean((2, 3))
        return self.fc2(torch.relu(self.bn(self.fc1(h))))


CASES = {
    "resnet20": lambda: ls.build_model("resnet20", {"width": 4, "in_channels": 1}),
    "preresnet20": lambda: ls.build_model("preresnet20", {"width": 4, "in_channels": 1}),
    "user": _UserNet,
}


def test_cuts_of_the_zoo_resnets_are_the_stem_the_block_sums_and_the_logits():
    cuts = wa_cuts(CASES["resnet20"]())
    assert len(cuts) == 11
    assert [c.node for c in cuts][:2] == ["bn1", "add"] and cuts[-1].writers == ["fc"]
    assert cuts[0].writers == ["conv1"] and cuts[0].bn == {"conv1": "bn1"}
    # a downsampling block: its last conv and the shortcut conv write the sum together
    assert cuts[4].writers == ["layer2.0.conv2", "layer2.0.downsample.0"]
    assert cuts[4].bn == {"layer2.0.conv2": "layer2.0.bn2", "layer2.0.downsample.0": "layer2.0.downsample.1"}
    # conv1 of a block is inside the segment, not a writer of the cut
    assert "layer1.0.conv1" in cuts[1].modules and "layer1.0.conv1" not in cuts[1].writers
    pre = wa_cuts(CASES["preresnet20"]())
    assert len(pre) == 11 and pre[0].node == "conv1" and pre[0].bn == {"conv1": None}
    # the final BatchNorm of a pre-activation network sits in the logits' segment
    assert "bn" in pre[-1].modules


@pytest.mark.parametrize("spec", sorted(CASES))
def test_a_transitional_network_is_exact_when_a_only_differs_in_the_cuts_writers(spec):
    # A equals B except the writers of cut k: A's value at cut k is linear in B's features
    # there, so the transitional network computes A's logits exactly on the batch.
    torch.manual_seed(0)
    model = CASES[spec]().double()
    B = ls.Weights.from_module(model)
    x = torch.randn(64, 1, 8, 8, dtype=torch.float64)
    cuts = wa_cuts(model)
    ks = [1, len(cuts) - 1] if spec == "user" else [1, 4, len(cuts) - 1]
    for k in ks:  # 0-based cut index; residual_transitional_network counts from 1
        prefixes = tuple(f"{m}." for m in cuts[k].writers + [b for b in cuts[k].bn.values() if b])
        A = _perturbed(B, [e for e in B.tensors if e.startswith(prefixes)], seed=k)
        T = residual_transitional_network(A, B, model, k + 1, x)
        want, got = _batch_stat_logits(model, A, x), _batch_stat_logits(model, T, x)
        assert (want - _batch_stat_logits(model, B, x)).abs().max() > 1e-2  # A really differs from B
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        # entries before the cut's writers are B's, after it A's
        later = cuts[k + 1].modules if k + 1 < len(cuts) else []
        for e in B.tensors:
            if e.startswith(tuple(f"{m}." for m in later)):
                assert torch.equal(T[e], A[e])
            if e.startswith(tuple(f"{m}." for m in cuts[0].modules)) and k > 0:
                assert torch.equal(T[e], B[e])
    assert residual_transitional_network(B, A, model, 1, x) is B
    assert residual_transitional_network(B, A, model, len(cuts) + 1, x) is A


@pytest.mark.parametrize("method", ["linear", "ot"])
def test_the_wa_path_runs_through_every_transitional_network(method):
    torch.manual_seed(0)
    model = CASES["resnet20"]().double()
    A = ls.Weights.from_module(model)
    torch.manual_seed(1)
    B = ls.Weights.from_module(CASES["resnet20"]().double())
    x = torch.randn(32, 1, 8, 8, dtype=torch.float64)
    t_step = [0.0, 0.5, 1.0]
    t, pts, bounds = ls.connect.multilayer_wa_path(A, B, model, x, t_step, method=method, wa_form="bias")
    m = len(wa_cuts(model))
    steps = m + 1 if method == "ot" else m
    np.testing.assert_allclose(bounds, np.arange(steps + 1) / steps)
    assert t[0] == 0.0 and t[-1] == 1.0 and np.all(np.diff(t) > 0)
    # without snapping, each step's first point is the least-squares fit at the previous
    # transitional network: it computes that network's logits on the batch
    end = B
    if method == "ot":
        end = ls.connect.permute(B, model, ls.connect.match_neurons(A, B, model, neuron="bl"))
    for k in (2, 5, m):
        theta = residual_transitional_network(A, end, model, k, x)
        i = int(np.flatnonzero(np.isclose(t, bounds[k - 1]))[0])
        torch.testing.assert_close(
            _batch_stat_logits(model, pts.weights(i), x), _batch_stat_logits(model, theta, x), rtol=0, atol=1e-8
        )
    last = pts.weights(pts.K - 1)
    for n in B.tensors:
        assert torch.equal(last[n], B[n])


def test_residual_wa_paths_are_finite_and_snap_to_both_ends():
    torch.manual_seed(0)
    model = CASES["preresnet20"]().double()
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(CASES["preresnet20"]().double())
    x = torch.randn(32, 1, 8, 8, dtype=torch.float64)
    t, pts, _ = residual_wa_path(A, B, model, x, [0.0, 1.0], method="arc", snap_ends=True)
    for n in A.tensors:
        assert torch.equal(pts.point(0)[n], A[n]) and torch.equal(pts.point(pts.K - 1)[n], B[n])
    assert all(torch.isfinite(pts.weights(i).flatten()).all() for i in range(pts.K))


class _Prelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.act, self.fc = (
            nn.Conv2d(1, 3, 3, padding=1),
            nn.Conv2d(3, 3, 3, padding=1),
            nn.PReLU(),
            nn.Linear(3, 2),
        )

    def forward(self, x):
        h = self.a(x)
        return self.fc(self.act(self.b(h) + h).mean((2, 3)))


def test_residual_networks_wa_cannot_follow_get_one_clear_error():
    model = _Prelu()
    w = ls.Weights.from_module(model)
    with pytest.raises(UnsupportedModelError, match="node 'act'.*PReLU"):
        ls.connect.multilayer_wa_path(w, w, model, torch.zeros(4, 1, 8, 8), [0.0, 1.0], wa_form="bias")
