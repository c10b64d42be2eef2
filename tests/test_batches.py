"""Any batch, any output: DataLoaders, dict batches, logits adapters, token metrics, ties.

Oracles: a float64 per-point loop over the samples with the model loaded at each point
(``load_state_dict``), and token losses summed token by token in Python.
"""

import math
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape as ls
from landscape.batches import BatchError, as_source, model_output, read_batch
from landscape.metrics import MetricError


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _convnet(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3)
    ).double()
    with torch.no_grad():
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m


def _line(models, ts=(0.0, 0.3, 0.5, 1.0, 1.7)):
    ws = [ls.Weights.from_module(m) for m in models]
    return ls.PointSet.from_weights(ws, [[1 - t, t] for t in ts])


def _oracle(model, pts, samples, metric):
    """Float64 loop: ``metric(model_at_point, sample) -> (sum, count)`` summed over samples."""
    out = []
    for k in range(pts.K):
        m = type(model)() if False else model
        m.load_state_dict(pts.point(k))
        m.eval()
        s = c = 0.0
        with torch.no_grad():
            for sample in samples:
                a, b = metric(m, sample)
                s, c = s + float(a), c + float(b)
        out.append(s / c)
    return np.array(out)


def _ce_acc(m, sample):
    x, y = sample
    out = m(x[None])[0]
    return -torch.log_softmax(out, -1)[y], 1.0


def _acc(m, sample):
    x, y = sample
    return float(m(x[None])[0].argmax() == y), 1.0


# ---------------------------------------------------------------------------- batch rules
def test_read_batch_rules():
    x, y = torch.randn(4, 3), torch.arange(4)
    b = read_batch((x, y))
    assert b.args[0] is x and b.target is y and b.count == 4 and not b.kwargs
    b = read_batch([x, y, torch.zeros(4)])
    assert b.target is y and b.count == 4
    b = read_batch(x)
    assert b.target is None and b.count == 4
    ids = torch.zeros(3, 5, dtype=torch.long)
    b = read_batch({"input_ids": ids, "attention_mask": torch.ones(3, 5), "labels": ids})
    assert sorted(b.kwargs) == ["attention_mask", "input_ids"] and b.target is ids and b.count == 3
    b = read_batch({"pixel_values": x, "label": y})
    assert list(b.kwargs) == ["pixel_values"] and b.target is y
    with pytest.raises(BatchError, match=r"cannot read a batch of type str"):
        read_batch("abc")
    with pytest.raises(BatchError, match=r"dict with keys \['a', 'b'\].*no tensor"):
        read_batch({"a": 1, "b": "x"})


def test_model_output_rules():
    t = torch.randn(2, 3)
    assert model_output(t) is t
    assert model_output((t, None)) is t
    assert model_output({"logits": t, "loss": None}) is t
    assert model_output(types.SimpleNamespace(logits=t)) is t
    with pytest.raises(BatchError, match=r"model output of type dict with keys \['hidden'\] has no logits"):
        model_output({"hidden": t})


def test_data_arguments_refused_clearly():
    with pytest.raises(BatchError, match="one-shot iterator"):
        as_source(iter([(torch.randn(2, 3), torch.zeros(2))]))
    with pytest.raises(BatchError, match="is not a data set"):
        as_source(torch.randn(3, 4))
    with pytest.raises(ls.DataError, match="4 inputs but 5 targets"):
        as_source((torch.randn(4, 2), torch.zeros(5)))


