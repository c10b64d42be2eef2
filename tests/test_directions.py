"""Directions and planes against their definitions."""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import directions as D
from landscape.surface import auto_range


def _bn_net():
    return nn.Sequential(
        nn.Conv2d(3, 5, 3),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 6 * 6, 4),
    )


def _weights(seed):
    torch.manual_seed(seed)
    net = _bn_net()
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return ls.Weights.from_module(net)


def test_filter_normalized_direction_has_the_filter_norms_and_zero_biasbn():
    w = _weights(0)
    d = D.random_direction(w, norm="filter", seed=3)
    for name in ("0.weight", "4.weight"):
        dn = d[name].flatten(1).norm(dim=1)
        wn = w[name].flatten(1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-6, atol=0)
    for name in ("0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "4.bias"):
        assert torch.count_nonzero(d[name]) == 0, name
    # a direction is random: not a rescaled copy of the weights
    assert not torch.allclose(d["0.weight"] / w["0.weight"], (d["0.weight"] / w["0.weight"]).flatten()[0])


def test_transposed_conv_filters_run_along_dim_1():
    w = ls.Weights.from_module(nn.ConvTranspose2d(3, 6, 2))
    d = D.random_direction(w, seed=0)
    torch.testing.assert_close(
        d["weight"].transpose(0, 1).flatten(1).norm(dim=1),
        w["weight"].transpose(0, 1).flatten(1).norm(dim=1),
        rtol=1e-6,
        atol=0,
    )


def test_layer_and_weight_norms_and_kept_biasbn():
    w = _weights(1)
    d = D.random_direction(w, norm="layer", ignore=None, seed=1)
    assert float(d["0.weight"].norm()) == pytest.approx(float(w["0.weight"].norm()), rel=1e-6)
    assert torch.equal(d["0.bias"], w["0.bias"]) and torch.equal(d["1.weight"], w["1.weight"])
    assert torch.count_nonzero(d["1.running_mean"]) == 0  # states=False: statistics stay
    raw = D.random_direction(w, norm="none", ignore=None, seed=1)
    dw = D.normalize_direction(raw, w, norm="weight", ignore=None)
    torch.testing.assert_close(dw["4.weight"], raw["4.weight"] * w["4.weight"])
    ds = D.random_direction(w, ignore=None, states=True, seed=1)
    assert torch.equal(ds["1.running_var"], w["1.running_var"])


def test_directions_are_seeded():
    w = _weights(2)
    a, b, c = (D.random_direction(w, seed=s) for s in (7, 7, 8))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_target_direction_and_line():
    w1, w2 = _weights(3), _weights(4)
    t = D.target_direction(w1, w2)
    torch.testing.assert_close(t["4.weight"], w2["4.weight"] - w1["4.weight"])
    line = D.line_through(w1, w2).points([-0.5, 0.0, 1.0, 1.5])
    assert all(torch.equal(line.point(1)[n], w1[n]) for n in w1)
    assert all(torch.equal(line.point(2)[n], w2[n]) for n in w2)
    torch.testing.assert_close(line.point(3)["4.weight"], 1.5 * w2["4.weight"] - 0.5 * w1["4.weight"])


def test_three_point_plane_coordinates():
    w = [_weights(s) for s in (5, 6, 7)]
    plane = D.three_point_plane(*w)
    A = plane.anchors
    assert A[0].tolist() == [0.0, 0.0] and A[1, 1] == 0.0
    p = [D._param_vector(x) for x in w]
    assert A[1, 0] == pytest.approx(float((p[1] - p[0]).norm()), rel=1e-12)
    # the third checkpoint's coordinates: its projections on the orthonormal axes
    u = (p[1] - p[0]) / (p[1] - p[0]).norm()
    r = p[2] - p[0]
    assert A[2, 0] == pytest.approx(float(r @ u), rel=1e-12)
    assert A[2, 1] == pytest.approx(float((r - (r @ u) * u).norm()), rel=1e-12)
    pts = plane.points(A[:, 0], A[:, 1])
    for k in range(3):  # bit for bit at the checkpoints
        assert all(torch.equal(pts.point(k)[n], w[k][n]) for n in w[k])
    # a point in between is w1 + x u_hat + y v_hat
    x, y = 0.3 * A[1, 0], 0.4 * A[2, 1]
    v = r - (r @ u) * u
    expected = p[0] + x * u + y * v / v.norm()
    got = D._param_vector(pts.weights(0).__class__(plane.points([x], [y]).point(0), w[0].layout))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_three_point_plane_rejects_collinear_points():
    w1, w2 = _weights(8), _weights(9)
    mid = ls.PointSet.from_weights([w1, w2], [[0.5, 0.5]]).weights(0)
    with pytest.raises(ValueError, match="lie on one line"):
        D.three_point_plane(w1, w2, mid)


def test_pca_recovers_a_planted_plane_and_its_variance_ratios():
    torch.manual_seed(10)
    final = ls.Weights.from_module(nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5)))
    layout = final.layout
    mask = torch.zeros(layout.size, dtype=torch.bool)
    for e in layout.flat_entries():
        if e.kind == "weight":
            mask[e.slice] = True
    e1, e2 = torch.zeros(layout.size, dtype=torch.float64), torch.zeros(layout.size, dtype=torch.float64)
    e1[mask] = torch.randn(int(mask.sum()), dtype=torch.float64)
    e1 /= e1.norm()
    e2[mask] = torch.randn(int(mask.sum()), dtype=torch.float64)
    e2 -= (e2 @ e1) * e1
    e2 /= e2.norm()
    rng = np.random.default_rng(0)
    a = rng.normal(0, 3.0, 15)
    b = rng.normal(0, 1.0, 15)
    f = final.flatten(torch.float64)
    traj = [ls.Weights(final.unflatten((f + ai * e1 + bi * e2).float()), layout) for ai, bi in zip(a, b)] + [final]
    plane = D.pca_plane(traj)
    pc = [plane.basis[i].flatten(torch.float64) for i in (1, 2)]
    # the principal directions span the planted plane
    for d in pc:
        assert float(d.norm()) == pytest.approx(1.0, rel=1e-5)
        assert float((d @ e1) ** 2 + (d @ e2) ** 2) == pytest.approx(1.0, abs=1e-6)
    # variance ratios of the centred differences: two components carry everything
    pts = np.stack([np.append(a, 0.0), np.append(b, 0.0)], 1)  # the final checkpoint's zero row included
    cov = np.cov((pts - pts.mean(0)).T, bias=True)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    np.testing.assert_allclose(plane.arrays["explained-variance-ratio"], ev / ev.sum(), rtol=1e-4)
    # the projected trajectory: distances are preserved (the plane is the planted one)
    traj_xy = plane.arrays["trajectory"]
    assert traj_xy.shape == (16, 2) and np.allclose(traj_xy[-1], 0)
    np.testing.assert_allclose(np.linalg.norm(traj_xy[:-1], axis=1), np.hypot(a, b), rtol=1e-4)
    assert "PC1 (" in plane.attrs["x-label"]


