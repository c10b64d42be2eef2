"""Non-finite values: NaN and infinity in inputs and outputs, on every execution path.

The oracle is plain PyTorch in float64, one point at a time, with each point's weights
materialised: what the kernels compute must have the same NaN and infinity pattern (and agree
elsewhere), and the metrics follow one policy (docs/api.md, "Non-finite values").
"""

import importlib

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import landscape as ls
import landscape.ops as ops

bl_module = importlib.import_module("landscape.ops.batched_linear")

# NaN results are what most tests here ask for; the tests of the warning catch it themselves
pytestmark = pytest.mark.filterwarnings("ignore::landscape.metrics.NonFiniteWarning")

PATHS = ["fused", "loop", "vmap"]
ACTS = {0: lambda t: t, 1: torch.relu, 2: torch.tanh}


def assert_same_nonfinite(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    """NaN where ``want`` has NaN, +inf and -inf where it has them, close elsewhere."""
    got, want = got.double(), want.double()
    assert torch.equal(torch.isnan(got), torch.isnan(want)), "NaN positions differ"
    assert torch.equal(torch.isposinf(got), torch.isposinf(want)), "+inf positions differ"
    assert torch.equal(torch.isneginf(got), torch.isneginf(want)), "-inf positions differ"
    finite = torch.isfinite(want)
    torch.testing.assert_close(got[finite], want[finite], rtol=rtol, atol=rtol)


def nonfinite_inputs(n: int, d: int, dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    x[1, 2] = float("nan")
    x[4, 0] = float("inf")
    x[6, 3] = float("-inf")
    x[9, 1] = float("inf")
    x[9, 2] = float("-inf")
    return x


def point_weights(basis: torch.Tensor, coeffs: torch.Tensor) -> list[torch.Tensor]:
    """float64 weights of every point, summed over the non-zero coefficients."""
    out = []
    for c in coeffs.double():
        out.append(sum(float(c[j]) * basis[j].double() for j in range(len(c)) if c[j] != 0))
    return out


# ---------------------------------------------------------------------------- 1. the ops
@pytest.fixture(params=[True, False], ids=["kernel", "reference"])
def use_extension(request, monkeypatch):
    if request.param and not ops.extension_available():
        pytest.skip("the compiled extension is not built")
    monkeypatch.setattr(bl_module, "_USE_EXTENSION", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", [0, 1, 2])
@pytest.mark.parametrize("J", [3, 2])
def test_fused_mlp2_nonfinite_inputs_as_torch(use_extension, dtype, activation, J):
    g = torch.Generator().manual_seed(J + 10 * activation)
    N, d, H, n_out = 13, 5, 21, 4  # 21 hidden units: full AVX2 vectors and a scalar tail
    x = nonfinite_inputs(N, d, dtype)
    w1, b1 = torch.randn(J, H, d, generator=g, dtype=dtype), torch.randn(J, H, generator=g, dtype=dtype)
    w2, b2 = torch.randn(J, n_out, H, generator=g, dtype=dtype), torch.randn(J, n_out, generator=g, dtype=dtype)
    eye = torch.eye(J, dtype=dtype)
    coeffs = torch.cat([eye, torch.randn(3, J, generator=g, dtype=dtype)])  # single-basis rows too
    got = ops.fused_mlp2(x, w1, b1, w2, b2, coeffs, activation)
    want = []
    for W1, B1, W2, B2 in zip(*(point_weights(t, coeffs) for t in (w1, b1, w2, b2)), strict=True):
        want.append(ACTS[activation](x.double() @ W1.T + B1) @ W2.T + B2)
    want = torch.stack(want)
    assert torch.isnan(want[:, 1]).all()  # the NaN input
    if activation == 2:  # tanh saturates: a sample with one infinite input has finite outputs
        assert torch.isfinite(want[:, 4]).all()
    assert_same_nonfinite(got, want, rtol=1e-4 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("per_point", [False, True], ids=["shared", "per-point"])
def test_batched_linear_nonfinite_inputs_as_torch(use_extension, dtype, per_point):
    g = torch.Generator().manual_seed(3)
    J, N, d, n_out = 3, 11, 5, 6
    w, b = torch.randn(J, n_out, d, generator=g, dtype=dtype), torch.randn(J, n_out, generator=g, dtype=dtype)
    coeffs = torch.cat([torch.eye(J, dtype=dtype), torch.randn(2, J, generator=g, dtype=dtype)])
    K = coeffs.shape[0]
    x = nonfinite_inputs(N, d, dtype)
    x = torch.stack([nonfinite_inputs(N, d, dtype, seed=k) for k in range(K)]) if per_point else x
    got = ops.batched_linear(x, w, b, coeffs)
    want = []
    for k, (W, B) in enumerate(zip(point_weights(w, coeffs), point_weights(b, coeffs), strict=True)):
        xk = x[k] if per_point else x
        want.append(torch.tanh(xk.double() @ W.T + B))  # tanh: where inf and NaN differ in kind
    want = torch.stack(want)
    assert_same_nonfinite(torch.tanh(got), want, rtol=1e-4 if dtype == torch.float32 else 1e-10)
    # sample 4 has one infinite input: tanh of its infinite outputs is finite; sample 1 is NaN
    assert torch.isfinite(want[:, 4]).all() and torch.isnan(want[:, 1]).all()


# ---------------------------------------------------------------------------- 1. the engine paths
def make_mlp(act: type[nn.Module], depth: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 16), act()]
    if depth == 3:
        layers += [nn.Linear(16, 16), act()]
    return nn.Sequential(*layers, nn.Linear(16, 3))


def plane(act, depth, coeffs) -> tuple[nn.Module, ls.PointSet]:
    models = [make_mlp(act, depth, s) for s in range(3)]
    basis = [ls.Weights.from_module(m) for m in models]
    return models[0], ls.PointSet.from_weights(basis, coeffs)


COEFFS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.3, -0.4, 1.1]]


def oracle_outputs(model: nn.Module, points: ls.PointSet, x: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch in float64, point by point: ``Tensor[K, N, C]``."""
    m = model.double()
    outs = []
    for k in range(points.K):
        w = {n: t[0].double() for n, t in points.tensors([k], dtype=torch.float64).items()}
        outs.append(functional_call(m, w, (x.double(),)))
    return torch.stack(outs)


def finite_rows(out, batch):
    """A metric whose value encodes which samples have finite outputs (bit i: sample i)."""
    bits = torch.isfinite(out).all(-1).double() * 2.0 ** torch.arange(out.shape[0], dtype=torch.float64)
    return bits.sum(), 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh], ids=["relu", "tanh"])
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_paths_give_torch_nonfinite_pattern(path, act, depth, precision):
    model, points = plane(act, depth, COEFFS)
    x = nonfinite_inputs(12, 4, torch.float32)
    y = torch.arange(12) % 3
    res = ls.evaluate(
        model,
        points,
        (x, y),
        [ls.metrics.batch_metric(finite_rows, "rows")],
        path=path,
        precision=precision,
        progress=False,
    )
    assert res.path == path
    want = oracle_outputs(model, points, x)
    want_rows = (torch.isfinite(want).all(-1).double() * 2.0 ** torch.arange(12, dtype=torch.float64)).sum(1)
    np.testing.assert_array_equal(res["rows"], want_rows.numpy())
    assert torch.isnan(want[:, 1]).all()  # the NaN input
    if act is nn.Tanh:  # tanh saturates: a sample with one infinite input has finite outputs
        assert torch.isfinite(want[:, [4, 6]]).all()


@pytest.mark.parametrize("path", PATHS)
def test_nan_input_gives_nan_loss_on_every_path(path):
    """The report's case: one NaN in x; fused gave a finite loss, loop and vmap NaN."""
    torch.manual_seed(0)
    m = ls.build_model("mlp", {"in_features": 4, "widths": [16], "num_classes": 3})
    x = torch.randn(32, 4)
    x[3, 1] = float("nan")
    y = torch.randint(0, 3, (32,))
    w = ls.Weights.from_module(m)
    res = ls.evaluate(m, [w, w], (x, y), ["loss"], path=path, progress=False)
    assert np.isnan(res["loss"]).all()


# ---------------------------------------------------------------------------- 2. the metrics
def oracle_class_metrics(outs: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
    """Mean cross-entropy and accuracy per point by a float64 loop over the counted rows of
    ``outs[K, m, C]`` (targets ``y[m]``, ``-100`` and ``mask == 0`` not counted): NaN where a
    counted row is not finite."""
    outs = outs.double()
    loss, acc = [], []
    for k in range(outs.shape[0]):
        total = correct = count = 0
        bad = False
        for i in range(outs.shape[1]):
            t = int(y[i])
            if t == -100 or (mask is not None and not mask[i]):
                continue
            count += 1
            row = [float(v) for v in outs[k, i]]
            if not all(np.isfinite(row)):
                bad = True
                continue
            top = max(row)
            total += top + np.log(sum(np.exp(v - top) for v in row)) - row[t]
            correct += int(row.index(top) == t)
        loss.append(np.nan if bad else total / count)
        acc.append(np.nan if bad else correct / count)
    return {"loss": np.array(loss), "acc": np.array(acc)}


def assert_metric(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_nonfinite_outputs_make_every_class_metric_nan(path):
    """A point whose outputs overflow gets NaN for loss, acc and err (an arg-max of inf or NaN
    gave an accuracy); a NaN output at a sample whose target is -100 changes nothing."""
    coeffs = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1e200, 0.0, 0.0], [0.0, 0.0, 1.0]]
    model, points = plane(nn.ReLU, 2, coeffs)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    x[7, 2] = float("nan")
    y[7] = -100
    res = ls.evaluate(model, points, (x, y), ["loss", "acc", "err"], path=path, precision="fp64", progress=False)
    assert res.path == path
    want = oracle_class_metrics(oracle_outputs(model, points, x), y)
    assert np.isnan(want["loss"]).tolist() == [False, False, True, False]
    assert_metric(res["loss"], want["loss"])
    assert_metric(res["acc"], want["acc"])
    assert_metric(res["err"], 100 * (1 - want["acc"]))


class TinyLM(nn.Module):
    """Token embeddings and a linear head; token 0 (padding) has a NaN embedding."""

    def __init__(self, seed: int, vocab: int = 11, width: int = 6):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)
        with torch.no_grad():
            self.emb.weight[0] = float("nan")

    def forward(self, input_ids, attention_mask=None):
        return self.head(torch.tanh(self.emb(input_ids)))


def lm_batch(ids, mask, ignored=()):
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    labels = ids.masked_fill(mask == 0, -100)
    for r, c in ignored:
        labels[r, c] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def oracle_token_metrics(model, points, batches) -> dict:
    """token_loss and token_acc per point by a float64 loop over the counted next tokens."""
    rows, targets = [], []
    for b in batches:
        outs = oracle_outputs_kw(model, points, b)  # [K, n, T, V]
        n, T = b["input_ids"].shape
        for s in range(n):
            for i in range(T - 1):
                if int(b["labels"][s, i + 1]) != -100 and int(b["attention_mask"][s, i + 1]) != 0:
                    rows.append(outs[:, s, i])
                    targets.append(int(b["labels"][s, i + 1]))
    m = oracle_class_metrics(torch.stack(rows, 1), torch.tensor(targets))
    return {"token_loss": m["loss"], "perplexity": np.exp(m["loss"]), "token_acc": m["acc"]}


def oracle_outputs_kw(model, points, batch) -> torch.Tensor:
    m = model.double()
    outs = []
    for k in range(points.K):
        w = {n: t[0].double() for n, t in points.tensors([k], dtype=torch.float64).items()}
        outs.append(functional_call(m, w, (), {"input_ids": batch["input_ids"]}))
    return torch.stack(outs)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_token_metrics_nan_only_from_counted_positions(path):
    models = [TinyLM(s) for s in range(2)]
    points = ls.PointSet.from_weights([ls.Weights.from_module(m) for m in models], [[1.0, 0.0], [0.3, 0.7]])
    padded = lm_batch([[3, 4, 5, 6, 0, 0], [7, 8, 9, 2, 5, 1]], [[1, 1, 1, 1, 0, 0], [1] * 6])
    # a padding token inside a sequence, whose next target is -100: its NaN logits are not counted
    inner = lm_batch([[3, 4, 0, 6, 7, 8]], [[1] * 6], ignored=[(0, 3)])
    # the same token where its next target counts
    counted = lm_batch([[3, 0, 5, 6, 7, 8]], [[1] * 6])
    metrics = ["token_loss", "perplexity", "token_acc"]
    for data, nan in (([padded, inner], False), ([padded, counted], True)):
        res = ls.evaluate(models[0], points, data, metrics, path=path, precision="fp64", progress=False)
        want = oracle_token_metrics(models[0], points, data)
        assert np.isnan(want["token_loss"]).all() == nan and np.isnan(want["token_loss"]).any() == nan
        for name in metrics:
            assert_metric(res[name], want[name])


def test_callable_metric_counts_every_sample_batch_metric_its_own():
    model, points = plane(nn.ReLU, 2, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.arange(10) % 3
    x[4, 0] = float("nan")

    def acc_fn(out, target):
        return (out.argmax(-1) == target).double().mean()

    def acc_unmasked(out, batch):
        ok = torch.isfinite(out).all(-1)
        return ((out.argmax(-1) == batch.target) & ok).sum(), ok.sum()

    metrics = [acc_fn, ls.metrics.batch_metric(acc_unmasked)]
    res = ls.evaluate(model, points, (x, y), metrics, precision="fp64", progress=False)
    assert np.isnan(res["acc_fn"]).all()
    keep = torch.arange(10) != 4
    want = oracle_class_metrics(oracle_outputs(model, points, x[keep]), y[keep])["acc"]
    np.testing.assert_allclose(res["acc_unmasked"], want, rtol=1e-12)


@pytest.mark.parametrize("path", ["auto", "fused", "loop"])
def test_nonfinite_basis_on_every_path(path):
    """A basis vector with a NaN weight: points with a zero coefficient on it are finite on every
    path (the fused kernels would multiply the NaN by 0: they are not used for such a basis)."""
    models = [make_mlp(nn.ReLU, 2, s) for s in range(3)]
    with torch.no_grad():
        models[2][0].weight[3, 1] = float("nan")
    points = ls.PointSet.from_weights(
        [ls.Weights.from_module(m) for m in models], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    )
    x = torch.randn(16, 4, dtype=torch.float64)
    y = torch.arange(16) % 3
    if path == "fused":
        with pytest.warns(UserWarning, match=r"NaN or inf values \(in '0.weight'\)"):
            res = ls.evaluate(models[0], points, (x, y), path=path, precision="fp64", progress=False)
    else:
        res = ls.evaluate(models[0], points, (x, y), path=path, precision="fp64", progress=False)
    assert res.path == "loop"
    want = oracle_class_metrics(oracle_outputs(models[0], points, x), y)
    assert np.isnan(want["loss"]).tolist() == [False, False, True]
    assert_metric(res["loss"], want["loss"])
    assert_metric(res["acc"], want["acc"])


# ---------------------------------------------------------------------------- 4. the warning
def _overflow_plane():
    coeffs = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1e200, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1e200, 0.0]]
    model, points = plane(nn.ReLU, 2, coeffs)
    g = torch.Generator().manual_seed(2)
    return model, points, (torch.randn(16, 4, generator=g), torch.arange(16) % 3)


