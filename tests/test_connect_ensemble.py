"""WA-ensembles (landscape.connect.ensemble): shared backbones by weight adjustment."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

import landscape as ls
from landscape.connect.ensemble import WAEnsembleCurve, wa_ensemble, wa_ensemble_curve
from landscape.demo import _single_thread, train_classifier
from landscape.plot import plot_wa_ensemble


@pytest.fixture(scope="module")
def nets():
    train, test = ls.load_data("digits", "train"), ls.load_data("digits", "test")
    members = []
    with _single_thread():  # tiny models: a second OpenMP thread only spins
        for s in range(3):
            torch.manual_seed(s)
            model = ls.build_model("mlp", {"widths": [24, 16]})
            train_classifier(model, train, epochs=2, seed=s)
            members.append(ls.Weights.from_module(model))
    return model, members, train, test


def _softmax_mean(model, members, x):
    probs = [torch.softmax(functional_call(model, dict(w.tensors), (x,)).double(), -1) for w in members]
    return torch.stack(probs).mean(0)


def test_no_shared_layer_is_the_ordinary_ensemble(nets):
    model, members, train, test = nets
    ens = wa_ensemble(model, members, train, head_layers=3)
    assert ens.shared_layers == 0 and all(a is b for a, b in zip(ens.members, members))
    oracle = _softmax_mean(model, members, test.x)
    torch.testing.assert_close(ens.probabilities(test.x), oracle, rtol=1e-5, atol=1e-6)
    r = ens.evaluate(test)
    assert r["acc"] == pytest.approx(float((oracle.argmax(-1) == test.y).double().mean()))


@pytest.mark.parametrize("head", [1, 2])
def test_members_share_the_reference_backbone_and_refit_one_layer_by_least_squares(nets, head):
    model, members, train, _ = nets
    ens = wa_ensemble(model, members, train, head_layers=head)
    shared = ["1.weight", "1.bias", "3.weight", "3.bias"][: 2 * (3 - head)]
    for w in ens.members:
        for name in shared:
            assert torch.equal(w[name], members[0][name])
    # oracle: numpy least squares of member j's layer-k output on the reference's features
    k = 3 - head + 1
    layers = ["1", "3", "5"]
    x = train.x.double().numpy()

    def features(w, upto):  # input of layer `upto` (1-based)
        h = x
        for name in layers[: upto - 1]:
            h = np.maximum(h @ w[f"{name}.weight"].double().numpy().T + w[f"{name}.bias"].double().numpy(), 0)
        return h

    for j in (1, 2):
        w = members[j]
        target = (
            features(w, k) @ w[f"{layers[k - 1]}.weight"].double().numpy().T
            + w[f"{layers[k - 1]}.bias"].double().numpy()
        )
        H = np.hstack([features(members[0], k), np.ones((len(x), 1))])
        sol = np.linalg.lstsq(H, target, rcond=None)[0]
        got = ens.members[j]
        np.testing.assert_allclose(got[f"{layers[k - 1]}.weight"].double().numpy(), sol[:-1].T, atol=1e-4)
        np.testing.assert_allclose(got[f"{layers[k - 1]}.bias"].double().numpy(), sol[-1], atol=1e-4)
        # layers above k are member j's own
        for name in layers[k:]:
            assert torch.equal(got[f"{name}.weight"], w[f"{name}.weight"])


def test_cost_counts_the_backbone_once(nets):
    model, members, train, _ = nets
    ens = wa_ensemble(model, members, train, head_layers=1)
    c = ens.cost()
    layer = [64 * 24 + 24, 24 * 16 + 16, 16 * 10 + 10]
    assert c["params"] == layer[0] + layer[1] + 3 * layer[2]
    assert c["params_ordinary"] == 3 * sum(layer)
    assert c["macs"] == 64 * 24 + 24 * 16 + 3 * 16 * 10


def test_curve_table_file_and_figure(nets, tmp_path):
    model, members, train, test = nets
    curve = wa_ensemble_curve(model, members, train, test)
    assert curve.head_layers == [1, 2, 3] and curve.sizes == [1, 2, 3]
    # one member: the reference alone, whatever the head
    np.testing.assert_allclose(curve.acc[:, 0], curve.acc[0, 0], atol=1e-12)
    ind = wa_ensemble(model, members, train, 3).evaluate(test)["acc"]
    assert curve.acc[2, 2] == pytest.approx(ind)
    text = curve.markdown()
    assert "| Ind |" in text and "| WA(1) |" in text and "1.00x" in text
    path = tmp_path / "ens.h5"
    curve.save(path)
    back = WAEnsembleCurve.load(path)
    np.testing.assert_array_equal(back.acc, curve.acc)
    assert back.cost == curve.cost and back.head_layers == curve.head_layers
    fig = plot_wa_ensemble(path)
    assert len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError, match="head_layers"):
        wa_ensemble(model, members, train, 4)


def test_convnet_ensembles_share_conv_layers_and_count_their_positions():
    train, test = ls.load_data("digits:image", "train"), ls.load_data("digits:image", "test")
    model = ls.build_model("small_cnn", {"width": 2})
    members = [ls.Weights.from_module(ls.build_model("small_cnn", {"width": 2})) for _ in range(2)]
    ens = wa_ensemble(model, members, train, head_layers=1)
    for name in ("0.weight", "1.weight", "3.weight", "4.bias"):
        assert torch.equal(ens.members[1][name], members[0][name])
    c = ens.cost()
    per_net = 2 * 9 * 64 + 4 * 2 * 9 * 64 + 64 * 10  # conv 1->2, conv 2->4 over 8x8 positions, linear
    assert c["macs_ordinary"] == 2 * per_net and c["macs"] == per_net + 64 * 10
    full = wa_ensemble(model, members, train, head_layers=3).evaluate(test)
    assert 0.0 <= full["acc"] <= 1.0 and len(full["member_acc"]) == 2


def test_batchnorm_statistics_come_from_the_fitting_batch_not_the_evaluated_one():
    import copy

    from torch import nn
    from torch.func import functional_call

    train = ls.load_data("digits:image", "train", max_samples=300)
    torch.manual_seed(0)
    model = ls.build_model("small_cnn", {"width": 3, "batch_norm": True}).double()
    members = [ls.Weights.from_module(ls.build_model("small_cnn", {"width": 3, "batch_norm": True})) for _ in range(3)]
    x = train.x.double()
    for head in (1, 3):
        ens = wa_ensemble(model, members, x, head_layers=head)
        whole = ens.logits(x)
        one_by_one = torch.cat([ens.logits(x[i : i + 1]) for i in range(0, 40)], 1)
        torch.testing.assert_close(one_by_one, whole[:, :40], rtol=0, atol=1e-10)  # no batch dependence
    # the ordinary ensemble (no shared layer): each member is its own network with BatchNorm
    # normalising by the statistics of the fitting batch, i.e. train-mode BatchNorm on x
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.train()
            mod.momentum = 0.0
    with torch.no_grad():
        want = [functional_call(m, {k: v.double() for k, v in w.tensors.items()}, (x,)) for w in members]
    torch.testing.assert_close(whole, torch.stack(want), rtol=0, atol=1e-8)
