"""Tests of landscape.models: shapes, parameter counts, functional_call/vmap, model specs."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from landscape.models import (
    MLP,
    ConvFC,
    ModelSpecError,
    PreResNet,
    ResNet,
    build_model,
    convfc,
    describe_model,
    list_models,
    mlp,
    preresnet20,
    preresnet56,
    resnet20,
    resnet56,
    vgg16,
    vgg16_bn,
)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("factory", "kwargs", "input_shape"),
    [
        (mlp, {"widths": (16, 8), "num_classes": 7}, (64,)),
        (
            convfc,
            {"num_classes": 7, "in_channels": 1, "input_size": 8, "hidden": 16},
            (1, 8, 8),
        ),
        (convfc, {"num_classes": 7, "channels": (4, 4, 4), "hidden": 8}, (3, 32, 32)),
        (vgg16, {"num_classes": 7, "width": 0.0625}, (3, 32, 32)),
        (vgg16_bn, {"num_classes": 7, "width": 0.0625, "in_channels": 1}, (1, 32, 32)),
        (resnet20, {"num_classes": 7, "width": 4}, (3, 16, 16)),
        (resnet56, {"num_classes": 7, "width": 2, "in_channels": 1}, (1, 8, 8)),
        (preresnet20, {"num_classes": 7, "width": 4}, (3, 16, 16)),
        (preresnet56, {"num_classes": 7, "width": 2}, (3, 8, 8)),
    ],
)
def test_output_shapes(factory, kwargs, input_shape):
    model = factory(**kwargs).eval()
    assert model(torch.randn(3, *input_shape)).shape == (3, 7)


def test_mlp_is_plain_sequential_of_linear_and_activations():
    model = MLP(64, (32, 16), 10, activation="tanh")
    assert isinstance(model, nn.Sequential)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [32, 16, 10]
    assert _count(model) == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    with pytest.raises(ValueError, match="activation 'swish' is not one of"):
        MLP(activation="swish")


def _resnet_parameter_count(n, num_classes, width=16, in_channels=3):
    """Option-B CIFAR ResNet: 3x3 convs without bias, BN (2 params per channel), 1x1+BN shortcuts."""

    def conv_bn(cin, cout, k):
        return cin * cout * k * k + 2 * cout

    total = conv_bn(in_channels, width, 3)
    cin = width
    for w in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += conv_bn(cin, w, 3) + conv_bn(w, w, 3)
            if cin != w:
                total += conv_bn(cin, w, 1)
            cin = w
    return total + cin * num_classes + num_classes


def test_resnet_parameter_counts():
    assert _resnet_parameter_count(3, 10) == 272_474
    assert _count(resnet20()) == 272_474
    assert _count(resnet56(num_classes=100)) == _resnet_parameter_count(9, 100)
    assert _count(ResNet(32, in_channels=1, width=8)) == _resnet_parameter_count(5, 10, 8, 1)
    model = resnet20()
    assert model.layer2[0].downsample is not None and model.layer1[0].downsample is None
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 3
    with pytest.raises(ValueError, match="ResNet depth 21 is not 2 \\+ 6n"):
        ResNet(21)


def test_preresnet_layouts():
    basic = preresnet20()
    # Pre-activation basic blocks: BN on the block input, 1x1 conv shortcut without BN.
    expected = 3 * 16 * 9
    cin = 16
    for w in (16, 32, 64):
        for _ in range(3):
            expected += 2 * cin + cin * w * 9 + 2 * w + w * w * 9 + (cin * w if cin != w else 0)
            cin = w
    expected += 2 * 64 + 64 * 10 + 10
    assert _count(basic) == expected
    bottleneck = preresnet56()
    assert bottleneck.block == "bottleneck" and len(bottleneck.layer1) == 6
    assert bottleneck.fc.in_features == 256
    assert len(PreResNet(56, block="basic").layer1) == 9


def test_convfc_matches_garipov_layout():
    model = ConvFC()
    # 128 x 3 x 3 features after three MaxPool(3, 2) from 32x32.
    assert model.num_features == 1152
    assert _count(model) == (
        3 * 32 * 25
        + 32
        + 32 * 64 * 25
        + 64
        + 64 * 128 * 25
        + 128
        + 1152 * 1000
        + 1000
        + 1000 * 1000
        + 1000
        + 1000 * 10
        + 10
    )
    assert ConvFC(in_channels=1, input_size=8).num_features == 128


def test_vgg16_parameter_count():
    convs = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
    ]
    convs += [(256, 512)] + [(512, 512)] * 5
    expected = sum(a * b * 9 + b for a, b in convs) + 512 * 512 * 2 + 512 * 2 + 512 * 10 + 10
    assert _count(vgg16()) == expected
    assert _count(vgg16_bn()) == expected + 2 * sum(b for _, b in convs)


def _check_vmap_matches_loop(model, x):
    model = model.to(torch.float64).eval()
    copies = []
    for seed in range(3):
        torch.manual_seed(seed)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for key, value in state.items():
            if value.is_floating_point():
                value.add_(0.1 * torch.randn_like(value))
                if key.endswith("running_var"):
                    value.abs_().add_(0.5)
        copies.append(state)
    stacked = {k: torch.stack([c[k] for c in copies]) for k in copies[0] if copies[0][k].is_floating_point()}
    fixed = {k: v for k, v in copies[0].items() if not v.is_floating_point()}

    def run(params):
        return functional_call(model, {**params, **fixed}, (x,))

    batched = vmap(run)(stacked)
    looped = torch.stack([functional_call(model, c, (x,)) for c in copies])
    assert batched.shape == (3, x.shape[0], looped.shape[-1])
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-10)
    # The points are different, so the outputs must be too.
    assert not torch.allclose(looped[0], looped[1])


@pytest.mark.parametrize(
    ("name", "kwargs", "input_shape"),
    [
        ("mlp", {"widths": [8, 8], "activation": "tanh"}, (64,)),
        (
            "convfc",
            {"in_channels": 1, "input_size": 8, "hidden": 8, "channels": [4, 4, 4]},
            (1, 8, 8),
        ),
        ("vgg16_bn", {"width": 0.0625}, (3, 32, 32)),
        ("resnet20", {"width": 4, "in_channels": 1}, (1, 8, 8)),
        ("preresnet56", {"width": 2}, (3, 8, 8)),
    ],
)
def test_vmap_over_parameter_sets_equals_loop(name, kwargs, input_shape):
    torch.manual_seed(0)
    model = build_model(name, kwargs)
    x = torch.randn(4, *input_shape, dtype=torch.float64)
    _check_vmap_matches_loop(model, x)


def test_vgg_without_dropout_runs_in_train_mode_under_vmap():
    model = vgg16(width=0.0625, dropout=0.0).double().train()
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert set(dict(model.named_parameters())) == set(dict(vgg16(width=0.0625).named_parameters()))
    params = {k: torch.stack([v, 2 * v]) for k, v in model.named_parameters()}
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    out = vmap(lambda p: functional_call(model, p, (x,)))(params)
    torch.testing.assert_close(out[0], model(x))


def test_stack_module_state_round_trip():
    models = [mlp(widths=(5,)).double() for _ in range(3)]
    params, buffers = stack_module_state(models)
    x = torch.randn(2, 64, dtype=torch.float64)
    out = vmap(lambda p, b: functional_call(models[0], (p, b), (x,)))(params, buffers)
    torch.testing.assert_close(out[2], models[2](x))


# ---------------------------------------------------------------------------- registry


def test_builtin_registry():
    names = list_models()
    for name in (
        "mlp",
        "convfc",
        "vgg16",
        "vgg16_bn",
        "resnet20",
        "resnet56",
        "preresnet20",
        "preresnet56",
    ):
        assert name in names
    model = build_model("mlp", '{"widths": [2000]}')
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [2000, 10]
    assert build_model("resnet20", {"num_classes": 100}).fc.out_features == 100


def test_package_module_factory_spec():
    layer = build_model("torch.nn:Linear", '{"in_features": 3, "out_features": 2}')
    assert isinstance(layer, nn.Linear) and layer.weight.shape == (2, 3)
    nested = build_model("landscape.models.resnet:ResNet", {"depth": 32})
    assert isinstance(nested, ResNet) and len(nested.layer1) == 5
    info = describe_model("torch.nn:Linear", {"out_features": 2, "in_features": 3}, model=layer)
    assert info["model_kwargs"] == '{"in_features": 3, "out_features": 2}'
    assert info["model_factory"] == "torch.nn:Linear"
    assert info["num_parameters"] == 8 and info["model_class"] == "torch.nn.modules.linear.Linear"
    assert describe_model("resnet20")["model_factory"] == "landscape.models.resnet:resnet20"


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        (
            "resnet21",
            None,
            r"unknown model 'resnet21' \(expected one of \[.*'resnet20'",
        ),
        (
            "foo.bar:make",
            None,
            r"could not import module 'foo.bar' for model spec 'foo.bar:make': No module named 'foo'",
        ),
        ("torch.nn:Linearr", None, r"module 'torch.nn' has no attribute 'Linearr'"),
        (
            "torch.nn:Linear",
            '{"in_features": 3,',
            r"model kwargs '\{\"in_features\": 3,' are not valid JSON",
        ),
        (
            "torch.nn:Linear",
            "[1, 2]",
            r"model kwargs must be a dict or a JSON object, got list",
        ),
        ("torch.nn:Linear", {"in_features": 3}, r"rejected kwargs .*TypeError"),
        (
            "builtins:dict",
            {"a": 1},
            r"'builtins:dict' \(builtins:dict\) returned a dict; expected a torch.nn.Module",
        ),
        ("torch:pi", None, r"'torch:pi' is a float, not a callable"),
        (":Linear", None, r"is not 'package.module:factory'"),
        ("", None, r"model spec must be a non-empty string"),
    ],
)
def test_model_spec_errors(spec, kwargs, message):
    with pytest.raises(ModelSpecError, match=message):
        build_model(spec, kwargs)


def test_small_cnn_shapes_parameters_and_registry():
    model = build_model("small_cnn", {"width": 8})
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # conv 1->8 (no bias, BN), conv 8->16 (no bias, BN), linear 16*4*4 -> 10
    expected = 8 * 9 + 2 * 8 + 16 * 8 * 9 + 2 * 16 + 16 * 16 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == expected
    plain = build_model("small_cnn", {"width": 8, "batch_norm": False})
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    _check_vmap_matches_loop(model.eval(), torch.randn(4, 1, 8, 8, dtype=torch.float64))


# ---------------------------------------------------------------------------- peers' networks (issue 19)


def test_wideresnet28x10_parameter_count_and_names():
    from landscape.models import WideResNet, wideresnet28x10

    def count(blocks, k, num_classes=10):
        """conv3x3 with bias, pre-activation blocks (BN 2 per channel), 1x1 shortcuts with bias."""
        total = 3 * 16 * 9 + 16
        cin = 16
        for w in (16 * k, 32 * k, 64 * k):
            for _ in range(blocks):
                total += 2 * cin + cin * w * 9 + w + 2 * w + w * w * 9 + w
                if cin != w:
                    total += cin * w + w
                cin = w
        return total + 2 * cin + cin * num_classes + num_classes

    with torch.device("meta"):
        big = wideresnet28x10()
    assert _count(big) == count(4, 10) == 36_489_290  # 36.5M (Zagoruyko & Komodakis), conv biases included
    small = WideResNet(depth=16, widen_factor=2, num_classes=7)
    assert _count(small) == count(2, 2, 7)
    assert small.layer1[0].shortcut is not None and small.layer1[1].shortcut is None
    assert small.layer2[0].conv2.stride == (2, 2) and small.layer2[0].conv1.stride == (1, 1)
    assert small.bn1.momentum == 0.9
    with pytest.raises(ValueError, match="WideResNet depth 27 is not 6n \\+ 4"):
        WideResNet(depth=27)


def test_wideresnet_runs_under_vmap():
    torch.manual_seed(0)
    from landscape.models import WideResNet

    _check_vmap_matches_loop(WideResNet(depth=10, widen_factor=1), torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_vgg19_parameter_count():
    from landscape.models import vgg19, vgg19_bn

    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256)] + [(256, 256)] * 3 + [(256, 512)]
    convs += [(512, 512)] * 7
    expected = sum(a * b * 9 + b for a, b in convs) + 512 * 512 * 2 + 512 * 2 + 512 * 10 + 10
    with torch.device("meta"):
        assert _count(vgg19()) == expected
        assert _count(vgg19_bn()) == expected + 2 * sum(b for _, b in convs)


def test_mlp_without_bias():
    model = mlp(in_features=6, widths=(5, 4), num_classes=3, bias=False)
    assert [n for n, _ in model.named_parameters()] == ["1.weight", "3.weight", "5.weight"]
    x = torch.randn(2, 6)
    w = [m.weight for m in model if isinstance(m, nn.Linear)]
    torch.testing.assert_close(model(x), torch.relu(torch.relu(x @ w[0].T) @ w[1].T) @ w[2].T)


def test_peer_specs():
    names = list_models()
    for name in ("dmc.vgg16", "dmc.vgg16bn", "dmc.preresnet110", "dmc.preresnet164", "dmc.wideresnet28x10"):
        assert name in names
    for name in ("dmc.convfc", "swa.vgg16", "swa.vgg16bn", "swa.preresnet110", "dbc.linear3nobias", "dbc.vgg16"):
        assert name in names
    assert names.index("vgg16") < names.index("dbc.convfc")  # ours first
    info = describe_model("dmc.VGG16BN", {"num_classes": 100})
    assert info["model_spec"] == "dmc.VGG16BN" and info["model_factory"] == "landscape.models.convnets:vgg16_bn"
    assert build_model("dmc.vgg16bn", {"num_classes": 100}).classifier[-1].out_features == 100
    assert build_model("dbc.linearonelayer")[1].in_features == 784  # dbc's MNIST network
    with pytest.raises(ModelSpecError, match=r"unknown model 'swa.vgg13' \(the swa\.\* networks are \['swa.vgg16'"):
        build_model("swa.vgg13")
    with pytest.raises(ModelSpecError, match=r"'dmc.vgg16'.*rejected kwargs \{'depth': 16\}"):
        build_model("dmc.vgg16", {"depth": 16})
