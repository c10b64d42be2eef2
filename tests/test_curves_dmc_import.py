"""Curve checkpoints of dnn-mode-connectivity ("DMC") imported as our curves (issue 19 item 4).

The state dicts are written here with DMC's names, as its ``CurveNet.state_dict()`` holds them
(curves.py and models/*.py of timgaripov/dnn-mode-connectivity):

- ``coeff_layer.range`` (and ``coeff_layer.binom``, ``coeff_layer.rev_range`` for ``Bezier``);
- ``net.<module>.weight_<i>``, ``net.<module>.bias_<i>`` for control point ``i`` of
  ``num_bends`` (both ends counted);
- ``net.<bn>.running_mean``, ``running_var``, ``num_batches_tracked``: one set per BatchNorm;
- module names of the curve networks: VGG ``layer_blocks.<stage>.<j>`` and ``fc1``, ``fc2``,
  ``fc3``; ConvFC ``conv1..conv3``, ``fc4..fc6``; PreResNet ``conv1``,
  ``layer<L>.<b>.{bn1,conv1,bn2,conv2,bn3,conv3}``, ``layer<L>.0.downsample`` (no ``.0``), ``bn``,
  ``fc``; WideResNet ``conv1``, ``layer<L>.<b>.{bn1,conv1,bn2,conv2}``, ``layer<L>.<b>.shortcut``,
  ``bn1``, ``linear``.

The oracle: the point at t is ``sum_i c_i(t) w_i`` over DMC's control points in float64, with
``c_i`` Bernstein polynomials (Bezier) or hat functions (PolyChain) written here.
"""

from __future__ import annotations

from math import comb

import pytest
import torch

import landscape as ls
from landscape.cli import main
from landscape.curves import Curve, fit_curve, load_curve
from landscape.weights import CheckpointError

TS = (0.0, 0.13, 0.5, 0.71, 1.0)


def bezier(t: float, num_bends: int) -> list[float]:
    n = num_bends - 1
    return [comb(n, i) * t**i * (1 - t) ** (n - i) for i in range(num_bends)]


def polychain(t: float, num_bends: int) -> list[float]:
    return [max(0.0, 1.0 - abs(t * (num_bends - 1) - i)) for i in range(num_bends)]


# --------------------------------------------------------------------------- DMC's names, written down
# Each layer: (DMC curve module name, our name, {parameter: shape}, BatchNorm features or 0).
def conv(dmc, ours, cout, cin, k, bias=True):
    shapes = {"weight": (cout, cin, k, k)} | ({"bias": (cout,)} if bias else {})
    return dmc, ours, shapes, 0


def linear(dmc, ours, cout, cin):
    return dmc, ours, {"weight": (cout, cin), "bias": (cout,)}, 0


def bn(dmc, ours, c):
    return dmc, ours, {"weight": (c,), "bias": (c,)}, c


def convfc_layers(channels=(4, 6, 8), hidden=10, classes=10):
    c1, c2, c3 = channels
    return [
        conv("conv1", "conv_part.0", c1, 3, 5),
        conv("conv2", "conv_part.3", c2, c1, 5),
        conv("conv3", "conv_part.6", c3, c2, 5),
        linear("fc4", "fc_part.0", hidden, c3 * 3 * 3),  # 32 -> 15 -> 7 -> 3 after three MaxPool(3, 2)
        linear("fc5", "fc_part.2", hidden, hidden),
        linear("fc6", "fc_part.4", classes, hidden),
    ]


