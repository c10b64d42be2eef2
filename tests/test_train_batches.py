"""Training loops on any data (landscape.train): DataLoaders, Datasets, iterables and dict
batches give what hand-written float64 loops over the same batches give, and in-memory data
keeps its exact random stream."""

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import landscape as ls
from landscape import curves as C
from landscape.batches import BatchError, first_inputs
from landscape.ensembles import evaluate_ensemble, fge, fge_lr, sse, swa, swa_lr
from landscape.train import TrainBatches, loss_of, train_classifier


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(n=36, d=4, c=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = (x @ torch.randn(d, c, generator=g, dtype=dtype)).argmax(1)
    return x, y


def _mlp(seed=0, d=4, c=3, h=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c)).double()


class _SGD:
    """Hand-written SGD with momentum and L2 weight decay (PyTorch's update rule)."""

    def __init__(self, params, momentum, weight_decay):
        self.params, self.mu, self.wd, self.buf = list(params), momentum, weight_decay, None

    @torch.no_grad()
    def step(self, grads, lr):
        d = [g + self.wd * p for g, p in zip(grads, self.params)]
        self.buf = d if self.buf is None else [self.mu * b + di for b, di in zip(self.buf, d)]
        for p, b in zip(self.params, self.buf):
            p -= lr * b


# ---------------------------------------------------------------------------- the batch streams
def test_epoch_and_stream_of_in_memory_data_are_the_loops_permutations():
    x, y = _problem(n=10)
    tb = TrainBatches((x, y), 4, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)  # oracle: randperm per epoch, ceil(n / B) slices
    for _ in range(2):
        perm = torch.randperm(10, generator=g)
        got = list(tb.epoch())
        assert [b.count for b in got] == [4, 4, 2]
        for b, start in zip(got, (0, 4, 8)):
            assert torch.equal(b.args[0], x[perm[start : start + 4]]) and torch.equal(
                b.target, y[perm[start : start + 4]]
            )
    # FGE's stream: a new permutation whenever fewer than B samples are left (2 of 10 here)
    stream = TrainBatches((x, y), 4, generator=torch.Generator().manual_seed(3)).stream()
    g = torch.Generator().manual_seed(3)
    perms = [torch.randperm(10, generator=g) for _ in range(3)]
    want = [perms[0][:4], perms[0][4:8], perms[1][:4], perms[1][4:8], perms[2][:4]]
    for idx in want:
        assert torch.equal(next(stream).target, y[idx])
    assert tb.steps_per_epoch() == 3 and tb.stream_steps_per_epoch() == 2


def test_loader_counts_come_from_its_sampler_or_one_counting_pass():
    x, y = _problem(n=30)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    tb = TrainBatches(loader, 5)
    assert tb.n == 30 and tb.steps_per_epoch() == 4 and tb.src.passes == 0
    subset = DataLoader(TensorDataset(x, y), batch_size=8, sampler=range(12))
    assert TrainBatches(subset, 5).n == 12

    class NoLen:  # a re-iterable of batches without a length
        def __iter__(self):
            return iter([(x[:7], y[:7]), (x[7:20], y[7:20])])

    tb = TrainBatches(NoLen(), 5)
    assert tb.n == 20 and tb.steps_per_epoch() == 2 and tb.src.passes == 1  # one counting pass
    assert [b.count for b in tb.epoch()] == [7, 13]  # its own batches, not re-split


# ---------------------------------------------------------------------------- DataLoaders vs float64 oracles
def test_fge_on_a_loader_equals_a_hand_written_float64_loop():
    x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)  # 8, 8, 8, 8, 4
    model = _mlp()
    start = ls.Weights.from_module(model)
    res = fge(model, start, loader, cycles=3, cycle_length=4, alpha1=0.1, alpha2=0.01, batch_size=8, seed=0)
    net = copy.deepcopy(model)
    opt = _SGD(net.parameters(), 0.9, 5e-4)
    batches = [b for _ in range(3) for b in loader]  # the loader's batches, pass after pass
    snaps = []
    for i in range(1, 13):
        xb, yb = batches[i - 1]
        grads = torch.autograd.grad(F.cross_entropy(net(xb), yb), opt.params)
        opt.step(grads, fge_lr(i, 0.1, 0.01, 4))
        if i % 4 == 2:
            snaps.append({k: v.clone() for k, v in net.state_dict().items()})
    assert res.iterations == [2, 6, 10]
    for got, want in zip(res.snapshots, snaps):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-12)


