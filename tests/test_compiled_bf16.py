"""precision="bf16" on the compiled path: real bf16 weights and activations (cast inside the
graph, not autocast), judged as flash-attention judges its kernels: the error against a
float64 reference is at most twice PyTorch's own bf16 error on the same forward (the eager
model cast to bf16)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape import compiled as C
from landscape.weights import model_skeleton


class _Recorder:
    """A torch.compile backend that runs graphs eagerly and records, per graph, its code and
    whether autocast was on while it was traced."""

    def __init__(self):
        self.codes, self.autocast = [], []

    def __call__(self, gm, example_inputs):
        self.codes.append(gm.code)
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return gm.forward


@pytest.fixture
def recorder(monkeypatch, tmp_path):
    torch._dynamo.reset()
    monkeypatch.setattr(C, "_COMPILED", {})
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    backend = _Recorder()
    monkeypatch.setattr(C, "BACKEND", backend)
    yield backend
    torch._dynamo.reset()


def _net(seed):
    """A small conv net with BatchNorm after each convolution and one after a ReLU, with
    random running statistics (so BN is not close to the identity)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.BatchNorm2d(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.normal_(1, 0.2)
                mod.bias.normal_(0, 0.2)
    return net.eval()


def _data(n=64, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _at(net, tensors, dtype):
    """A copy of ``net`` holding ``tensors`` in ``dtype`` (PyTorch's own low-precision model)."""
    import copy

    out = copy.deepcopy(net)
    out.load_state_dict({k: v for k, v in tensors.items()})
    return out.to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_logits_error_is_at_most_twice_pytorchs_bf16_error(recorder, seed):
    net = _net(seed)
    x, _ = _data(seed=seed + 10)
    ref = _at(net, net.state_dict(), torch.float64)(x.double())
    pytorch_err = (_at(net, net.state_dict(), torch.bfloat16)(x.bfloat16()).double() - ref).abs().max()
    fp32_err = (net(x).double() - ref).abs().max()

    work, _ = model_skeleton(net, "cpu", torch.float32)
    compiled = C.compiled_forward(work, None, torch.float32, torch.device("cpu"), torch.bfloat16)
    params = compiled.fold(dict(net.state_dict()))
    with torch.no_grad():
        out = compiled(params, ls.batches.Batch((x,), {}, None, len(x), None))
    assert out.dtype == torch.float32
    err = (out.double() - ref).abs().max()
    assert err <= 2 * pytorch_err, (float(err), float(pytorch_err))
    assert err > 20 * fp32_err  # it really ran in bf16
    # the casts are in the graph and autocast was off while it was traced
    assert len(recorder.codes) == 1 and "torch.bfloat16" in recorder.codes[0]
    assert recorder.autocast == [False]


def test_evaluate_bf16_compiled_loss_error_within_twice_pytorchs(recorder):
    nets = [_net(0), _net(1)]
    ws = [ls.Weights.from_module(n) for n in nets]
    ts = np.linspace(0, 1, 6)
    line = ls.PointSet.from_weights(ws, [[1 - t, t] for t in ts])
    x, y = _data(96)
    ref = ls.evaluate(nets[0], line, (x, y), precision="fp64", path="loop", batch_size=32, progress=False)
    res = ls.evaluate(nets[0], line, (x, y), precision="bf16", path="compiled", batch_size=32, progress=False)
    assert res.path == "compiled" and len(recorder.codes) == 1 and recorder.autocast == [False]
    # PyTorch's bf16 error on the same forward: each point's model cast to bf16
    sd = [n.state_dict() for n in nets]
    theirs = []
    with torch.no_grad():
        for t in ts:
            point = {k: (1 - t) * sd[0][k].double() + t * sd[1][k].double() for k in sd[0]}
            m = _at(nets[0], point, torch.bfloat16)
            theirs.append(float(F.cross_entropy(m(x.bfloat16()).double(), y)))
    ours_err = np.abs(res["loss"] - ref["loss"])
    theirs_err = np.abs(np.array(theirs) - ref["loss"])
    assert ours_err.mean() <= 2 * theirs_err.mean(), (ours_err, theirs_err)
    assert ours_err.max() > 1e-5  # not fp32 in disguise


def test_autocast_stays_on_for_the_other_paths(recorder):
    # the engine's bf16 on the loop path is autocast: the loop and the compiled path differ
    net = _net(0)
    line = ls.PointSet.from_weights([ls.Weights.from_module(net)], [[1.0], [0.5]])
    x, y = _data(32)
    loop = ls.evaluate(net, line, (x, y), precision="bf16", path="loop", progress=False)
    fp32 = ls.evaluate(net, line, (x, y), precision="fp32", path="loop", progress=False)
    assert loop.path == "loop" and not recorder.codes
    assert np.abs(loop["loss"] - fp32["loss"]).max() > 1e-5


@pytest.mark.slow
@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 instructions")
def test_inductor_bf16_logits_within_twice_pytorchs_error(monkeypatch, tmp_path):
    torch._dynamo.reset()
    monkeypatch.setattr(C, "_COMPILED", {})
    monkeypatch.setenv("LANDSCAPE_CACHE_DIR", str(tmp_path))
    net = _net(0)
    x, _ = _data(seed=10)
    ref = _at(net, net.state_dict(), torch.float64)(x.double())
    pytorch_err = (_at(net, net.state_dict(), torch.bfloat16)(x.bfloat16()).double() - ref).abs().max()
    work, _ = model_skeleton(net, "cpu", torch.float32)
    compiled = C.compiled_forward(work, None, torch.float32, torch.device("cpu"), torch.bfloat16)
    with torch.no_grad():
        out = compiled(compiled.fold(dict(net.state_dict())), ls.batches.Batch((x,), {}, None, len(x), None))
    err = (out.double() - ref).abs().max()
    assert err <= 2 * pytorch_err, (float(err), float(pytorch_err))
    assert err > 1e-4  # bf16, not float32
    torch._dynamo.reset()
