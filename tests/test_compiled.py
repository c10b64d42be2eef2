"""The compiled path: BatchNorm folding against the unfolded model in float64, one graph for
all points and runs (counted with a stand-in backend), agreement with the loop."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape import compiled as C
from landscape.weights import model_skeleton


def _net():
    # bias-less conv -> BN, conv with bias -> BN, a BN after a ReLU (stays), linear -> BN1d,
    # a BN without affine parameters
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8, affine=False),
        nn.ReLU(),
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )


def _randomised(seed):
    torch.manual_seed(seed)
    net = _net()
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.3, 3.0)
                if mod.affine:
                    mod.weight.normal_()
                    mod.bias.normal_()
    return net.eval()


def _line(k=8):
    nets = [_randomised(0), _randomised(1)]
    ws = [ls.Weights.from_module(n) for n in nets]
    return nets[0], ls.PointSet.from_weights(ws, [[1 - t, t] for t in np.linspace(0, 1, k)])


def _data(n=50):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def test_pairs_are_the_layers_directly_before_a_batchnorm():
    assert C.foldable_pairs(_net()) == [("0", "1"), ("3", "4"), ("9", "10")]

    class Residual(nn.Module):  # the conv output also feeds the sum: the BN cannot absorb it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h

    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    assert C.foldable_pairs(Residual()) == []
    assert C.foldable_pairs(Branchy()) == []
    no_stats = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    assert C.foldable_pairs(no_stats) == []


def test_folded_model_equals_the_unfolded_one_in_float64(counter):
    net = _randomised(3).double()
    work, fixed = model_skeleton(net, "cpu", torch.float64)
    forward = C.CompiledForward(work, None, "test", counter)
    # a stack of two points, folded at once, each equal to the model at that point
    points = [_randomised(s).double().state_dict() for s in (3, 4)]
    stacked = {n: torch.stack([p[n] for p in points]) for n in points[0]}
    folded = forward.fold(stacked)
    assert not any(n.startswith(("1.", "4.", "10.")) for n in folded)
    assert "0.bias" in folded  # the bias-less convolution gains one
    x = torch.randn(7, 3, 8, 8, dtype=torch.float64)
    for i, p in enumerate(points):
        want = functional_call(work, p, (x,))
        got = functional_call(forward.module, {n: t[i] for n, t in folded.items()}, (x,))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_one_graph_for_all_points_and_for_a_second_run(counter):
    model, line = _line()
    x, y = _data(50)  # batches of 16: the last one (2 samples) is padded, not recompiled
    first = ls.evaluate(model, line, (x, y), path="compiled", batch_size=16, progress=False)
    assert first.path == "compiled"
    assert counter.graphs == 1
    assert first.info["compile_seconds"] > 0
    again = ls.evaluate(model, line, (x, y), path="compiled", batch_size=16, progress=False)
    assert counter.graphs == 1
    assert again.info["compile_seconds"] == 0.0
    np.testing.assert_array_equal(again["loss"], first["loss"])


def test_cpu_batches_of_the_compiled_path(counter):
    # the compiled graph fuses the elementwise work, so on CPUs it takes batches of 64 (the
    # loop's activation rule gives smaller ones); 150 samples: 64, 64 and 22 padded to 64
    model, line = _line(3)
    x, y = _data(150)
    loop = ls.evaluate(model, line, (x, y), path="loop", progress=False)
    comp = ls.evaluate(model, line, (x, y), path="compiled", progress=False)
    assert comp.path == "compiled" and comp.batch_size == 64
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)
    few = ls.evaluate(model, line, (x[:40], y[:40]), path="compiled", progress=False)
    assert few.batch_size == 40
    assert counter.graphs == 2  # one graph per batch shape


@pytest.mark.parametrize("bn", ["running", "recompute", "recompute-exact"])
def test_fp32_matches_the_loop_and_a_point_ignores_its_companions(counter, bn):
    model, line = _line()
    x, y = _data(40)
    loop = ls.evaluate(model, line, (x, y), bn=bn, path="loop", batch_size=16, progress=False)
    comp = ls.evaluate(model, line, (x, y), bn=bn, path="compiled", batch_size=16, progress=False)
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)
    np.testing.assert_array_equal(comp["acc"], loop["acc"])
    alone = ls.evaluate(model, line.subset([3]), (x, y), bn=bn, path="compiled", batch_size=16, progress=False)
    assert alone["loss"][0] == comp["loss"][3]
    assert counter.graphs == 1


def test_fp64_never_compiles(counter):
    model, line = _line(3)
    x, y = _data(20)
    loop = ls.evaluate(model, line, (x, y), precision="fp64", path="loop", progress=False)
    with pytest.warns(UserWarning, match="does not run at precision fp64"):
        asked = ls.evaluate(model, line, (x, y), precision="fp64", path="compiled", progress=False)
    assert asked.path == "loop" and counter.graphs == 0
    np.testing.assert_array_equal(asked["loss"], loop["loss"])


def test_a_failing_compilation_warns_once_and_uses_the_loop(monkeypatch, counter):
    counter.fail = "no C compiler here"
    model, line = _line(4)
    x, y = _data(20)
    loop = ls.evaluate(model, line, (x, y), path="loop", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ls.evaluate(model, line, (x, y), path="compiled", progress=False)
    messages = [str(w.message) for w in caught if "compiled path" in str(w.message)]
    assert len(messages) == 1 and "no C compiler here" in messages[0], messages
    assert res.path == "loop"
    np.testing.assert_array_equal(res["loss"], loop["loss"])


def test_auto_compiles_only_when_the_saving_outweighs_the_warm_up(monkeypatch, counter):
    model, line = _line(8)
    x, y = _data(20)
    res = ls.evaluate(model, line, (x, y), progress=False)
    assert res.path == "loop" and counter.graphs == 0  # a small model never pays 40 s
    # a machine 10^6 times slower makes the same evaluation worth compiling
    monkeypatch.setattr(C, "EAGER_MACS_PER_SECOND", {"cpu": 1e4, "cuda": 1e4})
    res = ls.evaluate(model, line, (x, y), progress=False)
    assert res.path == "compiled" and counter.graphs == 1
    # precision fp64 and bf16 are never chosen
    assert ls.evaluate(model, line, (x, y), precision="fp64", progress=False).path == "loop"


def test_a_recorded_warm_up_replaces_the_default(counter):
    cpu = torch.device("cpu")
    C.record_compile_seconds(f"sig:{C.BACKEND}", 1e6)
    assert C.recorded_compile_seconds(f"sig:{C.BACKEND}") == 1e6
    plane = (41_000_000, 10_000, 2601)  # ResNet-20 MACs, 10k images, a 51 x 51 grid
    assert C.compiled_pays(*plane, cpu, "other") is True
    assert C.compiled_pays(*plane, cpu, "sig") is False


def _macs(model, *args):
    from landscape.batches import Batch

    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return C.forward_macs(model.eval(), tensors, Batch(args, {}, None, 1))


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def test_forward_macs_counts_every_product_by_formula():
    """The cost model of ``auto`` counts the multiply-adds of convolutions (grouped too),
    linear layers, nn.MultiheadAttention's fused inference op and Hugging Face GPT-2's Conv1D
    layers and fused attention (the forward hooks on Conv/Linear it had missed the last two,
    counting 1/29 of the benchmark GPT-2's work)."""
    torch.manual_seed(0)
    conv = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=3),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, 10),
    )
    expected = 6 * 64 * 3 * 9 + 6 * 64 * 2 * 9 + 384 * 10
    assert _macs(conv, torch.randn(1, 3, 8, 8)) == expected
    # q, k, v and output projections (4 L E^2) and the two attention products (2 L^2 E)
    assert _macs(_Attention(), torch.randn(1, 10, 32)) == 4 * 10 * 32 * 32 + 2 * 10 * 10 * 32
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    gpt2 = transformers.GPT2LMHeadModel(cfg)
    T, E, V = 16, 32, 256
    per_layer = T * (3 * E * E + E * E + 2 * 4 * E * E) + 2 * T * T * E  # qkv, proj, MLP; attention
    assert _macs(gpt2, torch.randint(0, V, (1, T))) == 2 * per_layer + T * E * V


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="Inductor needs a C compiler")
def test_inductor_matches_the_loop_in_fp32(monkeypatch, tmp_path):
    torch._dynamo.reset()
    monkeypatch.setattr(C, "_COMPILED", {})
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    model, line = _line(4)
    x, y = _data(40)
    loop = ls.evaluate(model, line, (x, y), path="loop", batch_size=16, progress=False)
    comp = ls.evaluate(model, line, (x, y), path="compiled", batch_size=16, progress=False)
    assert comp.path == "compiled" and comp.info["compile_seconds"] > 0
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)
    # the warm-up is recorded for the next process's auto choice
    recorded = json.loads((tmp_path / "compile_seconds.json").read_text())
    assert len(recorded) == 1 and list(recorded.values())[0] > 0


