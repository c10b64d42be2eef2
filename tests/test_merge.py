"""Merges against float64 references written here: TIES, DARE, SLERP per tensor and over the
whole model, task arithmetic and soups as point sets, tied tensors, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import merge


class _Net(nn.Module):
    """Linear layers, a BatchNorm (float buffers and an integer counter) and a tied head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 5)
        self.fc = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 7)
        self.out = nn.Linear(5, 7, bias=False)
        self.out.weight = self.emb.weight  # tied


def _checkpoints(n: int, dtype=torch.float64, seed: int = 0, spread: float = 0.3) -> list[ls.Weights]:
    """A base and n fine-tunes (base + noise), BatchNorm statistics included."""
    torch.manual_seed(seed)
    base = _Net().to(dtype)
    with torch.no_grad():
        base.bn.running_mean.normal_()
        base.bn.running_var.uniform_(0.5, 2.0)
    out = [ls.Weights.from_module(base)]
    for _ in range(n):
        w = ls.Weights.from_module(base)
        t = {}
        for e in w.layout:
            if e.tied_to is not None:
                continue
            x = w[e.name]
            t[e.name] = x + spread * torch.randn_like(x) if x.is_floating_point() else x
        t["bn.running_var"] = w["bn.running_var"] * (1 + 0.1 * torch.rand_like(w["bn.running_var"]))
        out.append(ls.Weights(t, w.layout))
    return out


def _flat(w: ls.Weights) -> np.ndarray:
    return w.flatten(torch.float64).numpy()


def _param_mask(w: ls.Weights) -> np.ndarray:
    return w.layout.parameter_mask().numpy()


def _ties_reference(base, fts, density, scale, *, per_tensor=False):
    """TIES in numpy float64 on flat vectors (the authors' topk_values_mask, resolve_sign with
    the majority sign for zeros, disjoint_merge); float buffers: mean of the task vectors."""
    b = _flat(base)
    taus = [_flat(f) - b for f in fts]
    pm = _param_mask(base)
    groups = [np.arange(b.size)[pm]]
    if per_tensor:
        groups = [np.arange(e.offset, e.offset + e.numel) for e in base.layout.flat_entries() if e.is_parameter]
    merged = np.zeros_like(b)
    for idx in groups:
        trimmed = []
        for t in taus:
            v = t[idx]
            k = v.size - int(v.size * density)
            thr = np.sort(np.abs(v))[k - 1] if k >= 1 else 0.0
            trimmed.append(np.where(np.abs(v) >= thr, v, 0.0))
        sign = np.sign(np.sum(trimmed, axis=0))
        majority = 1.0 if sign.sum() >= 0 else -1.0
        sign[sign == 0] = majority
        agree = [np.where(sign > 0, tr > 0, tr < 0) for tr in trimmed]
        count = np.maximum(np.sum(agree, axis=0), 1)
        merged[idx] = np.sum([tr * a for tr, a in zip(trimmed, agree, strict=True)], axis=0) / count
    merged[~pm] = np.mean([t[~pm] for t in taus], axis=0)
    return b + scale * merged


@pytest.mark.parametrize("density", [0.1, 0.35, 1.0])
@pytest.mark.parametrize("per_tensor", [False, True])
def test_ties_equals_float64_reference(density, per_tensor):
    base, *fts = _checkpoints(3)
    got = merge.ties_merge(base, fts, density, 0.7, scope="tensor" if per_tensor else "model")
    ref = _ties_reference(base, fts, density, 0.7, per_tensor=per_tensor)
    np.testing.assert_allclose(_flat(got), ref, rtol=0, atol=1e-12)
    # the trim keeps about `density` of each task vector's parameters
    kept = np.abs(_flat(merge.ties_merge(base, fts[:1], density, 1.0)) - _flat(base))[_param_mask(base)] > 0
    assert abs(kept.mean() - density) < 0.02
    assert torch.equal(got["bn.num_batches_tracked"], base["bn.num_batches_tracked"])