def vgg16_layers(width=1 / 16, batch_norm=True, classes=10):
    config = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    layers, ours, cin = [], 0, 3  # ours: index in our `features` Sequential
    for stage, sizes in enumerate(config):
        j = 0
        for size in sizes:
            cout = round(size * width)
            layers.append(conv(f"layer_blocks.{stage}.{j}", f"features.{ours}", cout, cin, 3))
            j, ours = j + 1, ours + 1
            if batch_norm:
                layers.append(bn(f"layer_blocks.{stage}.{j}", f"features.{ours}", cout))
                j, ours = j + 1, ours + 1
            ours += 1  # ReLU
            cin = cout
        ours += 1  # MaxPool
    hidden = round(512 * width)
    return layers + [
        linear("fc1", "classifier.1", hidden, cin),
        linear("fc2", "classifier.4", hidden, hidden),
        linear("fc3", "classifier.6", classes, hidden),
    ]


def preresnet110_layers(classes=10):
    layers = [conv("conv1", "conv1", 16, 3, 3, bias=False)]
    inplanes = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        for b in range(12):  # (110 - 2) / 9 bottlenecks per stage
            p = f"layer{stage}.{b}"
            layers += [
                bn(f"{p}.bn1", f"{p}.bn1", inplanes),
                conv(f"{p}.conv1", f"{p}.conv1", planes, inplanes, 1, bias=False),
                bn(f"{p}.bn2", f"{p}.bn2", planes),
                conv(f"{p}.conv2", f"{p}.conv2", planes, planes, 3, bias=False),
                bn(f"{p}.bn3", f"{p}.bn3", planes),
                conv(f"{p}.conv3", f"{p}.conv3", planes * 4, planes, 1, bias=False),
            ]
            if b == 0:
                layers.append(conv(f"{p}.downsample", f"{p}.downsample.0", planes * 4, inplanes, 1, bias=False))
            inplanes = planes * 4
    return layers + [bn("bn", "bn", 256), linear("fc", "fc", classes, 256)]


def wideresnet10x1_layers(classes=10):
    layers = [conv("conv1", "conv1", 16, 3, 3)]
    cin = 16
    for stage, planes in enumerate((16, 32, 64), start=1):
        p = f"layer{stage}.0"  # (10 - 4) / 6 = 1 block per stage
        layers += [
            bn(f"{p}.bn1", f"{p}.bn1", cin),
            conv(f"{p}.conv1", f"{p}.conv1", planes, cin, 3),
            bn(f"{p}.bn2", f"{p}.bn2", planes),
            conv(f"{p}.conv2", f"{p}.conv2", planes, planes, 3),
        ]
        if stage > 1:  # stride 2 (stage 1 keeps 16 channels at stride 1: no shortcut)
            layers.append(conv(f"{p}.shortcut", f"{p}.shortcut.0", planes, cin, 1))
        cin = planes
    return layers + [bn("bn1", "bn1", 64), linear("linear", "linear", classes, 64)]


def dmc_state(layers, num_bends, kind="bezier", seed=0, coeff_layer=True):
    """A CurveNet.state_dict() with DMC's names, random values (float64)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    if coeff_layer:
        n = num_bends
        if kind == "bezier":
            sd["coeff_layer.binom"] = torch.tensor([float(comb(n - 1, i)) for i in range(n)])
        sd["coeff_layer.range"] = torch.arange(0, float(n))
        if kind == "bezier":
            sd["coeff_layer.rev_range"] = torch.arange(float(n - 1), -1, -1)
    for dmc, _, shapes, features in layers:
        for name, shape in shapes.items():
            for i in range(num_bends):
                sd[f"net.{dmc}.{name}_{i}"] = torch.randn(shape, generator=g, dtype=torch.float64)
        if features:
            sd[f"net.{dmc}.running_mean"] = torch.randn(features, generator=g, dtype=torch.float64)
            sd[f"net.{dmc}.running_var"] = torch.rand(features, generator=g, dtype=torch.float64) + 0.5
            sd[f"net.{dmc}.num_batches_tracked"] = torch.tensor(17)
    return sd


def dmc_checkpoint(path, sd, epoch=600):
    """DMC's train.py file: {'epoch', 'model_state', 'optimizer_state'}."""
    trainable = sum(1 for k in sd if k.startswith("net.") and k[-1].isdigit())
    optimizer = {
        "state": {},
        "param_groups": [{"lr": 0.015, "momentum": 0.9, "weight_decay": 0.0, "params": list(range(trainable))}],
    }
    torch.save({"epoch": epoch, "model_state": sd, "optimizer_state": optimizer}, path)
    return path


