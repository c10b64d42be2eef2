"""Variational layers, networks, training and prediction schemes against independent oracles."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from torch import nn
from torch.func import functional_call

import landscape as ls
from landscape import variational as vi
from landscape.plot import plot_snr
from landscape.weights import CheckpointError

K1 = 0.63576


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread is fastest, and two spin when the machine is busy."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _exact_neg_kl(alpha: float) -> float:
    """0.5 log alpha - E_{eps ~ N(1, alpha)} log|eps| - k1 by adaptive quadrature, split at the
    integrable singularity eps = 0."""
    s = math.sqrt(alpha)
    lo, hi = 1 - 12 * s, 1 + 12 * s
    edges = [lo, 0.0, hi] if lo < 0 else [lo, hi]
    f = lambda e: math.log(abs(e)) * stats.norm.pdf(e, 1, s)
    expect = sum(integrate.quad(f, a, b, limit=200, epsabs=1e-10, epsrel=1e-10)[0] for a, b in zip(edges, edges[1:]))
    return 0.5 * math.log(alpha) - expect - K1


def _approx(alpha: float) -> float:
    return float(vi.neg_kl_log_uniform(torch.tensor(math.log(alpha), dtype=torch.float64)))


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0, 10.0, 100.0, 1e4])
def test_kl_approximation_matches_numerical_integration(alpha):
    # Largest error at these alphas: 0.0057 (alpha = 0.01); as alpha -> inf the exact value
    # tends to (gamma + log 2) / 2 - k1 = -5.8e-4 and the approximation to 0.
    assert abs(_approx(alpha) - _exact_neg_kl(alpha)) < 0.006


def test_kl_approximation_error_bound_over_all_alphas():
    # Molchanov's fit is within 0.009 nats everywhere (worst near log alpha = -3.5: 0.0088);
    # far from it the error vanishes (small alpha) or settles at 5.8e-4 (large alpha)
    errs = np.array([_approx(math.exp(la)) - _exact_neg_kl(math.exp(la)) for la in np.linspace(-9, 10, 39)])
    assert np.abs(errs).max() < 0.009
    assert np.abs(errs).max() > 0.008  # the bound is tight: the grid passes near the worst point


def _layers():
    torch.manual_seed(0)
    return [
        nn.Linear(5, 4).double(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2).double(),
        nn.Conv2d(2, 3, (3, 2), padding=2, dilation=2, padding_mode="reflect").double(),
    ]


@pytest.mark.parametrize("p", ["layer", "neuron", "weight", "additive"])
def test_layer_kl_counts_every_weight(p):
    layer = vi.VariationalConv2d.from_module(_layers()[1], p, alpha=0.3)
    with torch.no_grad():
        for name, t in layer.named_parameters():
            if name != "bias":
                t.add_(0.5 * torch.randn_like(t))
    full = layer.log_alpha_full()
    assert full.shape == layer.weight.shape
    expected = -vi.neg_kl_log_uniform(full).sum()  # per-weight KL of the expanded alphas
    torch.testing.assert_close(layer.kl(), expected, rtol=1e-12, atol=0)
    with torch.no_grad():
        assert float(vi.kl_divergence(nn.Sequential(layer, nn.ReLU(), layer))) == pytest.approx(float(expected))


def _direct_conv(conv: nn.Conv2d, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``conv`` applied to one input ``x`` with each of the weights ``W[M, out, in/groups, kh, kw]``:
    one grouped convolution with the M samples stacked inside every group."""
    M, g = W.shape[0], conv.groups
    pad = conv.padding
    if conv.padding_mode != "zeros":
        x, pad = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0
    stacked = W.view(M, g, -1, *W.shape[2:]).transpose(0, 1).reshape(-1, *W.shape[2:])
    out = F.conv2d(x, stacked, None, conv.stride, pad, conv.dilation, g)[0]
    out = out.view(g, M, -1, *out.shape[1:]).transpose(0, 1).reshape(M, -1, *out.shape[1:])
    return out + conv.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("p", ["neuron", "weight", "additive", "variance"])
