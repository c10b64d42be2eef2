"""Hessians on any data: streamed batches, dict batches, ``.logits`` outputs, token losses,
frozen and tied parameters.

Every operator is checked against an oracle formed here without landscape: dense Hessians
from ``torch.autograd.functional.hessian`` of a loss written out by hand (a plain loop over
the samples or tokens, float64), restricted to the parameters that should be selected, and
their ``torch.linalg.eigvalsh``. Streamed operators are also checked against the in-memory
operator to 1e-12.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

import landscape as ls
from landscape import hessian as H

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
METHODS = ["forward-over-reverse", "double-backward"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    return float((a - b).abs().max() / b.abs().max())


def dense(loss_of_tensors, point: dict, names: list[str]) -> torch.Tensor:
    """Hessian of ``loss_of_tensors({name: tensor})`` over the flat ``names``."""
    point = {k: v.detach().clone() for k, v in point.items()}
    shapes = [point[n].shape for n in names]
    sizes = [math.prod(s) for s in shapes]

    def loss(flat):
        tensors = dict(point)
        for name, shape, part in zip(names, shapes, torch.split(flat, sizes)):
            tensors[name] = part.view(shape)
        return loss_of_tensors(tensors)

    flat0 = torch.cat([point[n].reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat0, vectorize=True)


def mean_ce(model, x, y):
    """The oracle's dataset loss: a plain loop, one sample at a time."""

    def loss(tensors):
        total = 0.0
        for i in range(x.shape[0]):
            out = functional_call(model, tensors, (x[i : i + 1],))
            total = total + F.cross_entropy(out, y[i : i + 1], reduction="sum")
        return total / x.shape[0]

    return loss


# ---------------------------------------------------------------------------- streamed = in memory
def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double().eval()


def _bn_net() -> nn.Module:
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].weight.uniform_(0.5, 1.5)
    return model.eval()


PROBLEMS = {"mlp": (_mlp, (4,)), "bn": (_bn_net, (1, 4, 4))}


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def problem(request):
    make, shape = PROBLEMS[request.param]
    model = make()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(23, *shape, generator=g, dtype=F64), torch.randint(0, 3, (23,), generator=g)
    names = [n for n, _ in model.named_parameters()]
    Hd = dense(mean_ce(model, x, y), dict(model.state_dict()), names)
    return SimpleNamespace(model=model, x=x, y=y, H=Hd, w=ls.Weights.from_module(model))


def _streams(x, y):
    ds = TensorDataset(x, y)
    return {
        "loader-5": (DataLoader(ds, batch_size=5), None),
        "loader-10-split-3": (DataLoader(ds, batch_size=10), 3),
        "dataset-9": (ds, 9),
        "dict-list": ([{"input": x[i : i + 6], "labels": y[i : i + 6]} for i in range(0, len(x), 6)], None),
    }


@pytest.mark.parametrize("method", METHODS)
def test_streamed_equals_in_memory_and_dense(problem, method):
    V = H.random_vectors(3, problem.H.shape[0], seed=3)
    mem = H.HVP(problem.model, problem.w, (problem.x, problem.y), dtype=F64, device="cpu", method=method)
    ref = mem(V)
    assert rel(ref, V @ problem.H) < 1e-12
    for label, (data, bs) in _streams(problem.x, problem.y).items():
        op = H.HVP(problem.model, problem.w, data, batch_size=bs, dtype=F64, device="cpu", method=method)
        assert rel(op(V), ref) < 1e-12, label
        assert rel(op(V[0]), ref[0]) < 1e-12, label
        assert op.num_samples == 23 and op.loss_count == 23 and op.passes == 2, label


def test_streamed_batched_hvp_and_gradient(problem):
    pts = [problem.w, {k: v + 0.01 for k, v in problem.w.items()}]
    loader = DataLoader(TensorDataset(problem.x, problem.y), batch_size=4)
    V = H.random_vectors(2, problem.H.shape[0], seed=4)
    mem = H.BatchedHVP(problem.model, pts, (problem.x, problem.y), dtype=F64, device="cpu", method="auto")
    op = H.BatchedHVP(problem.model, pts, loader, dtype=F64, device="cpu", method="forward-over-reverse")
    assert op.vectorized
    assert rel(op(V), mem(V)) < 1e-12
    assert rel(op(V)[0], V[0] @ problem.H) < 1e-12
    loss_mem, g_mem = H.gradient(problem.model, problem.w, (problem.x, problem.y), dtype=F64, device="cpu")
    loss_str, g_str = H.gradient(problem.model, problem.w, loader, dtype=F64, device="cpu")
    assert abs(loss_str - loss_mem) < 1e-12 and rel(g_str, g_mem) < 1e-12


