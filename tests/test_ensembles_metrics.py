"""Ensemble evaluation through the engine against members evaluated one by one."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

import landscape as ls
from landscape.ensembles import evaluate_ensemble, expected_calibration_error


def test_ece_by_hand():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    # 4 bins: (0.5, 0.75] holds 0.6 (wrong) and 0.7 (right): |0.5 - 0.65| * 2/3 = 0.1;
    # (0.75, 1] holds 0.9 (right): |1 - 0.9| * 1/3
    assert expected_calibration_error(p, np.array([0, 1, 1]), bins=4) == pytest.approx(0.1 + 0.1 / 3)


@pytest.mark.parametrize(
    "spec,kwargs,data", [("mlp", {"widths": [16]}, "digits"), ("small_cnn", {"width": 2}, "digits:image")]
)
def test_engine_ensemble_equals_averaging_member_probabilities_in_float64(spec, kwargs, data):
    test = ls.load_data(data, "test", max_samples=120)
    members = []
    for s in range(3):
        torch.manual_seed(s)
        members.append(ls.Weights.from_module(ls.build_model(spec, kwargs)))
    model = ls.build_model(spec, kwargs).double().eval()
    res = evaluate_ensemble(model, members, test, precision="fp64")
    probs = [
        torch.softmax(functional_call(model, {k: v.double() for k, v in w.tensors.items()}, (test.x.double(),)), -1)
        for w in members
    ]
    mean = torch.stack(probs).mean(0).numpy()
    np.testing.assert_allclose(res.probabilities, mean, rtol=0, atol=1e-12)
    y = test.y.numpy()
    assert res.acc == pytest.approx(float((mean.argmax(1) == y).mean()))
    assert res.nll == pytest.approx(float(-np.log(mean[np.arange(len(y)), y]).mean()), rel=1e-12)
    assert res.member_acc[1] == pytest.approx(float((probs[1].numpy().argmax(1) == y).mean()))
    two = (probs[0] + probs[1]).numpy() / 2
    assert res.cumulative_acc[1] == pytest.approx(float((two.argmax(1) == y).mean()))
    assert res.cumulative_acc[-1] == res.acc and res.cumulative_acc[0] == res.member_acc[0]