def _nonfinite_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ls.NonFiniteWarning)]


def test_evaluate_warns_once_with_points_and_metrics():
    model, points, data = _overflow_plane()
    with pytest.warns(ls.NonFiniteWarning) as record:
        res = ls.evaluate(model, points, data, ["loss", "acc"], precision="fp64", progress=False)
    assert _nonfinite_warnings(record) == [
        "evaluate: computed values not finite (NaN/Inf) at 2 of 5 points: loss, acc at 2 points (2, 4)"
    ]
    assert np.isnan(res["loss"]).tolist() == [False, False, True, False, True]


def test_warning_counts_only_the_points_computed():
    model, points, data = _overflow_plane()
    with pytest.warns(ls.NonFiniteWarning) as record:
        ls.evaluate_points(model, points, data, ["loss"], precision="fp64", indices=[0, 1, 4], progress=False)
    assert _nonfinite_warnings(record) == [
        "evaluate: computed values not finite (NaN/Inf) at 1 of 3 points: loss at 1 point (4)"
    ]


def test_finite_run_does_not_warn(recwarn):
    model, points, data = _overflow_plane()
    ls.evaluate_points(model, points, data, ["loss", "acc"], precision="fp64", indices=[0, 1, 3], progress=False)
    assert _nonfinite_warnings(recwarn) == []