# ---------------------------------------------------------------------------- streamed = in memory
@pytest.mark.parametrize("path", ["fused", "loop", "vmap"])
def test_streamed_equals_in_memory_mlp(path):
    torch.manual_seed(0)
    x, y = torch.randn(53, 5, dtype=torch.float64), torch.randint(0, 3, (53,))
    pts = _line([_mlp(1), _mlp(2)])
    kw = dict(metrics=("loss", "acc", "err"), precision="fp64", path=path, progress=False)
    ref = ls.evaluate(_mlp(0), pts, (x, y), **kw)
    loader = DataLoader(TensorDataset(x, y), batch_size=7)
    dicts = [{"x": x[i : i + 10], "labels": y[i : i + 10]} for i in range(0, 53, 10)]

    class DictMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp(0)

        def forward(self, x):
            return {"logits": self.net(x)}

    dpts = ls.PointSet(pts.basis, pts.coeffs, ls.Layout.from_module(DictMLP()), extras={})
    kw_dict = dict(kw, path="loop" if path == "fused" else path)
    for data, model, points, opts in (
        (loader, _mlp(0), pts, kw),
        (TensorDataset(x, y), _mlp(0), pts, dict(kw, batch_size=16)),
        (dicts, DictMLP(), dpts, kw_dict),
    ):
        res = ls.evaluate(model, points, data, **opts)
        for name in ("loss", "acc", "err"):
            np.testing.assert_allclose(res[name], ref[name], rtol=1e-12, atol=1e-14)
    oracle = _oracle(_mlp(0), pts, list(zip(x, y, strict=True)), _ce_acc)
    np.testing.assert_allclose(ref["loss"], oracle, rtol=1e-12)
    np.testing.assert_allclose(ref["acc"], _oracle(_mlp(0), pts, list(zip(x, y, strict=True)), _acc), rtol=1e-12)


def test_streamed_equals_in_memory_batchnorm():
    torch.manual_seed(1)
    x, y = torch.randn(45, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (45,))
    pts = _line([_convnet(1), _convnet(2)])
    kw = dict(metrics=("loss", "acc"), precision="fp64", path="loop", progress=False)
    # recompute-exact: any batching gives the statistics of the whole set
    ref = ls.evaluate(_convnet(0), pts, (x, y), bn="recompute-exact", **kw)
    got = ls.evaluate(_convnet(0), pts, DataLoader(TensorDataset(x, y), batch_size=11), bn="recompute-exact", **kw)
    for name in ("loss", "acc"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12)
    # recompute: equal when the loader yields the batches the in-memory path uses (bn_batch_size)
    ref = ls.evaluate(_convnet(0), pts, (x, y), bn="recompute", bn_batch_size=8, **kw)
    got = ls.evaluate(_convnet(0), pts, DataLoader(TensorDataset(x, y), batch_size=8), bn="recompute", **kw)
    for name in ("loss", "acc"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12)
    # and it is not what the whole-set statistics give (the test can fail)
    exact = ls.evaluate(_convnet(0), pts, (x, y), bn="recompute-exact", **kw)
    assert np.abs(exact["loss"] - got["loss"]).max() > 1e-6


class _CountingLoader:
    """A re-iterable of batches that counts how often each batch is read."""

    def __init__(self, x, y, bs):
        self.batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]
        self.reads = [0] * len(self.batches)

    def __iter__(self):
        for i, b in enumerate(self.batches):
            self.reads[i] += 1
            yield b


def test_each_batch_read_once_per_chunk_and_passes_reported():
    torch.manual_seed(2)
    x, y = torch.randn(40, 5, dtype=torch.float64), torch.randint(0, 3, (40,))
    pts = _line([_mlp(1), _mlp(2)], ts=np.linspace(-1, 2, 12))
    data = _CountingLoader(x, y, 9)
    res = ls.evaluate(_mlp(0), pts, data, precision="fp64", points_per_pass=4, path="loop", progress=False)
    assert res.points_per_pass == 4
    assert res.info["data_passes"] == 3  # 12 points, 4 per pass
    assert data.reads == [4, 3, 3, 3, 3]  # the first batch once more, for the memory probe
    ref = ls.evaluate(_mlp(0), pts, (x, y), precision="fp64", path="loop", progress=False)
    np.testing.assert_allclose(res["loss"], ref["loss"], rtol=1e-12)


# ---------------------------------------------------------------------------- dicts, .logits, forward
class _HFStyle(nn.Module):
    """Takes input_ids and attention_mask as keywords, returns an object with .logits."""

    def __init__(self, vocab=11, d=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.out = nn.Linear(d, 3)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask[..., None]
        pooled = h.sum(1) / attention_mask.sum(1, keepdim=True)
        return types.SimpleNamespace(logits=self.out(pooled), loss=None)


def _hf_batches(seed, n=23, bs=5, T=6):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (n, T), generator=g)
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    labels = torch.randint(0, 3, (n,), generator=g)
    return [
        {"input_ids": ids[i : i + bs], "attention_mask": mask[i : i + bs], "labels": labels[i : i + bs]}
        for i in range(0, n, bs)
    ]