def assert_matches_formula(curve, sd, layers, num_bends, kind):
    coefficients = bezier if kind == "bezier" else polychain
    for t in TS:
        w = curve.weights_at(t)
        c = coefficients(t, num_bends)
        for dmc, ours, shapes, features in layers:
            for name in shapes:
                expected = sum(c[i] * sd[f"net.{dmc}.{name}_{i}"] for i in range(num_bends))
                got = w[f"{ours}.{name}"]
                assert got.dtype == torch.float64
                if t in (0.0, 1.0):  # one-hot rows: the end control points bit for bit
                    assert torch.equal(got, sd[f"net.{dmc}.{name}_{0 if t == 0 else num_bends - 1}"])
                assert close(got, expected), f"{ours}.{name} at t={t}"
            if features:  # one set of running statistics for the whole curve
                for stat in ("running_mean", "running_var"):
                    assert close(w[f"{ours}.{stat}"], sd[f"net.{dmc}.{stat}"]), f"{ours}.{stat} at t={t}"


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-12) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= tol * (1 + float(b.abs().max()))


CASES = [
    ("dmc.convfc", {"channels": [4, 6, 8], "hidden": 10}, convfc_layers(), 4, "polychain"),
    ("dmc.vgg16bn", {"width": 1 / 16}, vgg16_layers(), 3, "bezier"),
    ("vgg16", {"width": 1 / 16}, vgg16_layers(batch_norm=False), 5, "polychain"),
    ("dmc.preresnet110", {}, preresnet110_layers(), 3, "bezier"),
    ("dmc.wideresnet28x10", {"depth": 10, "widen_factor": 1}, wideresnet10x1_layers(), 4, "bezier"),
]


@pytest.mark.parametrize("spec,kwargs,layers,num_bends,kind", CASES, ids=[c[0] for c in CASES])
def test_dmc_curve_point_at_t_is_the_formula_over_dmc_control_points(tmp_path, spec, kwargs, layers, num_bends, kind):
    model = ls.build_model(spec, kwargs).double()
    sd = dmc_state(layers, num_bends, kind)
    path = dmc_checkpoint(tmp_path / "checkpoint-600.pt", sd)
    curve, info = load_curve(path, model, format="dmc")
    assert (curve.kind, curve.n_bends, info["num_bends"]) == (kind, num_bends - 2, num_bends)
    assert len(curve.layout.names()) == len(model.state_dict())
    assert_matches_formula(curve, sd, layers, num_bends, kind)


def test_curve_type_is_required_when_the_file_does_not_record_it(tmp_path):
    model = ls.build_model("dmc.convfc", {"channels": [4, 6, 8], "hidden": 10}).double()
    layers = convfc_layers()
    sd = dmc_state(layers, 3, coeff_layer=False)
    path = dmc_checkpoint(tmp_path / "c.pt", sd)
    with pytest.raises(CheckpointError, match="does not record its curve type.*curve='bezier' or curve='polychain'"):
        load_curve(path, model, format="dmc")
    curve, _ = load_curve(path, model, format="dmc", curve="polychain")
    assert_matches_formula(curve, sd, layers, 3, "polychain")


def test_curve_type_that_contradicts_the_file_is_refused(tmp_path):
    model = ls.build_model("dmc.convfc", {"channels": [4, 6, 8], "hidden": 10})
    path = dmc_checkpoint(tmp_path / "c.pt", dmc_state(convfc_layers(), 3, "bezier"))
    with pytest.raises(CheckpointError, match="is a bezier curve .*curve='polychain' was given"):
        load_curve(path, model, format="dmc", curve="polychain")
    with pytest.raises(ValueError, match="curve should be one of .* got 'Bezier'"):
        load_curve(path, model, format="dmc", curve="Bezier")
    with pytest.raises(ValueError, match="format should be one of .* got 'garipov'"):
        load_curve(path, model, format="garipov")