def test_result_file_run_warns_once(tmp_path):
    """With out= the result file says it (it knows the cells' coordinates); not twice."""
    model, points, data = _overflow_plane()
    with pytest.warns(ls.NonFiniteWarning) as record:
        res = ls.evaluate(model, points, data, ["loss"], precision="fp64", out=tmp_path / "e.h5", progress=False)
    assert len(_nonfinite_warnings(record)) == 1
    assert np.isnan(res["loss"]).tolist() == [False, False, True, False, True]


def test_a_surface_in_memory_warns_of_its_non_finite_cells():
    """Files warn when they close; a surface computed without a file warns at its end."""
    import warnings as _w

    torch.manual_seed(0)
    model = ls.build_model("mlp", {"in_features": 4, "widths": [8], "num_classes": 3})
    w = ls.Weights.from_module(model)
    plane = ls.directions.random_plane(w, seed=0)
    x = torch.randn(6, 4)
    x[2, 0] = float("nan")
    data = (x, torch.randint(0, 3, (6,)))
    with _w.catch_warnings(record=True) as caught:
        _w.simplefilter("always")
        res = ls.compute_surface(model, plane, [0.0, 1.0], [0.0, 1.0], splits={"test": data}, progress=False)
    assert np.isnan(res.metrics["test_loss"]).all()
    msgs = [str(c.message) for c in caught if issubclass(c.category, ls.NonFiniteWarning)]
    assert len(msgs) == 1 and "at 4 of 4 points" in msgs[0] and "test_loss" in msgs[0]