def test_swa_on_a_loader_equals_a_hand_written_float64_loop():
    x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    model = _mlp(1)
    start = ls.Weights.from_module(model)
    res = swa(model, start, loader, epochs=2, lr=0.1, lr_min=0.01, cycle_length=3, batch_size=8, weight_decay=1e-3)
    net = copy.deepcopy(model)
    opt = _SGD(net.parameters(), 0.9, 1e-3)
    collected = []
    for i, (xb, yb) in enumerate([b for _ in range(2) for b in loader], 1):
        grads = torch.autograd.grad(F.cross_entropy(net(xb), yb), opt.params)
        opt.step(grads, swa_lr(i, 0.1, 0.01, 3))
        if i % 3 == 0:
            collected.append({k: v.clone() for k, v in net.state_dict().items()})
    assert res.collected == [3, 6, 9]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(res.sgd[k], v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            res.weights[k], torch.stack([c[k] for c in collected]).mean(0), rtol=1e-12, atol=1e-12
        )


def test_swa_batchnorm_update_averages_batches_equally_or_by_sample_counts():
    x, y = _problem(n=40)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 16, 16, 8
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    start = ls.Weights.from_module(model)
    # the BatchNorm's input is the data itself: the statistics are averages of the batches'
    parts = [x[:16], x[16:32], x[32:]]
    for weighting, w in (("batches", [1 / 3] * 3), ("samples", [16 / 40, 16 / 40, 8 / 40])):
        res = swa(model, start, loader, epochs=1, lr=0.01, batch_size=16, bn_weighting=weighting)
        mean = sum(wi * p.mean(0) for wi, p in zip(w, parts))
        var = sum(wi * p.var(0, unbiased=True) for wi, p in zip(w, parts))
        torch.testing.assert_close(res.weights["0.running_mean"], mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res.weights["0.running_var"], var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.weights["0.running_mean"], x.mean(0), rtol=1e-12, atol=1e-12)


def _bezier(a, theta, b, t):
    return (1 - t) ** 2 * a + 2 * t * (1 - t) * theta + t**2 * b


def test_curve_fit_on_a_loader_equals_a_hand_written_float64_loop():
    x, y = _problem()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    torch.manual_seed(3)
    ma, mb = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    curve = C.Curve(a, b, n_bends=1)
    theta = curve.bends.detach()[0].clone().requires_grad_(True)
    kw = dict(epochs=2, lr=0.1, momentum=0.9, weight_decay=1e-3, schedule="constant", seed=4)
    res = C.fit_curve(ma, curve, loader, **kw, batch_size=8, device="cpu", progress=False)
    fa, fb = a.flatten(torch.float64), b.flatten(torch.float64)  # layout order: weight, bias
    gen = torch.Generator().manual_seed(4)  # a loader's order is its own: only t is drawn
    buf, first_losses = None, []
    for _ in range(2):
        for xb, yb in loader:
            t = torch.rand(1, generator=gen, dtype=torch.float64)
            w = _bezier(fa, theta, fb, t)
            loss = F.cross_entropy(xb @ w[:12].view(3, 4).T + w[12:], yb)
            first_losses.append(float(loss.detach()))
            (g,) = torch.autograd.grad(loss + 0.5e-3 * w.pow(2).sum(), theta)  # decay of phi(t), as DMC
            with torch.no_grad():
                buf = g if buf is None else 0.9 * buf + g
                theta -= 0.1 * buf
    torch.testing.assert_close(curve.bends.detach()[0], theta.detach(), rtol=1e-12, atol=1e-12)
    epoch1 = sum(v * n for v, n in zip(first_losses[:5], (8, 8, 8, 8, 4))) / 36
    assert res.history[0]["loss"] == pytest.approx(epoch1, rel=1e-12)


# ---------------------------------------------------------------------------- in-memory order matched
class _Permuted:
    """A re-iterable giving the batches of the in-memory path: a permutation per pass."""

    def __init__(self, x, y, batch_size, seed):
        self.x, self.y, self.B = x, y, batch_size
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.y) / self.B)

    def __iter__(self):
        perm = torch.randperm(len(self.y), generator=self.g)
        for i in range(0, len(self.y), self.B):
            yield self.x[perm[i : i + self.B]], self.y[perm[i : i + self.B]]