def test_ties_sign_election_on_a_planted_coordinate():
    base, *fts = _checkpoints(3, spread=0.0)
    # coordinate 0 of fc.bias: +1, +1, -3 -> sum -1 elects minus; the disjoint mean is -3
    tensors = []
    for f, v in zip(fts, (1.0, 1.0, -3.0), strict=True):
        t = {k: x.clone() for k, x in f.tensors.items() if k != "out.weight"}
        t["fc.bias"][0] += v
        tensors.append(ls.Weights(t, f.layout))
    got = merge.ties_merge(base, tensors, 1.0, 1.0)
    assert got["fc.bias"][0].item() == pytest.approx(base["fc.bias"][0].item() - 3.0, abs=1e-12)
    assert torch.equal(got["fc.bias"][1:], base["fc.bias"][1:])


def test_ties_in_float32_stays_float32_and_matches_the_reference():
    base, *fts = _checkpoints(2, dtype=torch.float32)
    got = merge.ties_merge(base, fts, 0.3, 1.0)
    assert got["fc.weight"].dtype == torch.float32
    np.testing.assert_allclose(_flat(got), _ties_reference(base, fts, 0.3, 1.0), atol=2e-6)


def test_tied_tensors_stay_tied_in_every_merge():
    base, *fts = _checkpoints(2)
    for w in (
        merge.ties_merge(base, fts, 0.5),
        merge.dare_merge(base, fts, 0.5, seed=3),
        merge.slerp_merge(fts[0], fts[1], 0.3),
        merge.task_arithmetic_grid(base, fts, [0.4]).points.weights(0),
    ):
        assert w["out.weight"] is w["emb.weight"]
        assert not torch.equal(w["emb.weight"], base["emb.weight"])