def test_loader_batches_are_used_as_they_come():
    model = _mlp()
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(23, 4, generator=g, dtype=F64), torch.randint(0, 3, (23,), generator=g)
    seen = []

    def forward(m, batch):
        seen.append(batch[0].shape[0])
        return m(batch[0])

    loader = DataLoader(TensorDataset(x, y), batch_size=10)
    op = H.HVP(model, ls.Weights.from_module(model), loader, dtype=F64, device="cpu", forward=forward)
    op(torch.ones(op.n, dtype=F64))
    assert op.batch_size >= 8 and seen[-3:] == [10, 10, 3]  # the default never splits these
    seen.clear()
    H.HVP(model, ls.Weights.from_module(model), loader, batch_size=4, dtype=F64, device="cpu", forward=forward)(
        torch.ones(op.n, dtype=F64)
    )
    assert seen == [4, 4, 2, 4, 4, 2, 3]


# ---------------------------------------------------------------------------- dict batches, .logits
class Namespaced(nn.Module):
    """Takes keyword inputs, returns an object with ``.logits`` (or a dict)."""

    def __init__(self, as_dict: bool = False):
        super().__init__()
        torch.manual_seed(6)
        self.body = nn.Linear(3, 5)
        self.head = nn.Linear(5, 4)
        self.as_dict = as_dict

    def forward(self, features, scale=None):
        h = torch.tanh(self.body(features))
        if scale is not None:
            h = h * scale[:, None]
        logits = self.head(h)
        return {"logits": logits, "hidden": h} if self.as_dict else SimpleNamespace(logits=logits, hidden=h)


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_dict_batches_and_logits_outputs_match_dense(as_dict, method):
    model = Namespaced(as_dict).double().eval()
    g = torch.Generator().manual_seed(7)
    x = torch.randn(11, 3, generator=g, dtype=F64)
    s = torch.rand(11, generator=g, dtype=F64) + 0.5
    y = torch.randint(0, 4, (11,), generator=g)
    batches = [{"features": x[i : i + 4], "scale": s[i : i + 4], "labels": y[i : i + 4]} for i in range(0, 11, 4)]
    names = [n for n, _ in model.named_parameters()]

    def loss(tensors):  # a plain loop over samples
        total = 0.0
        for i in range(11):
            h = torch.tanh(x[i] @ tensors["body.weight"].T + tensors["body.bias"]) * s[i]
            total = total + F.cross_entropy((h @ tensors["head.weight"].T + tensors["head.bias"])[None], y[i : i + 1])
        return total / 11

    Hd = dense(loss, dict(model.state_dict()), names)
    V = H.random_vectors(2, Hd.shape[0], seed=8)
    op = H.HVP(model, ls.Weights.from_module(model), batches, dtype=F64, device="cpu", method=method)
    assert rel(op(V), V @ Hd) < 1e-12
    # a user forward on tuple batches gives the same operator
    tuples = [(x[i : i + 5], y[i : i + 5], s[i : i + 5]) for i in range(0, 11, 5)]
    op2 = H.HVP(
        model,
        ls.Weights.from_module(model),
        tuples,
        dtype=F64,
        device="cpu",
        method=method,
        forward=lambda m, b: m(features=b[0], scale=b[2]),
    )
    assert rel(op2(V), V @ Hd) < 1e-12


# ---------------------------------------------------------------------------- frozen parameters
def test_frozen_parameters_are_left_out_by_default():
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double().eval()
    model[0].requires_grad_(False)
    model[4].bias.requires_grad_(False)
    g = torch.Generator().manual_seed(10)
    x, y = torch.randn(19, 4, generator=g, dtype=F64), torch.randint(0, 3, (19,), generator=g)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    Hd = dense(mean_ce(model, x, y), dict(model.state_dict()), trainable)
    top = float(torch.linalg.eigvalsh(Hd)[-1])
    w = ls.Weights.from_module(model)
    op = H.HVP(model, w, (x, y), dtype=F64, device="cpu")
    assert op.n == sum(p.numel() for p in model.parameters() if p.requires_grad) == Hd.shape[0] == 50
    assert op.names == trainable == ["2.weight", "2.bias", "4.weight"]
    assert op.selection["rule"] == "requires_grad" and op.selection["names"] == trainable
    assert op.selection["numel"] == 50 and op.selection == H.parameter_selection(model)
    res = H.lanczos(op, tol=1e-10, max_iter=op.n)
    assert abs(res.lambda_max - top) < 1e-9 * abs(top)
    assert res.selection == op.selection  # results record the selection
    assert H.extreme_eigenvalues(op, tol=1e-6).selection == op.selection
    assert H.hutchinson(op, samples=2).selection == op.selection
    assert H.slq(op, probes=2, steps=4).selection == op.selection
    assert H.power_iteration(op, k=1, max_iter=5).selection == op.selection
    # explicit params still take frozen ones, and say so
    given = H.HVP(model, w, (x, y), params=["0.weight", "4.bias"], dtype=F64, device="cpu")
    assert given.n == 24 + 3 and given.selection["rule"] == "given"
    all_frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires grad"):
        H.HVP(all_frozen, ls.Weights.from_module(all_frozen), (x[:, :2], y % 2))