def test_dict_batches_and_logits_objects_against_loop():
    torch.manual_seed(3)
    models = [_HFStyle().double() for _ in range(2)]
    pts = _line(models)
    batches = _hf_batches(0)
    for path in ("loop", "vmap"):
        res = ls.evaluate(
            _HFStyle().double(), pts, batches, ("loss", "acc"), precision="fp64", path=path, progress=False
        )
        samples = [
            ({k: v[i : i + 1] for k, v in b.items() if k != "labels"}, b["labels"][i])
            for b in batches
            for i in range(len(b["labels"]))
        ]

        def ce(m, s):
            out = m(**s[0]).logits[0]
            return -torch.log_softmax(out, -1)[s[1]], 1

        np.testing.assert_allclose(res["loss"], _oracle(_HFStyle().double(), pts, samples, ce), rtol=1e-12)
    # a user forward sees the raw batch; here it drops the mask (so the loss changes)
    fwd = ls.evaluate(
        _HFStyle().double(),
        pts,
        batches,
        ("loss",),
        precision="fp64",
        forward=lambda m, b: m(b["input_ids"], torch.ones_like(b["attention_mask"])),
        progress=False,
    )
    assert np.abs(fwd["loss"] - res["loss"]).max() > 1e-6
    samples1 = [
        ({"input_ids": b["input_ids"][i : i + 1], "attention_mask": torch.ones(1, 6, dtype=torch.long)}, b["labels"][i])
        for b in batches
        for i in range(len(b["labels"]))
    ]
    np.testing.assert_allclose(fwd["loss"], _oracle(_HFStyle().double(), pts, samples1, ce), rtol=1e-12)


# ---------------------------------------------------------------------------- token metrics
class _TinyLM(nn.Module):
    def __init__(self, vocab=13, d=8, tie=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.mid = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.head.weight = self.emb.weight

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.head(torch.tanh(self.mid(self.emb(input_ids))))}


def _lm_batches(seed, n=14, bs=4, T=7, vocab=13):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, bs):
        k = min(bs, n - i)
        ids = torch.randint(0, vocab, (k, T), generator=g)
        lengths = torch.randint(2, T + 1, (k,), generator=g)
        mask = (torch.arange(T)[None] < lengths[:, None]).long()
        labels = ids.clone()
        labels[mask == 0] = -100
        labels[:, 3][torch.rand(k, generator=g) < 0.3] = -100  # some ignored positions inside
        ids = ids * mask  # padding id 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def _token_oracle(model, pts, batches):
    """Per-token float64 loop: next-token loss, perplexity and accuracy at every point."""
    loss, acc = [], []
    for k in range(pts.K):
        model.load_state_dict(pts.point(k))
        s = c = a = 0.0
        with torch.no_grad():
            for b in batches:
                logits = model(b["input_ids"], b["attention_mask"])["logits"]
                for r in range(logits.shape[0]):
                    for i in range(logits.shape[1] - 1):
                        target = int(b["labels"][r, i + 1])
                        if target == -100 or int(b["attention_mask"][r, i + 1]) == 0:
                            continue
                        lp = torch.log_softmax(logits[r, i], -1)
                        s -= float(lp[target])
                        a += float(int(logits[r, i].argmax()) == target)
                        c += 1
        loss.append(s / c)
        acc.append(a / c)
    return np.array(loss), np.array(acc)