def test_dict_batches_of_a_language_model_and_a_user_forward(counter):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    lms = [transformers.GPT2LMHeadModel(cfg).eval() for _ in range(2)]
    line = ls.PointSet.from_weights([ls.Weights.from_module(m) for m in lms], [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (5, 8), generator=g)
    batches = [{"input_ids": ids[i : i + 2], "labels": ids[i : i + 2]} for i in range(0, 5, 2)]  # 2, 2, 1
    loop = ls.evaluate(lms[0], line, batches, ("token_loss",), path="loop", progress=False)
    comp = ls.evaluate(lms[0], line, batches, ("token_loss",), path="compiled", progress=False)
    assert comp.path == "compiled" and counter.graphs == 1  # tied embeddings, dict inputs, padded last batch
    np.testing.assert_allclose(comp["token_loss"], loop["token_loss"], rtol=1e-5)

    model, line = _line(3)
    x, y = _data(40)
    forward = lambda m, batch: m(batch[0])  # noqa: E731
    loop = ls.evaluate(model, line, (x, y), path="loop", forward=forward, batch_size=16, progress=False)
    for _ in range(2):
        comp = ls.evaluate(model, line, (x, y), path="compiled", forward=forward, batch_size=16, progress=False)
    # a user forward sees the batch as the data gives it: not padded, one graph per batch size
    assert comp.path == "compiled" and counter.graphs == 1 + 2
    np.testing.assert_allclose(comp["loss"], loop["loss"], rtol=1e-5)


def test_many_models_in_one_process_all_stay_compiled(counter):
    # Dynamo stops compiling a function after 8 recompilations; each model has its own
    x, y = torch.randn(8, 5), torch.zeros(8, dtype=torch.long)
    for width in range(3, 13):
        net = nn.Sequential(nn.Linear(5, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 3))
        line = ls.PointSet.from_weights([ls.Weights.from_module(net)], [[1.0], [0.5]])
        assert ls.evaluate(net, line, (x, y), path="compiled", progress=False).path == "compiled"
    assert counter.graphs == 10