def test_sse_and_swa_on_an_iterable_of_the_same_batches_equal_the_in_memory_run():
    x, y = _problem(n=30)
    model = _mlp(2)
    a = sse(model, (x, y), epochs=2, cycles=2, lr=0.1, batch_size=8, seed=5)
    b = sse(model, _Permuted(x, y, 8, 5), epochs=2, cycles=2, lr=0.1, batch_size=8, seed=5)
    assert a.iterations == b.iterations == [4, 8]
    for wa, wb in zip(a.members, b.members):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    start = ls.Weights.from_module(model)
    a = swa(model, start, (x, y), epochs=2, lr=0.05, batch_size=8, seed=6)
    b = swa(model, start, _Permuted(x, y, 8, 6), epochs=2, lr=0.05, batch_size=8, seed=6)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


def test_a_map_style_dataset_follows_the_in_memory_stream():
    x, y = _problem(n=30)
    model = _mlp(3)
    start = ls.Weights.from_module(model)
    kw = dict(cycles=2, cycle_length=4, alpha1=0.1, alpha2=0.01, batch_size=8, seed=2)
    a, b = fge(model, start, (x, y), **kw), fge(model, start, TensorDataset(x, y), **kw)
    for wa, wb in zip(a.snapshots, b.snapshots):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    na, nb = copy.deepcopy(model), copy.deepcopy(model)
    train_classifier(na, (x, y), epochs=2, batch_size=8, seed=1)
    train_classifier(nb, TensorDataset(x, y), epochs=2, batch_size=8, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(na.parameters(), nb.parameters()))


def test_elbo_on_a_dataset_equals_in_memory_and_scales_the_kl_by_its_size():
    from landscape import variational as vi

    x, y = _problem(n=30, dtype=torch.float32)
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    va, vb = vi.convert(base, "weight"), vi.convert(base, "weight")
    ha = vi.fit_elbo(va, (x, y), epochs=2, lr=1e-2, batch_size=8, seed=3, warmup_epochs=1)
    hb = vi.fit_elbo(vb, TensorDataset(x, y), epochs=2, lr=1e-2, batch_size=8, seed=3, warmup_epochs=1)
    assert ha["loss"] == hb["loss"] and ha["nll"] == hb["nll"]
    assert all(torch.equal(p, q) for p, q in zip(va.parameters(), vb.parameters()))
    # with a loader, N is its data set's size: loss - nll = beta KL / N on the last batch
    loader = DataLoader(TensorDataset(x, y), batch_size=30)
    vc = vi.convert(base, "weight")
    h = vi.fit_elbo(vc, loader, epochs=1, lr=1e-12, batch_size=8, seed=3)
    assert h["loss"][0] - h["nll"][0] == pytest.approx(h["kl"][0] / 30, rel=1e-4)


# ---------------------------------------------------------------------------- dict batches, .logits outputs
@dataclass
class _Out:
    logits: torch.Tensor


class _DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, features):
        return _Out(self.lin(features))


class _DictData(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "labels": self.y[i]}


def _full_loss(net, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(net(x).logits, y))


