"""Tests of landscape.connect.repair: REPAIR and RESET of linear paths (Jordan et al., ICLR 2023),
and their suffixes ``+repair``/``+reset`` in the registry."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape.connect import compare_connections, linear_path, registry
from landscape.connect.graph import permute_groups, trace_groups
from landscape.connect.matching import match_groups
from landscape.connect.repair import renormalized, repair_path, repair_sites, reset_path, unrepaired_layers
from landscape.connect.result import Path
from landscape.connect.structure import UnsupportedModelError

T = [0.0, 0.25, 0.5, 0.8, 1.0]


def _net(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        return ls.build_model("mlp", {"widths": [12, 10], "in_features": 6, "num_classes": 3}).double()
    if kind == "cnn":
        return ls.build_model("small_cnn", {"width": 3, "batch_norm": False}).double()
    if kind == "cnn-bn":
        return ls.build_model("small_cnn", {"width": 3}).double()
    torch.manual_seed(seed)  # a residual net: the stream written by two layers and read by a third
    return _Residual().double()


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = h + torch.relu(self.b(h))
        return self.out(torch.relu(self.c(h)))


#: the outputs REPAIR corrects in each model, written down by hand (the oracle's sites)
SITES = {"mlp": ["1", "3"], "cnn": ["0", "2"], "cnn-bn": ["1", "4"], "res": ["a", "b", "c"]}


def _inputs(kind: str, n: int = 96, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (n, 1, 8, 8) if kind.startswith("cnn") else (n, 6)
    return torch.randn(shape, generator=g, dtype=torch.float64) + 0.5


def _randomise_bn(model: nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine parameters away from their initial values."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.bias.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)


def _pair(kind: str):
    model, other = _net(kind, 0), _net(kind, 1)
    if kind == "cnn-bn":
        _randomise_bn(model, 2)
        _randomise_bn(other, 3)
    return model, ls.Weights.from_module(model), ls.Weights.from_module(other)


def _channel_stats(model: nn.Module, weights, X: torch.Tensor, modules: list[str]) -> dict:
    """The oracle: mean and std (over samples and positions) of each module's output
    channels, by forward hooks on a float64 copy of ``model`` at ``weights``, in eval mode."""
    net = _net_at(model, weights)
    outs = {}
    mods = dict(net.named_modules())
    hooks = [mods[m].register_forward_hook(lambda mod, i, o, m=m: outs.__setitem__(m, o)) for m in modules]
    with torch.no_grad():
        net(X)
    for h in hooks:
        h.remove()
    stats = {}
    for m, o in outs.items():
        axis = -1 if isinstance(mods[m], nn.Linear) else 1
        x = o.movedim(axis, -1).reshape(-1, o.shape[axis])
        stats[m] = (x.mean(0), x.std(0, unbiased=False))
    return stats


def _net_at(model: nn.Module, weights) -> nn.Module:
    net = copy.deepcopy(model).double().eval()
    net.load_state_dict({k: torch.as_tensor(v).double() if v.is_floating_point() else v for k, v in weights.items()})
    return net


def _line(A, Bp, t, perms=None):
    line = linear_path(A, Bp, t)
    attrs = {} if perms is None else {"permutations": perms}
    return Path(line.points, line.t, method="aligned" if perms else "linear", **attrs)


def _planted(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {gr.name: torch.randperm(gr.size, generator=g) for gr in trace_groups(model)}


# ---------------------------------------------------------------------------- REPAIR
@pytest.mark.parametrize("kind", sorted(SITES))
def test_repair_corrects_the_sites_named_by_hand(kind):
    model = _net(kind, 0)
    assert [s.module for s in repair_sites(model)] == SITES[kind]


@pytest.mark.parametrize("kind", ["mlp", "cnn", "res"])
def test_repair_of_the_path_from_a_network_to_itself_changes_nothing(kind):
    model, A, _ = _pair(kind)
    path = repair_path(linear_path(A, A, T), A, A, model, _inputs(kind))
    for k in range(path.K):
        for name in A:
            assert torch.allclose(path.point(k)[name], A[name], rtol=0, atol=1e-12), (k, name)


def test_repair_of_a_batchnorm_net_to_itself_keeps_its_function():
    """At a BatchNorm REPAIR stores the data's statistics (as RESET): the weights change, the
    function in eval mode does not."""
    model, A, _ = _pair("cnn-bn")
    X = _inputs("cnn-bn")
    path = repair_path(linear_path(A, A, T), A, A, model, X)
    want = _net_at(model, A)(X)
    for k in range(path.K):
        assert torch.allclose(_net_at(model, path.weights(k))(X), want, rtol=0, atol=1e-10)
    mid = path.weights(2)
    assert torch.allclose(mid["1.running_mean"], _channel_input_mean(model, A, X, "1"), atol=1e-12)


def _channel_input_mean(model, weights, X, module):
    net = _net_at(model, weights)
    seen = {}
    h = dict(net.named_modules())[module].register_forward_pre_hook(lambda m, i: seen.setdefault("x", i[0]))
    with torch.no_grad():
        net(X)
    h.remove()
    return seen["x"].mean((0, 2, 3))


@pytest.mark.parametrize("kind", sorted(SITES))
def test_repaired_channels_have_the_interpolated_mean_and_std(kind):
    model, A, B = _pair(kind)
    X = _inputs(kind)
    perms = _planted(model, 5)
    Bp = permute_groups(B, trace_groups(model), perms)
    path = repair_path(_line(A, Bp, T, perms), A, B, model, X, batch_size=40)  # B unaligned: the path's permutations
    sites = SITES[kind]
    sa, sb = _channel_stats(model, A, X, sites), _channel_stats(model, Bp, X, sites)
    plain = _line(A, Bp, T)
    moved = 0.0
    for k, t in enumerate(T):
        got = _channel_stats(model, path.weights(k), X, sites)
        before = _channel_stats(model, plain.weights(k), X, sites)
        for m in sites:
            mean_t = (1 - t) * sa[m][0] + t * sb[m][0]
            std_t = (1 - t) * sa[m][1] + t * sb[m][1]
            assert torch.allclose(got[m][0], mean_t, rtol=0, atol=1e-6), (k, m)
            assert torch.allclose(got[m][1], std_t, rtol=0, atol=1e-6), (k, m)
            moved = max(moved, float((before[m][1] - std_t).abs().max()))
    assert moved > 1e-3  # the plain line was off the targets


@pytest.mark.parametrize("kind", ["cnn", "cnn-bn"])
def test_repair_returns_the_ends_exactly(kind):
    model, A, B = _pair(kind)
    perms = _planted(model, 6)
    Bp = permute_groups(B, trace_groups(model), perms)
    path = repair_path(_line(A, Bp, T, perms), A, B, model, _inputs(kind))
    assert path.method == "aligned+repair" and path.permutations is perms and path.t.tolist() == T
    for name in A:
        assert torch.equal(path.point(0)[name], A[name])
        assert torch.equal(path.point(path.K - 1)[name], Bp[name])
    corrected = SITES[kind][0] + ".weight"  # the conv's rows, or its BatchNorm's weight
    assert not torch.allclose(path.point(2)[corrected], 0.5 * (A[corrected] + Bp[corrected]))


def test_repair_keeps_the_dtype_of_the_points():
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 3, "batch_norm": False})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 3, "batch_norm": False}))
    path = repair_path(linear_path(A, B, [0.0, 0.5, 1.0]), A, B, model, torch.randn(30, 1, 8, 8), device="cpu")
    assert path.point(1)["0.weight"].dtype == torch.float32
    assert torch.isfinite(path.point(1)["0.bias"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_repair_on_cuda_is_repair_on_the_cpu():
    model, A, B = _pair("cnn-bn")
    X, line = _inputs("cnn-bn"), linear_path(A, B, T)
    cpu, cuda = repair_path(line, A, B, model, X), repair_path(line, A, B, model, X, device="cuda")
    for k in range(line.K):
        for name in A:
            assert torch.allclose(cuda.point(k)[name], cpu.point(k)[name], rtol=0, atol=1e-10), (k, name)


# ---------------------------------------------------------------------------- RESET
def test_reset_points_with_running_statistics_are_the_path_with_recomputed_ones():
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 4})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 4}))
    data = ls.load_data("digits:image", "test", max_samples=300)  # batches of 128, 128 and 44
    path = linear_path(A, B, T)
    reset = reset_path(path, model, data)
    got = ls.evaluate(model, reset, data, bn="running", progress=False)
    want = ls.evaluate(model, path, data, bn="recompute", progress=False)
    plain = ls.evaluate(model, path, data, bn="running", progress=False)
    assert np.allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(got["acc"], want["acc"])
    assert not np.allclose(plain["loss"], want["loss"], rtol=1e-3)  # the statistics did change
    # equal batches: the other weighting, and the same inputs given as a tensor
    by_batches = reset_path(path, model, data, weighting="batches")
    want_b = ls.evaluate(model, path, data, bn="recompute-batches", progress=False)
    assert np.allclose(ls.evaluate(model, by_batches, data, progress=False)["loss"], want_b["loss"], rtol=1e-5)
    from_x = reset_path(path, model, data.x)
    assert torch.equal(from_x.point(2)["4.running_var"], reset.point(2)["4.running_var"])


def test_reset_of_a_model_without_batchnorm_is_the_identity():
    model, A, B = _pair("mlp")
    path = linear_path(A, B, T)
    reset = reset_path(path, model, _inputs("mlp"))
    assert reset.method == "linear+reset"
    for k in range(path.K):
        for name in A:
            assert torch.equal(reset.point(k)[name], path.point(k)[name])


# ---------------------------------------------------------------------------- bad input
def test_bad_input_gives_one_clear_error():
    model, A, B = _pair("cnn")
    X = _inputs("cnn")
    line = linear_path(A, B, T)
    with pytest.raises(ValueError, match="needs data"):
        repair_path(line, A, B, model, None)
    with pytest.raises(ValueError, match="needs data"):
        reset_path(line, model, None)
    with pytest.raises(ValueError, match="batch_size should be a positive int, got 0"):
        repair_path(line, A, B, model, X, batch_size=0)
    with pytest.raises(ValueError, match="weighting should be one of"):
        reset_path(line, model, X, weighting="mean")
    with pytest.raises(ValueError, match=r"linear-type paths: point 1 \(t=0.25\)"):
        repair_path(line, A, ls.Weights.from_module(_net("cnn", 7)), model, X)  # not the line to this B
    arc = ls.connect.arc_path(A, B, model, T)
    with pytest.raises(ValueError, match="linear-type paths"):
        repair_path(arc, A, B, model, X)
    staged = Path(line.points, line.t, [1, 1, 2, 2, 2], ("a", "b"), method="two")
    with pytest.raises(ValueError, match=r"of one stage; the two path has stages \[1, 2\]"):
        repair_path(staged, A, B, model, X)
    with pytest.raises(TypeError, match="takes a connection Path, got tuple"):
        repair_path((0, 1), A, B, model, X)
    with pytest.raises(ValueError, match="how should be one of"):
        renormalized(registry.get("linear").connect, "rescale", "linear+rescale")


def test_a_layer_that_cannot_take_the_shift_is_left_out_and_named():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(108, 2))
    assert unrepaired_layers(model) == {
        "0": "no bias and no BatchNorm after it: the shift of its channels has nowhere to go"
    }
    with pytest.raises(UnsupportedModelError, match="no hidden Linear, Conv or BatchNorm output.*'0': no bias"):
        repair_sites(model)
    with pytest.raises(UnsupportedModelError, match="no hidden Linear, Conv or BatchNorm output"):
        repair_sites(nn.Sequential(nn.Linear(3, 2)))


def test_a_preactivation_resnet_is_repaired_at_its_batchnorms_and_warns_about_the_rest():
    """The convolutions that add into a pre-activation ResNet's stream have no bias and no
    BatchNorm of their own: REPAIR corrects every BatchNorm (the targets met) and says which
    outputs it left."""
    kw = {"width": 2, "in_channels": 1}
    torch.manual_seed(0)
    model = ls.build_model("preresnet20", kw).double()
    torch.manual_seed(1)
    A, B = ls.Weights.from_module(model), ls.Weights.from_module(ls.build_model("preresnet20", kw).double())
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    sites = repair_sites(model)
    assert all(s.norm for s in sites) and [s.module for s in sites] == norms
    left = unrepaired_layers(model)
    assert "conv1" in left and all("no bias" in why for why in left.values())
    X = torch.randn(24, 1, 8, 8, dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"REPAIR leaves the outputs of \d+ module\(s\) uncorrected: 'conv1'"):
        path = repair_path(linear_path(A, B, [0.0, 0.5, 1.0]), A, B, model, X)
    assert path.unrepaired == left
    checked = [s.module for s in sites][:3] + [s.module for s in sites][-2:]
    sa, sb, got = (_channel_stats(model, w, X, checked) for w in (A, B, path.weights(1)))
    for m in checked:
        assert torch.allclose(got[m][0], 0.5 * (sa[m][0] + sb[m][0]), atol=1e-6)
        assert torch.allclose(got[m][1], 0.5 * (sa[m][1] + sb[m][1]), atol=1e-6)


# ---------------------------------------------------------------------------- the registry
def test_suffixes_are_registered_for_linear():
    for how, word in (("repair", "REPAIR"), ("reset", "RESET")):
        entry = registry.get(f"linear+{how}")
        assert entry.needs_data and entry.label() == f"Linear + {word}"


def test_a_later_linear_type_method_gets_both_suffixes_in_one_call():
    model, A, B = _pair("cnn-bn")
    X = _inputs("cnn-bn")
    perms = _planted(model, 8)

    def aligned(A, B, model, data, *, t, **options):
        return _line(A, permute_groups(B, trace_groups(model), perms), t, perms)

    registry.register("aligned-demo", aligned, label="Aligned")
    try:
        made = registry.register_renormalized("aligned-demo")
        assert [m.name for m in made] == ["aligned-demo+repair", "aligned-demo+reset"]
        assert registry.label("aligned-demo+reset") == "Aligned + RESET"
        rep = registry.get("aligned-demo+repair")(A, B, model, X, t=T, wa_form="paper")
        want = repair_path(aligned(A, B, model, None, t=T), A, B, model, X)
        assert rep.method == "aligned-demo+repair" and rep.permutations is perms
        assert torch.equal(rep.point(2)["4.weight"], want.point(2)["4.weight"])
        reset = registry.get("aligned-demo+reset")(A, B, model, X, t=T)
        assert torch.equal(reset.point(4)["3.weight"], permute_groups(B, trace_groups(model), perms)["3.weight"])
    finally:
        for name in ("aligned-demo+repair", "aligned-demo+reset", "aligned-demo"):
            registry.unregister(name)


def test_compare_connections_runs_the_suffixes_on_the_engine():
    """``linear+reset`` evaluated with running statistics is the ``linear`` row with
    recomputed ones (the statistics from the same inputs, batches of 128); RESET rows are
    skipped on a model without BatchNorm."""
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 4})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 4}))
    splits = {"test": ls.load_data("digits:image", "test", max_samples=200)}
    methods = ["linear", "linear+repair", "linear+reset"]
    rep = compare_connections(model, A, B, splits, methods=methods, points=5)
    recomputed = compare_connections(model, A, B, splits, methods=["linear"], points=5, bn="recompute")
    assert rep.labels["linear+repair"] == "Linear + REPAIR"
    assert np.allclose(rep.loss["linear+reset"]["test"], recomputed.loss["linear"]["test"], rtol=1e-5)
    assert rep.attrs["wa_samples"] == 200
    assert np.isfinite(rep.loss["linear+repair"]["test"]).all()
    mlp, a, b = _pair("mlp")
    mlp_rep = compare_connections(
        mlp.float(),
        a.to(dtype=torch.float32),
        b.to(dtype=torch.float32),
        {"test": (torch.randn(40, 6), torch.randint(0, 3, (40,)))},
        methods=["linear+reset", "linear+repair"],
        points=3,
    )
    assert "no BatchNorm" in mlp_rep.skipped["linear+reset"]
    assert "linear+repair" not in mlp_rep.skipped


# ---------------------------------------------------------------------------- OT: stage 1 renormalised
def test_ot_repair_is_ots_stage_one_repaired_then_its_swaps_unchanged():
    """``ot+repair``: the stage-1 line from A to B' (B permuted by OT's matching) with its
    channels at the interpolated statistics (the hook oracle), joined exactly to OT's
    stage 2, whose swaps are left as OT makes them."""
    model, A, B = _pair("cnn-bn")
    X = _inputs("cnn-bn")
    ot = ls.connect.ot_path(A, B, model, T)
    path = registry.get("ot+repair")(A, B, model, X, t=T)
    assert path.method == "ot+repair" and registry.label("ot+repair") == "OT + REPAIR"
    assert path.stages == [1, 2] and np.array_equal(path.t, ot.t) and np.array_equal(path.stage, ot.stage)
    assert path.swaps == ot.swaps and len(path.swaps) > 0 and path.sites == SITES["cnn-bn"]
    for k, want in zip(ot.permutations, ot.permutations.values(), strict=True):
        assert torch.equal(path.permutations[k], want)
    Bp = permute_groups(B, trace_groups(model), ot.permutations)
    sites = SITES["cnn-bn"]
    sa, sb = _channel_stats(model, A, X, sites), _channel_stats(model, Bp, X, sites)
    for k, t in enumerate(T):
        got = _channel_stats(model, path.stage1.weights(k), X, sites)
        for m in sites:
            assert torch.allclose(got[m][0], (1 - t) * sa[m][0] + t * sb[m][0], rtol=0, atol=1e-6), (k, m)
            assert torch.allclose(got[m][1], (1 - t) * sa[m][1] + t * sb[m][1], rtol=0, atol=1e-6), (k, m)
    assert not torch.allclose(path.stage1.point(2)["1.weight"], ot.stage1.point(2)["1.weight"])
    last = len(T) - 1
    for name in A:  # the ends of stage 1 are A and B' exactly, and stage 2 is OT's, point for point
        assert torch.equal(path.point(0)[name], A[name])
        assert torch.equal(path.point(last)[name], Bp[name])
        for k in range(ot.stage2.K):
            assert torch.equal(path.stage2.point(k)[name], ot.stage2.point(k)[name]), (k, name)
        assert torch.equal(path.point(path.K - 1)[name], B[name])


def test_ot_reset_stage_one_with_running_statistics_is_ots_stage_one_with_recomputed_ones():
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 4})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 4}))
    data = ls.load_data("digits:image", "test", max_samples=300)
    ot = ls.connect.ot_path(A, B, model, T)
    path = registry.get("ot+reset")(A, B, model, data.x, t=T)
    assert path.method == "ot+reset" and path.swaps == ot.swaps and np.array_equal(path.t, ot.t)
    got = ls.evaluate(model, path.stage1, data, bn="running", progress=False)
    want = ls.evaluate(model, ot.stage1, data, bn="recompute", progress=False)
    plain = ls.evaluate(model, ot.stage1, data, bn="running", progress=False)
    assert np.allclose(got["loss"], want["loss"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain["loss"], want["loss"], rtol=1e-3)
    for name in A:
        assert torch.equal(path.stage2.point(0)[name], ot.stage2.point(0)[name])


def test_compare_connections_evaluates_ot_repair_stage_by_stage():
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 4})
    A = ls.Weights.from_module(model)
    B = ls.Weights.from_module(ls.build_model("small_cnn", {"width": 4}))
    splits = {"test": ls.load_data("digits:image", "test", max_samples=200)}
    rep = compare_connections(model, A, B, splits, methods=["ot", "ot+repair", "ot+reset"], points=5)
    assert rep.labels["ot+reset"] == "OT + RESET" and rep.attrs["ot_swaps"] > 0
    assert np.array_equal(rep.stage["ot+repair"], rep.stage["ot"]) and rep.stages("ot+repair") == [1, 2]
    two = rep.stage["ot"] == 2
    assert np.array_equal(rep.loss["ot+repair"]["test"][two], rep.loss["ot"]["test"][two])  # the same swaps
    ends = [0, int(np.flatnonzero(rep.stage["ot"] == 1)[-1])]  # A and B'
    assert np.allclose(rep.loss["ot+repair"]["test"][ends], rep.loss["ot"]["test"][ends], rtol=1e-6)
    assert not np.allclose(rep.loss["ot+repair"]["test"][~two], rep.loss["ot"]["test"][~two], rtol=1e-3)


# ---------------------------------------------------------------------------- trained networks
@pytest.mark.slow
@pytest.mark.parametrize("batch_norm", [True, False])
def test_repair_lowers_the_barrier_between_trained_convnets(batch_norm):
    """Two small convnets trained on digits from different seeds, B weight-aligned to A
    (4 epochs: losses about 0.05 and 0.2 at the ends; the aligned line peaks near 0.2 and 0.33,
    REPAIR brings the peak to about 0.10 and 0.26)."""
    from landscape.demo import train_classifier

    train = ls.load_data("digits:image", "train")
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = ls.build_model("small_cnn", {"width": 8, "batch_norm": batch_norm})
        lr = 0.1 if batch_norm else 0.05
        nets.append(train_classifier(net, train, epochs=4, lr=lr, batch_size=64, seed=seed))
    model = nets[0]
    A, B = (ls.Weights.from_module(n) for n in nets)
    groups = trace_groups(model)
    perms = match_groups(A, B, groups)
    t = np.linspace(0, 1, 9)
    line = _line(A, permute_groups(B, groups, perms), t, perms)
    repaired = repair_path(line, A, B, model, train.x[:1000])
    plain = ls.evaluate(model, line, train, ("loss",), progress=False)["loss"]
    fixed = ls.evaluate(model, repaired, train, ("loss",), progress=False)["loss"]
    assert fixed[0] == pytest.approx(plain[0]) and fixed[-1] == pytest.approx(plain[-1])
    assert fixed.max() < plain.max() - 0.05, (plain, fixed)