@pytest.mark.parametrize("tie", [False, True])
def test_token_metrics_on_padded_batches(tie):
    torch.manual_seed(4)
    models = [_TinyLM(tie=tie).double() for _ in range(2)]
    pts = _line(models)
    batches = _lm_batches(0)
    res = ls.evaluate(
        _TinyLM(tie=tie).double(),
        pts,
        batches,
        ("token_loss", "perplexity", "token_acc"),
        precision="fp64",
        progress=False,
    )
    loss, acc = _token_oracle(_TinyLM(tie=tie).double(), pts, batches)
    np.testing.assert_allclose(res["token_loss"], loss, rtol=1e-9)
    np.testing.assert_allclose(res["perplexity"], np.exp(loss), rtol=1e-9)
    np.testing.assert_allclose(res["token_acc"], acc, rtol=1e-9)
    # the average is over tokens, not over batches: a mean of batch means differs
    rebatched = [{k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(len(b["labels"]))]
    again = ls.evaluate(_TinyLM(tie=tie).double(), pts, rebatched, ("token_loss",), precision="fp64", progress=False)
    np.testing.assert_allclose(again["token_loss"], loss, rtol=1e-9)


def test_nonfinite_logits_at_ignored_positions_do_not_count():
    class NaNAtPad(_TinyLM):
        def forward(self, input_ids, attention_mask=None, pad=None):
            pad = attention_mask if pad is None else pad
            logits = super().forward(input_ids)["logits"]
            return {"logits": torch.where(pad[..., None] == 0, float("nan"), logits)}

    torch.manual_seed(5)
    pts = _line([NaNAtPad().double(), NaNAtPad().double()])
    batches = _lm_batches(1)
    res = ls.evaluate(NaNAtPad().double(), pts, batches, ("token_loss",), precision="fp64", progress=False)
    assert np.isfinite(res["token_loss"]).all()
    # the same NaNs at positions that are counted (no attention_mask, labels everywhere) show
    bad = [{"input_ids": b["input_ids"], "pad": b["attention_mask"], "labels": b["input_ids"]} for b in batches]
    res_bad = ls.evaluate(NaNAtPad().double(), pts, bad, ("token_loss",), precision="fp64", progress=False)
    assert np.isnan(res_bad["token_loss"]).all()


def test_sequence_outputs_with_loss_count_positions():
    """``loss`` on [n, T, V] outputs and [n, T] targets: token classification, -100 ignored."""
    torch.manual_seed(6)
    pts = _line([_TinyLM().double(), _TinyLM().double()])
    batches = _lm_batches(2)
    res = ls.evaluate(_TinyLM().double(), pts, batches, ("loss", "acc"), precision="fp64", progress=False)
    for k in range(pts.K):
        m = _TinyLM().double()
        m.load_state_dict(pts.point(k))
        s = c = 0.0
        for b in batches:
            logits = m(b["input_ids"])["logits"]
            keep = b["labels"] != -100
            s += float(nn.functional.cross_entropy(logits[keep], b["labels"][keep], reduction="sum").detach())
            c += int(keep.sum())
        assert math.isclose(res["loss"][k], s / c, rel_tol=1e-12)


def test_targets_that_do_not_match_outputs():
    torch.manual_seed(7)
    m = _mlp(0)
    w = ls.Weights.from_module(m)
    x = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises(MetricError, match=r"outputs \[6, 3\] and targets \[6, 2\] do not match"):
        ls.evaluate(m, w, (x, torch.zeros(6, 2, dtype=torch.long)), ("loss",), precision="fp64", progress=False)
    with pytest.raises(MetricError, match="needs integer class targets"):
        ls.evaluate(m, w, (x, torch.zeros(6)), ("acc",), precision="fp64", path="loop", progress=False)
    with pytest.raises(MetricError, match="needs targets but the batch has none"):
        ls.evaluate(m, w, [x[:2], x[2:4], x[4:]], ("loss",), precision="fp64", progress=False)
    with pytest.raises(BatchError, match="has no logits"):
        ls.evaluate(m, w, (x, torch.zeros(6, dtype=torch.long)), forward=lambda mm, b: {"h": mm(b[0])}, progress=False)


def test_batch_metric_sees_the_batch():
    torch.manual_seed(8)
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    wts = torch.rand(20, dtype=torch.float64)
    batches = [{"x": x[i : i + 6], "w": wts[i : i + 6], "labels": y[i : i + 6]} for i in range(0, 20, 6)]

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _mlp(0)

        def forward(self, x, w):
            return self.net(x)

    def weighted_err(out, batch):
        w = batch.get("w")
        return ((out.argmax(-1) != batch.target).double() * w).sum(), w.sum()

    pts = _line([M(), M()])
    res = ls.evaluate(M(), pts, batches, (ls.metrics.batch_metric(weighted_err),), precision="fp64", progress=False)
    for k in range(pts.K):
        m = M()
        m.load_state_dict(pts.point(k))
        wrong = (m(x, wts).argmax(-1) != y).double()
        assert math.isclose(res["weighted_err"][k], float((wrong * wts).sum() / wts.sum()), rel_tol=1e-12)


# ---------------------------------------------------------------------------- tied parameters
def test_tied_layout_weights_and_points():
    torch.manual_seed(9)
    m = _TinyLM(tie=True)
    layout = ls.Layout.from_module(m)
    assert layout.aliases() == {"head.weight": "emb.weight"}
    assert layout.size == sum(p.numel() for p in m.parameters())  # the shared tensor once
    w = ls.Weights.from_module(m)
    assert w["head.weight"] is w["emb.weight"]
    plane = ls.directions.random_plane(w, seed=3)
    for d in plane.basis[1:]:
        assert d["head.weight"] is d["emb.weight"]
    pts = plane.grid(np.array([-1.0, 0.5]), np.array([0.0, 2.0]))
    for k in range(pts.K):
        p = pts.point(k)
        assert p["head.weight"] is p["emb.weight"]
    assert "head.weight" not in pts.tensors([0])


def test_tied_plane_and_curve_hold_the_tie():
    torch.manual_seed(10)
    a, b = _TinyLM(tie=True).double(), _TinyLM(tie=True).double()
    wa, wb = ls.Weights.from_module(a), ls.Weights.from_module(b)
    batches = _lm_batches(3)
    plane = ls.directions.random_plane(wa, seed=1)
    res = ls.compute_surface(
        _TinyLM(tie=True).double(),
        plane,
        [-0.5, 0.5],
        [0.0, 1.0],
        splits={"test": batches},
        metrics=("token_loss",),
        precision="fp64",
        progress=False,
    )
    pts = plane.grid(np.array([-0.5, 0.5]), np.array([0.0, 1.0]))
    loss, _ = _token_oracle(_TinyLM(tie=True).double(), pts, batches)
    np.testing.assert_allclose(res["test_token_loss"].reshape(-1), loss, rtol=1e-12)
    # an untied oracle (head left at the base model's value) would differ: the tie matters
    untied = _TinyLM(tie=False).double()
    sd = pts.point(3)
    untied.load_state_dict({**sd, "head.weight": wa["emb.weight"].clone()})
    assert not torch.equal(untied.head.weight, sd["emb.weight"])
    # a quadratic Bezier curve through the tied models
    curve = ls.curves.Curve(wa, wb, kind="bezier", n_bends=1) if hasattr(ls.curves, "Curve") else None
    if curve is not None:
        ctrl = curve.control_points()
        assert all(c["head.weight"] is c["emb.weight"] for c in ctrl)


def test_checkpoint_may_omit_a_tied_copy(tmp_path):
    torch.manual_seed(11)
    m = _TinyLM(tie=True)
    sd = {k: v for k, v in m.state_dict().items() if k != "head.weight"}
    torch.save(sd, tmp_path / "omit.pt")
    w = ls.load_checkpoint(tmp_path / "omit.pt", _TinyLM(tie=True))
    assert torch.equal(w["head.weight"], m.emb.weight.detach()) and w["head.weight"] is w["emb.weight"]
    torch.save(m.state_dict(), tmp_path / "both.pt")
    assert torch.equal(ls.load_checkpoint(tmp_path / "both.pt", _TinyLM(tie=True))["head.weight"], m.head.weight)
    bad = dict(m.state_dict())
    bad["head.weight"] = bad["head.weight"] + 1
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ls.CheckpointError, match="different values for 'head.weight' and 'emb.weight'"):
        ls.load_checkpoint(tmp_path / "bad.pt", _TinyLM(tie=True))


def test_tied_curve_fit_holds_the_tie():
    torch.manual_seed(12)
    a, b = _TinyLM(tie=True).double(), _TinyLM(tie=True).double()
    wa, wb = ls.Weights.from_module(a), ls.Weights.from_module(b)
    curve = ls.curves.Curve(wa, wb, n_bends=1)
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    tensors = curve.tensors_at(t)
    assert "head.weight" not in tensors and tensors["emb.weight"].shape == (2, 13, 8)
    pts = curve.points([0.0, 0.3, 1.0])
    for k in range(3):
        p = pts.point(k)
        assert p["head.weight"] is p["emb.weight"]
    # the curve loss goes through functional_call with the tie: equal to the model at that point
    m = _TinyLM(tie=True).double()
    m.load_state_dict(pts.point(1))
    batch = _lm_batches(4)[0]
    direct = m(batch["input_ids"])["logits"]
    work = _TinyLM(tie=True).double()
    via = torch.func.vmap(lambda p: torch.func.functional_call(work, p, (batch["input_ids"],))["logits"])(
        curve.tensors_at(torch.tensor([0.3], dtype=torch.float64))
    )
    torch.testing.assert_close(via[0], direct, rtol=1e-12, atol=1e-12)