def test_selection_record_is_short_for_many_names():
    rec = H.hvp.selection_record([f"layer{i}.weight" for i in range(100)], "given", 1000)
    assert rec["count"] == 100 and "names" not in rec and len(rec["sha256"]) == 16


# ---------------------------------------------------------------------------- token loss
class TinyLM(nn.Module):
    def __init__(self, vocab: int = 6, dim: int = 3):
        super().__init__()
        torch.manual_seed(11)
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, input_ids, attention_mask=None):
        return self.head(torch.tanh(self.emb(input_ids)))


def _lm_batches(vocab: int = 6):
    g = torch.Generator().manual_seed(12)
    batches = []
    for n, T, lengths in ((3, 5, (5, 3, 4)), (2, 4, (2, 4))):
        ids = torch.randint(0, vocab, (n, T), generator=g)
        mask = torch.zeros(n, T, dtype=torch.long)
        for i, L in enumerate(lengths):
            mask[i, :L] = 1
        labels = ids.masked_fill(mask == 0, -100)
        ids = ids.masked_fill(mask == 0, 0)  # padding token
        labels[0, 2] = -100  # an ignored target inside a sequence
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


@pytest.mark.parametrize("method", METHODS)
def test_token_loss_hvp_matches_a_dense_token_average(method):
    model = TinyLM().double().eval()
    batches = _lm_batches()

    def loss(tensors):  # next-token cross-entropy averaged over counted tokens, by a plain loop
        total, count = 0.0, 0
        for b in batches:
            for i in range(b["input_ids"].shape[0]):
                for t in range(b["input_ids"].shape[1] - 1):
                    target = int(b["labels"][i, t + 1])
                    if target == -100 or int(b["attention_mask"][i, t + 1]) == 0:
                        continue
                    h = torch.tanh(tensors["emb.weight"][b["input_ids"][i, t]])
                    logits = h @ tensors["head.weight"].T + tensors["head.bias"]
                    total = total + F.cross_entropy(logits[None], torch.tensor([target]))
                    count += 1
        loss.count = count
        return total / count

    names = [n for n, _ in model.named_parameters()]
    Hd = dense(loss, dict(model.state_dict()), names)
    V = H.random_vectors(2, Hd.shape[0], seed=13)
    op = H.HVP(model, ls.Weights.from_module(model), batches, loss="token_loss", dtype=F64, device="cpu", method=method)
    assert rel(op(V), V @ Hd) < 1e-12
    assert op.loss_count == loss.count == 12 and op.loss_name == "token_loss"
    # a Metric object works the same
    op2 = H.HVP(model, ls.Weights.from_module(model), batches, loss=ls.metrics.resolve_metrics(["token_loss"])[0])
    assert rel(op2(V.float()).double(), V @ Hd) < 1e-5


# ---------------------------------------------------------------------------- tied weights
class Tied(nn.Module):
    def __init__(self, vocab: int = 5, dim: int = 3):
        super().__init__()
        torch.manual_seed(14)
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.emb(ids)))


@pytest.mark.parametrize("method", METHODS)
def test_tied_weights_are_one_parameter(method):
    model = Tied().double().eval()
    g = torch.Generator().manual_seed(15)
    ids, y = torch.randint(0, 5, (17,), generator=g), torch.randint(0, 5, (17,), generator=g)
    W0 = model.emb.weight.detach().clone()

    def loss(tensors):  # the loss as a function of the one shared tensor W
        W = tensors["W"]
        total = 0.0
        for i in range(17):
            total = total + F.cross_entropy((torch.tanh(W[ids[i]]) @ W.T)[None], y[i : i + 1])
        return total / 17

    Hd = dense(loss, {"W": W0}, ["W"])
    op = H.HVP(model, ls.Weights.from_module(model), (ids, y), dtype=F64, device="cpu", method=method)
    assert op.n == W0.numel() == Hd.shape[0] and op.names == ["emb.weight"]
    V = H.random_vectors(2, op.n, seed=16)
    assert rel(op(V), V @ Hd) < 1e-12
    top = float(torch.linalg.eigvalsh(Hd)[-1])
    assert abs(H.lanczos(op, tol=1e-10, max_iter=op.n).lambda_max - top) < 1e-9 * abs(top)
    # naming the alias selects the tied tensor; streamed batches agree
    alias = H.HVP(model, ls.Weights.from_module(model), [(ids[:9], y[:9]), (ids[9:], y[9:])], params=["head.weight"])
    assert alias.names == ["emb.weight"] and rel(alias(V.float()).double(), V @ Hd) < 1e-5
