"""Curve training and evaluation as dnn-mode-connectivity (Garipov et al.) defines them.

The reference definitions (timgaripov/dnn-mode-connectivity): ``train.py``'s
``learning_rate_schedule`` applied at epochs 1..E, ``curves.l2_regularizer`` (wd/2 times
the squared norm of the curve's point at the sampled t, parameters only), ``--fix_start``
and ``--fix_end``, and ``eval_curve.py``'s length and integrated statistics.
"""

import numpy as np
import pytest
import torch
from torch import nn

import landscape as ls
from landscape import curves as C


def _linear_pair(seed=0, d_in=5, d_out=3):
    torch.manual_seed(seed)
    ma, mb = nn.Linear(d_in, d_out).double(), nn.Linear(d_in, d_out).double()
    return ma, ls.Weights.from_module(ma), ls.Weights.from_module(mb)


def _zero_loss(out, y):
    return out.sum() * 0.0


def _data(n, d_in=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("lr_update", ["epoch", "batch"])
def test_learning_rate_per_epoch_follows_the_schedule_formula(lr_update):
    # With a zero loss, no momentum and weight decay on the bends only, every step scales
    # the bend by (1 - lr_k * wd): the product over the steps shows which lr each step ran at.
    model, a, b = _linear_pair()
    curve = C.Curve(a, b, n_bends=1)
    theta0 = curve.bends.detach().clone()
    lr, wd, epochs, n, bs = 0.5, 0.1, 10, 10, 4  # 3 steps per epoch
    res = C.fit_curve(
        model, curve, _data(n), epochs=epochs, batch_size=bs, lr=lr, momentum=0.0, weight_decay=wd,
        lr_update=lr_update, loss=_zero_loss, device="cpu", progress=False,
    )  # fmt: skip

    def f(p):  # dnn-mode-connectivity's learning_rate_schedule, written out
        return 1.0 if p <= 0.5 else (1.0 - (p - 0.5) / 0.4 * 0.99 if p <= 0.9 else 0.01)

    steps = 3
    if lr_update == "epoch":
        lrs = [[lr * f(e / epochs)] * steps for e in range(1, epochs + 1)]
    else:
        lrs = [[lr * f((e - 1 + i / steps) / epochs) for i in range(steps)] for e in range(1, epochs + 1)]
    np.testing.assert_allclose([h["lr"] for h in res.history], [row[-1] for row in lrs], rtol=1e-15)
    scale = np.prod([1 - x * wd for row in lrs for x in row])
    torch.testing.assert_close(curve.bends.detach(), theta0 * scale, rtol=1e-12, atol=1e-14)
    if lr_update == "epoch":  # the first epoch already runs at f(1/E), the last at f(1)
        assert res.history[0]["lr"] == lr and res.history[-1]["lr"] == pytest.approx(lr * 0.01)


def test_bad_lr_update_is_refused():
    model, a, b = _linear_pair()
    with pytest.raises(ValueError, match="lr_update should be one of"):
        C.fit_curve(model, C.Curve(a, b), _data(8), epochs=1, lr_update="step", device="cpu", progress=False)