def test_missing_control_point_is_named(tmp_path):
    model = ls.build_model("dmc.convfc", {"channels": [4, 6, 8], "hidden": 10})
    sd = dmc_state(convfc_layers(), 3)
    del sd["net.fc5.bias_1"]
    path = dmc_checkpoint(tmp_path / "c.pt", sd)
    with pytest.raises(CheckpointError, match=r"'net\.fc5\.bias_<i>' has control points \[0, 2\]; expected 0\.\.2"):
        load_curve(path, model, format="dmc")


def test_dmc_curve_of_another_network_is_refused(tmp_path):
    model = ls.build_model("dmc.vgg16", {"width": 1 / 16})
    path = dmc_checkpoint(tmp_path / "c.pt", dmc_state(convfc_layers(), 3))
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_curve(path, model, format="dmc")


def test_base_checkpoint_is_not_a_curve_checkpoint(tmp_path):
    model = ls.build_model("dmc.convfc", {"channels": [4, 6, 8], "hidden": 10})
    torch.save({"epoch": 1, "model_state": model.state_dict()}, tmp_path / "base.pt")
    with pytest.raises(CheckpointError, match="not a dnn-mode-connectivity curve checkpoint: key 'conv_part.0.weight'"):
        load_curve(tmp_path / "base.pt", model, format="dmc")


def test_cli_import_writes_our_curve_file(tmp_path, capsys):
    layers = vgg16_layers()
    sd = dmc_state(layers, 3, "bezier")
    path = dmc_checkpoint(tmp_path / "checkpoint-600.pt", {k: v.float() for k, v in sd.items()})
    out = tmp_path / "curve.pt"
    argv = ["curve", "import", str(path), "--model", "dmc.vgg16bn", "--model-kwargs", '{"width": 0.0625}']
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "bezier curve, 1 bend(s) (dnn-mode-connectivity's num_bends 3)" in printed
    assert "BatchNorm" in printed
    model = ls.build_model("dmc.vgg16bn", {"width": 1 / 16})
    ours, state = load_curve(out, model)
    theirs, _ = load_curve(path, model, format="dmc")
    assert state["imported_from"]["format"] == "dmc" and ours.kind == "bezier"
    assert torch.equal(ours.bends, theirs.bends)
    for t in (0.0, 0.4, 1.0):
        a, b = ours.weights_at(t), theirs.weights_at(t)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*argv, "--out", str(out)]) == 2  # exists: refused without --force
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input (issue 17)
def test_curve_between_checkpoints_of_different_shapes_names_the_tensor():
    a = ls.Weights.from_module(ls.build_model("mlp", {"widths": [16]}))
    b = ls.Weights.from_module(ls.build_model("mlp", {"widths": [32]}))
    with pytest.raises(ValueError, match=r"tensor '1\.weight' has shape \(16, 64\) in start and \(32, 64\) in end"):
        Curve(a, b)
    with pytest.raises(ValueError, match=r"tensor '1\.weight' has shape \(16, 64\) in start and \(32, 64\) in bend 1"):
        Curve(a, a, n_bends=1, init=[b])


def test_fit_with_a_negative_learning_rate_is_one_line():
    model = ls.build_model("mlp", {"widths": [8]})
    a = ls.Weights.from_module(model)
    curve = Curve(a, a, n_bends=1)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    with pytest.raises(ValueError, match=r"^lr should be a positive number, got -1\.0$"):
        fit_curve(model, curve, (x, y), epochs=1, lr=-1.0, progress=False)
    with pytest.raises(ValueError, match=r"^momentum should be a number in \[0, 1\), got 1\.5$"):
        fit_curve(model, curve, (x, y), epochs=1, lr=0.1, momentum=1.5, progress=False)