def test_dict_batches_and_logits_outputs_train_with_fge_and_curve_fit():
    x, y = _problem(n=64, dtype=torch.float32)
    loader = DataLoader(_DictData(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = _DictNet()
    start = ls.Weights.from_module(net)
    res = fge(net, start, loader, cycles=3, cycle_length=8, alpha1=0.2, alpha2=0.02, batch_size=16)
    before = _full_loss(net, x, y)
    for w in res.snapshots:
        probe = _DictNet()
        probe.load_state_dict(w.state_dict())
        assert _full_loss(probe, x, y) < before - 0.1
    assert res.loss[-4:].mean() < res.loss[:4].mean()
    # curve fit between two trained ends, the same loader
    ends = []
    for s in (1, 2):
        torch.manual_seed(s)
        m = _DictNet()
        train_classifier(m, loader, epochs=10, lr=0.2, seed=s)
        ends.append(ls.Weights.from_module(m))
    curve = C.Curve(ends[0], ends[1], n_bends=1)
    with torch.no_grad():
        curve.bends.add_(5 * torch.randn_like(curve.bends))  # a bad start, so the loss must fall
    fit = C.fit_curve(net, curve, loader, epochs=6, lr=0.2, schedule="constant", device="cpu", progress=False)
    losses = [h["loss"] for h in fit.history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_batch_without_targets_gives_one_clear_error():
    x, _ = _problem(n=16, dtype=torch.float32)
    torch.manual_seed(0)
    net = _DictNet()
    start = ls.Weights.from_module(net)
    no_labels = [{"features": x[:8]}, {"features": x[8:]}]
    with pytest.raises(BatchError, match="needs targets.*'labels'"):
        fge(net, start, no_labels, cycles=1, cycle_length=2, alpha1=0.1, alpha2=0.01)
    with pytest.raises(BatchError, match="needs targets"):
        C.fit_curve(net, C.Curve(start, start, n_bends=1), no_labels, epochs=1, device="cpu", progress=False)
    with pytest.raises(BatchError, match="cannot read a batch of type str"):
        swa(net, start, ["not a batch"], epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="not differentiable"):
        loss_of(net, None, ls.batches.read_batch({"features": x, "labels": torch.zeros(16, dtype=torch.long)}), "acc")


# ---------------------------------------------------------------------------- a causal language model
class _LM(nn.Module):
    def __init__(self, vocab=7, dim=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, input_ids):
        return self.out(self.emb(input_ids))


def test_curve_fit_with_token_loss_matches_a_hand_written_first_step():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (6, 9), generator=g)
    labels = ids.clone()
    labels[0, 5:] = -100  # padding: not counted
    data = [{"input_ids": ids, "labels": labels}]  # one batch per epoch
    torch.manual_seed(1)
    ma, mb = _LM().double(), _LM().double()
    a, b = ls.Weights.from_module(ma), ls.Weights.from_module(mb)
    curve = C.Curve(a, b, n_bends=1)
    theta = curve.bends.detach()[0].clone()
    res = C.fit_curve(ma, curve, data, epochs=2, loss="token_loss", seed=3, lr=0.5, device="cpu", progress=False)
    # oracle: t from the seeded generator, the Bezier point by hand, next-token cross-entropy
    t = torch.rand(1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    w = _bezier(a.flatten(torch.float64), theta, b.flatten(torch.float64), t)
    emb, W, bias = w[:35].view(7, 5), w[35:70].view(7, 5), w[70:]
    logits = F.embedding(ids, emb) @ W.T + bias
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert res.history[0]["loss"] == pytest.approx(float(want), rel=1e-10)
    assert res.history[1]["loss"] < res.history[0]["loss"]


# ---------------------------------------------------------------------------- evaluation and inputs
def test_ensemble_and_wa_evaluation_stream_a_loader():
    from landscape.connect.ensemble import wa_ensemble

    x, y = _problem(n=50, dtype=torch.float32)
    members = []
    for s in range(3):
        torch.manual_seed(s)
        members.append(ls.Weights.from_module(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))))
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    mem = evaluate_ensemble(model, members, (x, y), device="cpu")
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))
    got = evaluate_ensemble(model, members, loader, device="cpu")  # targets from the same pass
    assert got.acc == pytest.approx(mem.acc) and got.nll == pytest.approx(mem.nll, rel=1e-6)
    np.testing.assert_allclose(got.member_acc, mem.member_acc)
    ens = wa_ensemble(model, members, x, 2)
    ordered = DataLoader(_DictData(x, y), batch_size=16)
    r_mem, r_loader = ens.evaluate((x, y)), ens.evaluate(ordered)
    assert r_loader["acc"] == pytest.approx(r_mem["acc"]) and r_loader["nll"] == pytest.approx(r_mem["nll"])
    ens_loader = wa_ensemble(model, members, ordered, 2)  # fitted on the loader's inputs
    for k in ens.members[1]:
        torch.testing.assert_close(ens_loader.members[1][k], ens.members[1][k])


def test_first_inputs_reads_single_input_batches_and_names_what_arrived_otherwise():
    x, y = _problem(n=20, dtype=torch.float32)
    assert first_inputs((x, y)) is x
    loader = DataLoader(_DictData(x, y), batch_size=8)
    torch.testing.assert_close(first_inputs(loader, 10), x[:10])
    torch.testing.assert_close(first_inputs(loader), x)
    two = [{"input_ids": x, "attention_mask": x, "labels": y}]
    with pytest.raises(BatchError, match=r"one input tensor.*\['attention_mask', 'input_ids'\]"):
        first_inputs(two, what="weight adjustment")