def test_lrt_moments_match_directly_sampled_weights(index, p):
    base = _layers()[index]
    layer = vi.VariationalConv2d.from_module(base, p) if index else vi.VariationalLinear.from_module(base, p)
    torch.manual_seed(1)
    with torch.no_grad():
        if p in ("neuron", "weight"):
            layer.log_alpha.copy_(torch.randn_like(layer.log_alpha) - 1)
        else:
            layer.log_sigma2.copy_(torch.randn_like(layer.log_sigma2) - 3)
        mu = layer.mean_weight().clone()
        # the posterior variances computed here, independently of the layer
        s2 = (
            torch.exp(layer.log_alpha.view(-1, *[1] * (mu.dim() - 1)) if p == "neuron" else layer.log_alpha) * mu**2
            if p in ("neuron", "weight")
            else torch.exp(layer.log_sigma2)
        )
    x = torch.rand(
        1, base.weight.shape[1] * (base.groups if index else 1), *((5, 6) if index else ()), dtype=torch.float64
    )
    M = 20000
    with vi.variational_mode(layer, "sample"), torch.no_grad():
        lrt = layer(x.expand(M, *x.shape[1:]))
        W = mu + s2.sqrt() * torch.randn(M, *mu.shape, dtype=torch.float64)
        direct = _direct_conv(base, x, W) if index else torch.einsum("ni,moi->mo", x, W) + base.bias
    assert lrt.shape == direct.shape
    var = direct.var(0)
    # both are Gaussian: the means differ by sd * sqrt(2 / M), the variances by var * sqrt(2 * 2 / M)
    z_mean = (lrt.mean(0) - direct.mean(0)) / (var / M * 2).sqrt()
    z_var = (lrt.var(0) - var) / (var * math.sqrt(4 / M))
    assert z_mean.abs().max() < 5 and z_var.abs().max() < 5
    assert float(var.min()) > 1e-6  # the test tests something: every output is noisy


def _bn_convnet():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, stride=2, groups=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 10),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].num_batches_tracked.fill_(7)
    return net.eval()