def _dare_reference(base, fts, p, seed, scale):
    """DARE per tensor in float64 with the documented mask stream: one CPU generator seeded
    with ``seed``, uniform float64 draws per entry (layout order) and task (in order), an
    entry kept when its draw is >= p; float buffers: mean of the task vectors."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in base.layout.flat_entries():
        b = base[e.name].numpy().astype(np.float64)
        taus = [f[e.name].numpy().astype(np.float64) - b for f in fts]
        if not e.is_parameter:
            out[e.name] = b + scale * np.mean(taus, axis=0)
            continue
        total = np.zeros_like(b)
        for t in taus:
            u = torch.rand(e.shape, generator=g, dtype=torch.float64).numpy()
            total += np.where(u >= p, t / (1 - p), 0.0)
        out[e.name] = b + scale * total
    return out


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dare_equals_float64_reference(p):
    base, *fts = _checkpoints(2)
    got = merge.dare_merge(base, fts, p, seed=11, scale=0.8)
    ref = _dare_reference(base, fts, p, 11, 0.8)
    for name, value in ref.items():
        np.testing.assert_allclose(got[name].numpy(), value, rtol=0, atol=1e-12, err_msg=name)
    again = merge.dare_merge(base, fts, p, seed=11, scale=0.8)
    assert torch.equal(again["fc.weight"], got["fc.weight"])  # seeded


def test_dare_mean_over_seeds_is_the_task_vector():
    # A kept entry is tau / (1 - p) with probability 1 - p, else 0: mean tau, variance
    # tau^2 p / (1 - p). The mean over S seeds has standard deviation |tau| sqrt(p / ((1-p) S)).
    # Over the n coordinates the normalised errors z are ~N(0, 1): their RMS is 1 within
    # about 1/sqrt(2n) (0.03 here) and none exceeds 6 (P < 2e-9 per coordinate).
    base, ft = _checkpoints(1)
    p, S = 0.5, 300
    tau = (_flat(ft) - _flat(base))[_param_mask(base)]
    total = np.zeros_like(tau)
    for s in range(S):
        total += (_flat(merge.dare_merge(base, [ft], p, seed=s)) - _flat(base))[_param_mask(base)]
    mean = total / S
    z = (mean - tau) / (np.abs(tau) * math.sqrt(p / ((1 - p) * S)))
    rms = float(np.sqrt(np.mean(z**2)))
    assert 0.85 < rms < 1.15, rms
    assert np.abs(z).max() < 6
    assert abs(float(z.mean())) < 5 / math.sqrt(z.size)


def test_dare_ties_combine_is_the_sign_merge_of_the_dropped_vectors():
    base, *fts = _checkpoints(3)
    p, seed = 0.4, 5
    g = torch.Generator().manual_seed(seed)
    joint = {}
    for e in base.layout.flat_entries():
        if not e.is_parameter:
            continue
        b = base[e.name].numpy()
        vals = []
        for f in fts:
            u = torch.rand(e.shape, generator=g, dtype=torch.float64).numpy()
            vals.append(np.where(u >= p, (f[e.name].numpy() - b) / (1 - p), 0.0))
        joint[e.name] = vals
    signs = {n: np.sign(np.sum(v, axis=0)) for n, v in joint.items()}
    majority = 1.0 if sum(s.sum() for s in signs.values()) >= 0 else -1.0
    got = merge.dare_delta(base, fts, p, seed, combine="ties")
    for n, vals in joint.items():
        s = np.where(signs[n] == 0, majority, signs[n])
        agree = [np.where(s > 0, v > 0, v < 0) for v in vals]
        ref = np.sum([v * a for v, a in zip(vals, agree, strict=True)], axis=0) / np.maximum(np.sum(agree, axis=0), 1)
        np.testing.assert_allclose(got[n].numpy(), ref, atol=1e-12, err_msg=n)


def _slerp_reference(a: np.ndarray, b: np.ndarray, t: float, threshold: float) -> np.ndarray:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return (1 - t) * a + t * b
    dot = float(np.clip(np.dot(a / na, b / nb), -1, 1))
    if abs(dot) > threshold:
        return (1 - t) * a + t * b
    om = np.arccos(dot)
    return np.sin((1 - t) * om) / np.sin(om) * a + np.sin(t * om) / np.sin(om) * b


@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 1.0, 1.3])
def test_slerp_equals_float64_reference_per_tensor(t):
    _, a, b = _checkpoints(2, spread=1.0)
    got = merge.slerp_merge(a, b, t)
    for e in a.layout.flat_entries():
        x, y = a[e.name].numpy().ravel(), b[e.name].numpy().ravel()
        ref = _slerp_reference(x, y, t, merge.SLERP_THRESHOLD).reshape(e.shape)
        np.testing.assert_allclose(got[e.name].numpy(), ref, rtol=0, atol=1e-12, err_msg=e.name)
    if t == 0.0:
        assert all(torch.equal(got[n], a[n]) for n in a)


def test_slerp_keeps_the_norm_of_equal_norm_tensors_and_falls_back_when_parallel():
    x = torch.tensor([3.0, 4.0], dtype=torch.float64)
    y = torch.tensor([4.0, -3.0], dtype=torch.float64)  # orthogonal, same norm
    ca, cb, spherical = merge.slerp_coefficients(x, y, 0.5)
    assert spherical
    assert float((ca * x + cb * y).norm()) == pytest.approx(5.0, abs=1e-12)  # the linear mean has norm 3.54
    near = x * (1 + 1e-5) + torch.tensor([0.0, 1e-4], dtype=torch.float64)  # cos > 0.9995
    assert merge.slerp_coefficients(x, near, 0.3) == (0.7, 0.3, False)
    assert merge.slerp_coefficients(torch.zeros(2), y, 0.3)[2] is False


def test_task_arithmetic_points_equal_the_float64_formula():
    base, *fts = _checkpoints(3, dtype=torch.float32)
    lams = [-0.5, 0.0, 0.3, 1.0, 2.0]
    grid = merge.task_arithmetic_grid(base, fts, lams)
    b = _flat(base)
    taus = sum(_flat(f) - b for f in fts)
    for k, lam in enumerate(lams):
        got = grid.points.flat([k], dtype=torch.float64)[0].numpy()
        np.testing.assert_allclose(got, b + lam * taus, rtol=0, atol=1e-12)
    assert torch.equal(grid.points.flat([1])[0], base.flatten())  # lambda = 0 is the base, bit for bit
    plane = merge.task_arithmetic_plane(base, fts[:2], [0.0, 0.5], [1.0, -1.0])
    assert plane.shape == (2, 2)
    got = plane.points.flat([3], dtype=torch.float64)[0].numpy()  # cell (1, 1): a = 0.5, b = -1
    np.testing.assert_allclose(got, b + 0.5 * (_flat(fts[0]) - b) - (_flat(fts[1]) - b), atol=1e-12)


def test_ties_and_dare_grids_are_base_plus_lambda_times_the_merged_vector():
    base, *fts = _checkpoints(2, dtype=torch.float64)
    grid = merge.ties_grid(base, fts, [0.2, 0.6], [0.5, 1.5])
    assert grid.shape == (2, 2)
    for i, d in enumerate((0.2, 0.6)):
        for j, lam in enumerate((0.5, 1.5)):
            got = grid.points.flat([i * 2 + j], dtype=torch.float64)[0].numpy()
            np.testing.assert_allclose(got, _ties_reference(base, fts, d, lam), atol=1e-12)
    dg = merge.dare_grid(base, fts, [0.5], [0, 1], [1.0])
    assert dg.shape == (1, 2, 1)
    ref = _dare_reference(base, fts, 0.5, 1, 1.0)
    np.testing.assert_allclose(dg.points.point(1)["fc.weight"].numpy(), ref["fc.weight"], atol=1e-12)


def test_soups_and_wise_ft_rows():
    _, *ings = _checkpoints(3)
    grid = merge.soup_grid(ings, {"uniform": [0, 1, 2], "pair": [0, 2]})
    assert grid.rows == ["ingredient0", "ingredient1", "ingredient2", "uniform", "pair"]
    mean = np.mean([_flat(w) for w in ings], axis=0)
    np.testing.assert_allclose(grid.points.flat([3], dtype=torch.float64)[0].numpy(), mean, atol=1e-12)
    assert torch.equal(grid.points.flat([1])[0], ings[1].flatten())
    wise = merge.wise_ft_grid(ings[0], ings[1], [0.0, 0.25, 1.0])
    ref = 0.75 * _flat(ings[0]) + 0.25 * _flat(ings[1])
    np.testing.assert_allclose(wise.points.flat([1], dtype=torch.float64)[0].numpy(), ref, atol=1e-12)


def test_bad_input_names_what_arrived():
    base, *fts = _checkpoints(2)
    with pytest.raises(ValueError, match=r"density 0\.0 should be in \(0, 1\]"):
        merge.ties_merge(base, fts, 0.0)
    with pytest.raises(ValueError, match=r"drop probability 1\.0 should be in \[0, 1\)"):
        merge.dare_merge(base, fts, 1.0, seed=0)
    with pytest.raises(ValueError, match="at least one fine-tuned"):
        merge.ties_merge(base, [], 0.5)
    with pytest.raises(ValueError, match="exactly 2 fine-tuned"):
        merge.task_arithmetic_plane(base, fts[:1], [0], [0])
    other = ls.Weights.from_module(nn.Linear(2, 2).double())
    with pytest.raises(ValueError, match="other tensors than the base"):
        merge.ties_merge(base, [other], 0.5)
    with pytest.raises(ValueError, match="soup 'x' has members"):
        merge.soup_grid(fts, {"x": [5]})
    with pytest.raises(ValueError, match="lambda values"):
        merge.task_arithmetic_grid(base, fts, [float("nan")])


def test_a_merge_basis_that_cannot_fit_is_refused_before_any_work():
    from landscape.budget import TooLargeError

    with pytest.raises(TooLargeError, match="merge ties would need about"):
        merge.check_merge_memory("merge ties", basis=10**4, weights=10**9, itemsize=4)
    assert merge.check_merge_memory("merge ties", basis=3, weights=1000, itemsize=4) == 3 * 4000 + 16000