def test_grid_order_is_x_major():
    w = _weights(11)
    plane = D.random_plane(w, seed=0)
    pts = plane.grid([0.0, 1.0], [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(
        pts.coeffs.numpy(), [[1, 0, 0], [1, 0, 2], [1, 0, 3], [1, 1, 0], [1, 1, 2], [1, 1, 3]]
    )


def _mlp_weights(seed, widths=(512, 256), dtype=torch.float32):
    torch.manual_seed(seed)
    layers, prev = [], 64
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    net = nn.Sequential(*layers, nn.Linear(prev, 10)).to(dtype)
    return ls.Weights.from_module(net)


def _planes_with_threads(n, w, traj):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        three, pca = D.three_point_plane(*w), D.pca_plane(traj)
        grids = [
            three.grid(auto_range(three.anchors[:, 0]), auto_range(three.anchors[:, 1])),
            pca.grid(auto_range(pca.arrays["trajectory"][:, 0]), auto_range(pca.arrays["trajectory"][:, 1])),
        ]
    finally:
        torch.set_num_threads(before)
    return (three, pca), grids


def test_three_point_and_pca_planes_do_not_depend_on_the_thread_count():
    # 167k parameters: torch splits reductions over these tensors between threads, so sums
    # taken with torch's reductions differ in their last digits between 1 and 2 threads
    w = [_mlp_weights(s) for s in (0, 1, 2)]
    traj = [_mlp_weights(s) for s in range(10, 16)]
    (t1, p1), g1 = _planes_with_threads(1, w, traj)
    (t2, p2), g2 = _planes_with_threads(2, w, traj)
    np.testing.assert_array_equal(t1.anchors, t2.anchors)
    assert t1.attrs == t2.attrs and p1.attrs == p2.attrs
    for name in ("trajectory", "explained-variance-ratio"):
        np.testing.assert_array_equal(p1.arrays[name], p2.arrays[name])
    for b1, b2 in zip(p1.basis, p2.basis):
        assert all(torch.equal(b1[n], b2[n]) for n in b1)
    for a, b in zip(g1, g2):  # the coefficients a surface file stores
        assert torch.equal(a.coeffs, b.coeffs)


@pytest.mark.parametrize("ignore", ["biasbn", None])
def test_pca_plane_is_sklearn_pca_of_the_differences_to_the_final_checkpoint(ignore):
    PCA = pytest.importorskip("sklearn.decomposition").PCA
    traj = [_mlp_weights(s, widths=(6,), dtype=torch.float64) for s in range(20, 27)]
    plane = D.pca_plane(traj, ignore=ignore)
    final = traj[-1]
    kept = [e for e in final.layout.flat_entries() if ignore is None or e.kind == "weight"]

    def flat(w):
        return np.concatenate([w[e.name].reshape(-1).numpy() for e in kept])

    # loss-landscape's matrix: theta_i - theta_final of every checkpoint, the final one (a zero row) included
    M = np.stack([flat(w) - flat(final) for w in traj])
    ref = PCA(n_components=2, svd_solver="full").fit(M)
    got = np.stack([flat(plane.basis[k]) for k in (1, 2)])
    np.testing.assert_allclose(got, ref.components_, rtol=0, atol=1e-12)  # sign included (svd_flip on rows)
    np.testing.assert_allclose(plane.arrays["explained-variance-ratio"], ref.explained_variance_ratio_, rtol=1e-12)
    # the projected path: loss-landscape's 'cos' projection of the uncentred differences
    np.testing.assert_allclose(plane.arrays["trajectory"], M @ ref.components_.T, rtol=0, atol=1e-12)
    assert np.all(plane.arrays["trajectory"][-1] == 0)
    for k in (1, 2):  # entries left out of the PCA are zero in the directions
        for e in final.layout.flat_entries():
            if e not in kept:
                assert not plane.basis[k][e.name].any()


def test_pca_plane_compares_checkpoints_by_value_not_identity():
    traj = [_mlp_weights(s, widths=(16,)) for s in range(30, 36)]
    last = traj[-1]
    loaded_again = ls.Weights({n: t.clone() for n, t in last.items()}, last.layout)  # --ckpt DIR/last.pt
    planes = [
        D.pca_plane(traj),  # --trajectory DIR
        D.pca_plane(traj, final=loaded_again),  # --trajectory DIR --ckpt DIR/last.pt
        D.pca_plane(traj[:-1], final=loaded_again),  # a final checkpoint outside the trajectory is its end
    ]
    for p in planes[1:]:
        assert p.attrs["trajectory-length"] == 6
        np.testing.assert_array_equal(p.arrays["trajectory"], planes[0].arrays["trajectory"])
        for k in (1, 2):
            assert all(torch.equal(p.basis[k][n], planes[0].basis[k][n]) for n in last)
    # a final checkpoint inside the trajectory is not counted twice
    mid = D.pca_plane(traj, final=traj[2])
    assert mid.arrays["trajectory"].shape == (6, 2) and np.all(mid.arrays["trajectory"][2] == 0)


def test_curve_plane_does_not_depend_on_the_thread_count():
    from landscape import curves

    a, b = _mlp_weights(60), _mlp_weights(61)
    curve = curves.Curve(a, b, n_bends=1)
    with torch.no_grad():
        curve.bends.add_(0.05 * torch.randn(curve.bends.shape, generator=torch.Generator().manual_seed(0)))
    planes = []
    for n in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            planes.append(curves.curve_plane(curve, samples=11))
        finally:
            torch.set_num_threads(before)
    np.testing.assert_array_equal(planes[0].anchors, planes[1].anchors)
    np.testing.assert_array_equal(planes[0].arrays["trajectory"], planes[1].arrays["trajectory"])


def test_pca_keeps_biases_by_default_as_plot_trajectory_does():
    """loss-landscape's plot_trajectory.py defaults to --ignore '' (biases in the directions);
    random planes keep the paper's biasbn."""
    torch.manual_seed(0)
    traj = [
        ls.Weights.from_module(ls.build_model("mlp", {"in_features": 4, "widths": [6], "num_classes": 3}))
        for _ in range(4)
    ]
    kept, dropped = D.pca_plane(traj), D.pca_plane(traj, ignore="biasbn")
    for name in ("1.bias", "3.bias"):
        assert float(kept.basis[1][name].abs().sum()) > 0
        assert float(dropped.basis[1][name].abs().sum()) == 0
    rand = D.random_plane(traj[0], seed=0)
    assert float(rand.basis[1]["1.bias"].abs().sum()) == 0