def test_sample_weights_moments_keys_and_mean_twin():
    vnet = vi.convert(_bn_convnet().double(), "neuron", alpha=0.2, layers={"6": "additive"})
    with torch.no_grad():
        vnet[3].log_alpha.copy_(torch.linspace(-3, 1, 4, dtype=torch.float64))
    twin = vi.deterministic_twin(vnet)
    assert [type(m) for m in twin] == [type(m) for m in _bn_convnet()]
    k = 2000
    samples = vi.sample_weights(vnet, k, seed=3)
    assert all(list(w.keys()) == list(twin.state_dict().keys()) for w in samples[:3])
    assert torch.equal(samples[5]["1.running_var"], vnet[1].running_var)
    assert int(samples[5]["1.num_batches_tracked"]) == 7
    assert torch.equal(samples[0]["0.weight"], vi.sample_weights(vnet, 2, seed=3)[0]["0.weight"])
    for name, layer in vi.variational_layers(vnet):
        W = torch.stack([w[f"{name}.weight"] for w in samples])
        mu = layer.weight.detach()
        s2 = (
            torch.exp(layer.log_alpha).view(-1, *[1] * (mu.dim() - 1)) * mu**2
            if layer.parameterization == "neuron"
            else torch.exp(layer.log_sigma2)
        ).detach()
        assert float(((W.mean(0) - mu) / (s2 / k).sqrt()).abs().max()) < 5
        assert float(((W.var(0) - s2) / (s2 * math.sqrt(2 / k))).abs().max()) < 5
        if layer.bias is not None:
            torch.testing.assert_close(samples[1][f"{name}.bias"], layer.bias.detach(), rtol=0, atol=0)
    assert "0.bias" not in samples[0] and vnet[0].bias is None
    # the twin at the mean weights computes what the variational network does in "mean" mode
    x = torch.rand(7, 1, 8, 8, dtype=torch.float64)
    mean = vi.mean_weights(vnet)
    with vi.variational_mode(vnet, "mean"):
        expected = vnet(x)
    torch.testing.assert_close(functional_call(twin, dict(mean.tensors), (x,)), expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(twin(x), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("p", ["layer", "neuron", "weight", "additive"])
def test_schemes_agree_without_noise(p):
    base = _bn_convnet()
    vnet = vi.convert(base, p)
    with torch.no_grad():
        for _, layer in vi.variational_layers(vnet):
            if p == "additive":
                layer.log_sigma2.fill_(-60.0)
            else:
                layer.log_alpha.fill_(-30.0)
    test = ls.load_data("digits:image", "test", max_samples=150)
    res = vi.predict(vnet, test, samples=5, seed=1)
    assert list(res) == ["deterministic", "stochastic", "ensemble"]
    oracle = torch.softmax(base(test.x).double(), -1).detach().numpy()  # the network it was made from
    for r in res.values():
        np.testing.assert_allclose(r.probabilities, oracle, rtol=0, atol=1e-5)
        assert r.acc == float((oracle.argmax(1) == test.y.numpy()).mean())
    assert res["ensemble"].member_acc.shape == (5,) and res["stochastic"].member_acc.shape == (1,)


def test_variance_layers_predict_a_constant_with_their_means():
    torch.manual_seed(0)
    vnet = vi.convert(ls.models.mlp(64, [16, 12]), "variance")
    with torch.no_grad():
        vnet[5].bias.copy_(torch.linspace(-1, 1, 10))
    assert all(layer.weight is None for _, layer in vi.variational_layers(vnet))
    mean = vi.mean_weights(vnet)
    for name in ("1.weight", "3.weight", "5.weight"):
        assert mean[name].shape == vi.deterministic_twin(vnet).state_dict()[name].shape
        assert not mean[name].any()
    assert float(vi.kl_divergence(vnet)) == 0.0
    assert all(np.all(v == 0) for v in vi.snr(vnet).values())
    test = ls.load_data("digits", "test", max_samples=100)
    res = vi.predict(vnet, test, schemes="deterministic")
    assert list(res) == ["deterministic"]
    expected = torch.softmax(torch.linspace(-1, 1, 10, dtype=torch.float64), 0).numpy()
    np.testing.assert_allclose(res["deterministic"].probabilities, np.tile(expected, (100, 1)), rtol=0, atol=1e-7)
    # while a weight sample does depend on the input
    stoch = vi.predict(vnet, test, schemes=["stochastic"])["stochastic"].probabilities
    assert np.ptp(stoch, axis=0).max() > 1e-3


def test_training_smoke_and_ensemble_equals_members_average():
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    torch.manual_seed(0)
    vnet = vi.convert(ls.models.mlp(64, [32]), "weight", alpha=0.01)
    hist = vi.fit_elbo(vnet, train, epochs=8, lr=1e-2, seed=0, warmup_epochs=2)
    assert len(hist["loss"]) == 8 and hist["nll"][-1] < hist["nll"][0]
    assert hist["kl_weight"][0] < 1.0 and hist["kl_weight"][-1] == 1.0  # the warm-up
    with torch.no_grad():
        assert hist["kl"][-1] == pytest.approx(float(vi.kl_divergence(vnet)))
    res = vi.predict(vnet, test, samples=6, seed=4, precision="fp64")
    assert res["ensemble"].acc > 0.8 and res["deterministic"].acc > 0.8
    twin = vi.deterministic_twin(vnet).double()
    members = vi.sample_weights(vnet, 6, seed=4)
    probs = [
        torch.softmax(functional_call(twin, {k: v.double() for k, v in w.tensors.items()}, (test.x.double(),)), -1)
        for w in members
    ]
    np.testing.assert_allclose(res["ensemble"].probabilities, torch.stack(probs).mean(0).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["stochastic"].probabilities, probs[0].numpy(), rtol=0, atol=1e-12)
    assert res["ensemble"].member_acc[2] == float((probs[2].argmax(1) == test.y).double().mean())


def test_fixed_alpha_is_gaussian_dropout_and_stays_fixed():
    vnet = vi.convert(ls.models.mlp(64, [8]), "layer", alpha=0.5 / (1 - 0.5), train_alpha=False)
    layer = vnet[1]
    assert "log_alpha" in dict(layer.named_buffers()) and "log_alpha" not in dict(layer.named_parameters())
    before = layer.weight.detach().clone()
    vi.fit_elbo(vnet, ls.load_data("digits", "train", max_samples=64), epochs=1, lr=1e-2, batch_size=32)
    assert float(layer.log_alpha) == 0.0 and not torch.equal(layer.weight, before)
    np.testing.assert_allclose(vi.snr(vnet)["1"], np.ones((8, 64)), rtol=1e-7)


def test_modes_and_rng_isolation():
    layer = vi.VariationalLinear(4, 3, parameterization="weight", alpha=1.0)
    x = torch.ones(2, 4)
    assert layer.training and layer.effective_mode() == "sample"
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    with vi.variational_mode(layer, "sample"):
        assert layer.effective_mode() == "sample"
    assert layer.mode is None
    with pytest.raises(ValueError, match="mode should be one of"):
        with vi.variational_mode(layer, "median"):
            pass
    vnet = vi.convert(nn.Linear(64, 10))  # the root module itself is replaced
    assert isinstance(vnet, vi.VariationalLinear)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    vi.fit_elbo(vnet, ls.load_data("digits", "train", max_samples=40), epochs=1, lr=1e-3)
    assert torch.equal(torch.get_rng_state(), state)  # the noise came from a forked generator


def test_convert_rejects_and_keeps():
    with pytest.raises(ValueError, match="parameterization should be one of"):
        vi.convert(nn.Linear(2, 2), "gaussian")
    with pytest.raises(ValueError, match=r"layers names \['9'\]"):
        vi.convert(ls.models.mlp(4, [3]), "weight", layers={"9": None})
    shared = nn.Linear(3, 3)
    net = vi.convert(nn.Sequential(shared, nn.ReLU(), shared), "additive")
    assert net[0] is net[2] and isinstance(net[0], vi.VariationalLinear)
    assert len(vi.variational_layers(net)) == 1
    mha = nn.MultiheadAttention(4, 2)
    assert not vi.variational_layers(vi.convert(mha, "weight"))  # its out_proj is a Linear subclass


def test_predict_validates_schemes():
    vnet = vi.convert(nn.Linear(64, 10))
    test = ls.load_data("digits", "test", max_samples=10)
    with pytest.raises(ValueError, match=r"schemes should be some of .*'mean'"):
        vi.predict(vnet, test, schemes=["ensemble", "mean"])
    with pytest.raises(ValueError, match="samples should be a positive integer"):
        vi.predict(vnet, test, samples=0)


def test_plot_snr(tmp_path):
    vnet = vi.convert(ls.models.mlp(64, [16]), "weight", layers={"3": "variance"})
    with torch.no_grad():
        vnet[1].log_alpha.copy_(torch.linspace(-4, 2, 16 * 64).view(16, 64))
    values = vi.snr(vnet)
    np.testing.assert_allclose(
        np.log10(values["1"]).ravel(), -np.linspace(-4, 2, 1024) / math.log(10), rtol=1e-6, atol=1e-8
    )
    fig = plot_snr(values)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["1 (1024 weights)", "3 (160 weights, all SNR = 0)"]
    counts = ax.patches[0].get_path().vertices  # the step outline spans log10 SNR in [-2/ln 10, 4/ln 10]
    assert counts[:, 0].min() == pytest.approx(-2 / math.log(10)) and counts[:, 0].max() == pytest.approx(
        4 / math.log(10)
    )
    fig.savefig(tmp_path / "snr.png")
    assert (tmp_path / "snr.png").stat().st_size > 1000


def test_save_load_round_trip(tmp_path):
    spec = {"model": "mlp", "model_kwargs": {"in_features": 64, "widths": [12]}, "alpha": 0.05}
    torch.manual_seed(0)
    vnet = vi.convert(ls.build_model(spec["model"], spec["model_kwargs"]), "variance", layers={"3": "layer"})
    with torch.no_grad():
        vnet[1].log_sigma2.add_(torch.randn_like(vnet[1].log_sigma2))
    path = tmp_path / "v.pt"
    vi.save_variational(vnet, path, spec=spec)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "landscape-variational" and raw["version"] == 1
    assert raw["spec"]["variational_layers"] == {
        "1": {"parameterization": "variance", "train_alpha": True},
        "3": {"parameterization": "layer", "train_alpha": True},
    }
    build = lambda s: ls.build_model(s["model"], s["model_kwargs"])
    back = vi.load_variational(path, build)
    assert not back.training and back[1].weight is None and back[3].parameterization == "layer"
    sd, sd2 = vnet.state_dict(), back.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = ls.load_data("digits", "test", max_samples=20).x
    a = vi.sample_weights(vnet, 2, seed=9)[1].flatten()
    assert torch.equal(a, vi.sample_weights(back, 2, seed=9)[1].flatten())
    with pytest.raises(FileExistsError, match="already exists; pass force=True"):
        vi.save_variational(back, path, spec=spec)
    vi.save_variational(vi.convert(build(spec), "weight", train_alpha=False), path, spec=spec, force=True)
    fixed = vi.load_variational(path, build)
    assert "log_alpha" in dict(fixed[1].named_buffers()) and not fixed[1].train_alpha
    torch.testing.assert_close(
        fixed(x), F.linear(F.relu(F.linear(x, fixed[1].weight, fixed[1].bias)), fixed[3].weight, fixed[3].bias)
    )
    # files of other kinds, and models that do not match
    torch.save({"weight": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a variational network file"):
        vi.load_variational(tmp_path / "plain.pt", build)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable safe PyTorch file"):
        vi.load_variational(tmp_path / "junk.pt", build)
    with pytest.raises(CheckpointError, match="does not match the model"):
        vi.load_variational(path, lambda s: ls.build_model("mlp", {"in_features": 64, "widths": [13]}))
    with pytest.raises(TypeError, match="spec value at spec\\['f'\\] is a function"):
        vi.save_variational(vnet, tmp_path / "other.pt", spec={"f": build})


@pytest.mark.slow
def test_variance_network_predicts_at_chance_with_means_and_well_as_an_ensemble():
    # Hidden layer: a variance layer (zero means); output layer: plain (an all-variance network
    # cannot learn: with zero-mean logits E_q CE >= CE at the bias, by Jensen).
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    torch.manual_seed(0)
    vnet = vi.convert(ls.models.mlp(64, [1024]), "variance", layers={"3": None})
    vi.fit_elbo(vnet, train, epochs=100, lr=1e-2, seed=0)
    res = vi.predict(vnet, test, samples=50, seed=0)
    assert res["deterministic"].acc < 0.25
    assert res["ensemble"].acc > 0.85
    assert res["stochastic"].acc > 0.5
