"""Checkpoints of the peer repositories load as they are (issue 19, items 1 and 2).

The state dicts here are made in the test from the parameter names and shapes each
repository's model code gives (read from the repositories, written down below; none of their
code is imported or copied):

- dnn-mode-connectivity (github.com/timgaripov/dnn-mode-connectivity, models/*.py, "dmc"):
  ``train.py`` saves ``{'epoch', 'model_state', 'optimizer_state'}``. VGG16/VGG16BN keep their
  convs (and batch norms) in ``layer_blocks.<stage>.<i>`` (a ModuleList per stage; with batch
  norm a conv at even ``i``, its BatchNorm2d at ``i + 1``), then
  ``classifier.{1,4,6}`` (Dropout, Linear(512, 512), ReLU, Dropout, Linear(512, 512), ReLU,
  Linear(512, classes)). PreResNet110/164: ``conv1``, ``layer{1,2,3}.<b>.{bn1, conv1, bn2,
  conv2, bn3, conv3}`` (bottlenecks of 16/32/64 planes, expansion 4, stride on conv2),
  ``layer*.0.downsample.0`` (1x1 conv, no bias), ``bn``, ``fc``; ``avgpool(8)``.
  WideResNet28x10: ``conv1`` (bias), ``layer{1,2,3}.<b>.{bn1, conv1, bn2, conv2}`` (biases,
  stride on conv2), ``layer*.<b>.shortcut.0`` (1x1 conv with bias where the shape changes),
  ``bn1``, ``linear``. ConvFC: ``conv_part.{0,3,6}`` (5x5, 32/64/128 channels, MaxPool(3, 2)),
  ``fc_part.{0,2,4}`` (1152 -> 1000 -> 1000 -> classes).
- the SWA repository (github.com/timgaripov/swa, "swa"): ``train.py`` saves
  ``{'epoch', 'state_dict', 'swa_state_dict', 'swa_n', 'optimizer'}`` (``swa_state_dict`` is
  None without --swa). VGG16/VGG16BN: ``features.<k>`` (one flat Sequential: conv, [bn],
  ReLU per conv, MaxPool after each stage) and ``classifier.{1,4,6}``. PreResNet110/164 and
  WideResNet28x10: the names of dmc's.
- distribution-based connectivity (github.com/avecplezir/distribution-based-connectivity,
  "dbc"): ``train.py`` saves ``{'epoch', 'model_state', 'optimizer_state'}``.
  ``LinearOneLayer*``: ``fc.0``, ``fc.2`` (Sequential Linear, ReLU, Linear).
  ``Linear``, ``Linear*NoBias``: ``linear_layers.<j>`` (bias only in ``Linear``/
  ``LinearMNIST``), ReLU between. VGG16: dmc's names (its classifier is a ModuleList with the
  same indices). ConvFC: dmc's names.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape as ls
from landscape.cli import main
from landscape.models import build_model, peer_key_map
from landscape.weights import CheckpointError, file_sha256, read_state_dict, split_checkpoint_key

VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var")

# ---------------------------------------------------------------------------- the peers' names


def _bn(names, prefix, channels):
    for entry in BN_ENTRIES:
        names[f"{prefix}.{entry}"] = (channels,)
    names[f"{prefix}.num_batches_tracked"] = ()


def dmc_vgg_names(config=VGG16, batch_norm=False, num_classes=10, hidden=512):
    """dmc's (and dbc's) VGGBase: layer_blocks.<stage>.<i>, classifier.{1,4,6}."""
    names, previous = {}, 3
    for stage, widths in enumerate(config):
        i = 0
        for width in widths:
            names[f"layer_blocks.{stage}.{i}.weight"] = (width, previous, 3, 3)
            names[f"layer_blocks.{stage}.{i}.bias"] = (width,)
            i += 1
            if batch_norm:
                _bn(names, f"layer_blocks.{stage}.{i}", width)
                i += 1
            previous = width
    names["classifier.1.weight"], names["classifier.1.bias"] = (hidden, previous), (hidden,)
    names["classifier.4.weight"], names["classifier.4.bias"] = (hidden, hidden), (hidden,)
    names["classifier.6.weight"], names["classifier.6.bias"] = (num_classes, hidden), (num_classes,)
    return names


def swa_vgg_names(config=VGG16, batch_norm=False, num_classes=10, hidden=512):
    """swa's VGG: one flat Sequential features.<k> (conv, [bn], relu; 'M' after a stage)."""
    names, previous, k = {}, 3, 0
    for widths in config:
        for width in widths:
            names[f"features.{k}.weight"] = (width, previous, 3, 3)
            names[f"features.{k}.bias"] = (width,)
            k += 1
            if batch_norm:
                _bn(names, f"features.{k}", width)
                k += 1
            k += 1  # ReLU
            previous = width
        k += 1  # MaxPool2d
    names["classifier.1.weight"], names["classifier.1.bias"] = (hidden, previous), (hidden,)
    names["classifier.4.weight"], names["classifier.4.bias"] = (hidden, hidden), (hidden,)
    names["classifier.6.weight"], names["classifier.6.bias"] = (num_classes, hidden), (num_classes,)
    return names


def preresnet_names(blocks, num_classes=10):
    """dmc's and swa's PreResNetBase with bottlenecks (depth 9 blocks + 2)."""
    names = {"conv1.weight": (16, 3, 3, 3)}
    inplanes = 16
    for layer, planes in enumerate((16, 32, 64), start=1):
        for b in range(blocks):
            stride = 2 if layer > 1 and b == 0 else 1
            p = f"layer{layer}.{b}"
            _bn(names, f"{p}.bn1", inplanes)
            names[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            _bn(names, f"{p}.bn2", planes)
            names[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(names, f"{p}.bn3", planes)
            names[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            if b == 0 and (stride != 1 or inplanes != 4 * planes):
                names[f"{p}.downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
            inplanes = 4 * planes
    _bn(names, "bn", inplanes)
    names["fc.weight"], names["fc.bias"] = (num_classes, inplanes), (num_classes,)
    return names


def wideresnet_names(blocks=4, k=10, num_classes=10):
    """dmc's and swa's WideResNet (depth 6 blocks + 4, widen factor k)."""
    names = {"conv1.weight": (16, 3, 3, 3), "conv1.bias": (16,)}
    inplanes = 16
    for layer, planes in enumerate((16 * k, 32 * k, 64 * k), start=1):
        for b in range(blocks):
            stride = 2 if layer > 1 and b == 0 else 1
            p = f"layer{layer}.{b}"
            _bn(names, f"{p}.bn1", inplanes)
            names[f"{p}.conv1.weight"], names[f"{p}.conv1.bias"] = (planes, inplanes, 3, 3), (planes,)
            _bn(names, f"{p}.bn2", planes)
            names[f"{p}.conv2.weight"], names[f"{p}.conv2.bias"] = (planes, planes, 3, 3), (planes,)
            if stride != 1 or inplanes != planes:
                names[f"{p}.shortcut.0.weight"], names[f"{p}.shortcut.0.bias"] = (planes, inplanes, 1, 1), (planes,)
            inplanes = planes
    _bn(names, "bn1", inplanes)
    names["linear.weight"], names["linear.bias"] = (num_classes, inplanes), (num_classes,)
    return names


def convfc_names(num_classes=10):
    """dmc's and dbc's ConvFCBase."""
    return {
        "conv_part.0.weight": (32, 3, 5, 5),
        "conv_part.0.bias": (32,),
        "conv_part.3.weight": (64, 32, 5, 5),
        "conv_part.3.bias": (64,),
        "conv_part.6.weight": (128, 64, 5, 5),
        "conv_part.6.bias": (128,),
        "fc_part.0.weight": (1000, 1152),
        "fc_part.0.bias": (1000,),
        "fc_part.2.weight": (1000, 1000),
        "fc_part.2.bias": (1000,),
        "fc_part.4.weight": (num_classes, 1000),
        "fc_part.4.bias": (num_classes,),
    }


def dbc_linear_names(dims, bias):
    """dbc's LinearBase: linear_layers.<j> for dims = [in_dim, *middle_dim, num_classes]."""
    names = {}
    for j in range(len(dims) - 1):
        names[f"linear_layers.{j}.weight"] = (dims[j + 1], dims[j])
        if bias:
            names[f"linear_layers.{j}.bias"] = (dims[j + 1],)
    return names


def dbc_one_layer_names(in_dim, middle_dim, num_classes=10):
    """dbc's LinearOneLayerBase: fc = Sequential(Linear, ReLU, Linear)."""
    return {
        "fc.0.weight": (middle_dim, in_dim),
        "fc.0.bias": (middle_dim,),
        "fc.2.weight": (num_classes, middle_dim),
        "fc.2.bias": (num_classes,),
    }


# ---------------------------------------------------------------------------- helpers


def _constant_state_dict(names):
    """Each tensor filled with its own index, as a zero-stride view of one number (a full-size
    file costs bytes, not gigabytes; the index shows where each tensor went). BatchNorm counts
    are int64 scalars, as torch saves them."""
    sd = {}
    for i, (name, shape) in enumerate(names.items()):
        integer = name.endswith("num_batches_tracked")
        sd[name] = torch.tensor(i) if integer else torch.tensor(float(i)).expand(shape)
    return sd


def _random_state_dict(names, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in names.items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif len(shape) > 1:  # fan-in scaled so activations stay of order one
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            sd[name] = torch.randn(shape, generator=g, dtype=torch.float64) * (2.0 / fan_in) ** 0.5
        else:
            sd[name] = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
    return sd


def _dmc_file(path, sd):
    """As dmc's and dbc's train.py save: epoch, model_state, optimizer_state."""
    optimizer_state = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": [{"lr": 0.05, "params": [0]}]}
    torch.save({"epoch": 200, "model_state": sd, "optimizer_state": optimizer_state}, path)
    return str(path)


def _swa_file(path, sd, swa_sd):
    """As swa's train.py saves: epoch, state_dict, swa_state_dict, swa_n, optimizer."""
    optimizer = {"state": {}, "param_groups": [{"lr": 0.05, "momentum": 0.9, "params": [0, 1]}]}
    torch.save({"epoch": 300, "state_dict": sd, "swa_state_dict": swa_sd, "swa_n": 140, "optimizer": optimizer}, path)
    return str(path)


def _bn_eval(x, sd, p):
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, 1e-5
    )


def _ours(spec, kwargs, path):
    model = build_model(spec, kwargs).double().eval()
    w = ls.load_checkpoint(path, model)
    model.load_state_dict(w.state_dict())
    return model, w


# ---------------------------------------------------------------------------- item 1


def _mlp_and_two_state_dicts():
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [6], "in_features": 4, "num_classes": 3})
    sgd = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    swa = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    return model, sgd, swa


def test_swa_file_with_two_state_dicts_is_refused_naming_both(tmp_path):
    model, sgd, swa = _mlp_and_two_state_dicts()
    path = _swa_file(tmp_path / "checkpoint-300.pt", sgd, swa)
    with pytest.raises(CheckpointError) as info:
        ls.load_checkpoint(path, model)
    message = str(info.value)
    assert "\n" not in message
    assert "'state_dict'" in message and "'swa_state_dict'" in message
    assert f"{path}:KEY" in message
    with pytest.raises(CheckpointError, match="'state_dict', 'swa_state_dict'"):
        read_state_dict(path)  # without a model: every state dict is a candidate


def test_file_key_selects_one_state_dict(tmp_path):
    model, sgd, swa = _mlp_and_two_state_dicts()
    path = _swa_file(tmp_path / "checkpoint-300.pt", sgd, swa)
    w_swa = ls.load_checkpoint(f"{path}:swa_state_dict", model)
    w_sgd = ls.load_checkpoint(f"{path}:state_dict", model)
    for k in sgd:
        assert torch.equal(w_swa[k], swa[k]) and torch.equal(w_sgd[k], sgd[k])
    assert w_swa.source == f"{path}:swa_state_dict"
    assert w_swa.sha256 == file_sha256(path)
    assert split_checkpoint_key(f"{path}:swa_state_dict") == (path, "swa_state_dict")


def test_one_candidate_loads_as_before(tmp_path):
    model, sgd, _ = _mlp_and_two_state_dicts()
    # swa's file without --swa: swa_state_dict is None
    w = ls.load_checkpoint(_swa_file(tmp_path / "a.pt", sgd, None), model)
    assert all(torch.equal(w[k], sgd[k]) for k in sgd)
    # dmc's and dbc's: model_state beside optimizer_state (whose 'state' holds tensors)
    w = ls.load_checkpoint(_dmc_file(tmp_path / "b.pt", sgd), model)
    assert all(torch.equal(w[k], sgd[k]) for k in sgd)
    # {'epoch', 'state_dict'}
    torch.save({"epoch": 3, "state_dict": sgd}, tmp_path / "c.pt")
    w = ls.load_checkpoint(tmp_path / "c.pt", model)
    assert all(torch.equal(w[k], sgd[k]) for k in sgd)


def test_only_state_dicts_matching_the_model_are_candidates(tmp_path):
    model, sgd, _ = _mlp_and_two_state_dicts()
    other = {"encoder.weight": torch.ones(2, 2)}  # another network's state dict
    torch.save({"model": sgd, "teacher": other, "epoch": 1}, tmp_path / "t.pt")
    w = ls.load_checkpoint(tmp_path / "t.pt", model)
    assert all(torch.equal(w[k], sgd[k]) for k in sgd)
    # two, neither the model's: refused, naming both
    torch.save({"a": other, "b": {"x": torch.zeros(1)}}, tmp_path / "n.pt")
    with pytest.raises(CheckpointError, match=r"2 state dicts, none matching the model: 'a', 'b'"):
        ls.load_checkpoint(tmp_path / "n.pt", model)


def test_a_file_whose_name_holds_a_colon_loads_as_given(tmp_path):
    model, sgd, swa = _mlp_and_two_state_dicts()
    plain = tmp_path / "run:3.pt"
    torch.save(sgd, plain)
    w = ls.load_checkpoint(str(plain), model)
    assert all(torch.equal(w[k], sgd[k]) for k in sgd) and w.source == str(plain)
    both = _swa_file(tmp_path / "swa:run.pt", sgd, swa)
    w = ls.load_checkpoint(f"{both}:swa_state_dict", model)
    assert all(torch.equal(w[k], swa[k]) for k in swa)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (
            ":swa",
            r"has no key 'swa'; expected one of \['epoch', 'optimizer', 'state_dict', 'swa_n', 'swa_state_dict'\]",
        ),
        (
            ":epoch",
            r"'epoch' is not a state dict \(it holds int\); the keys holding state dicts are \['state_dict', 'swa_s",
        ),
        (":", r"names no key after ':'"),
    ],
)
def test_bad_keys_are_one_line_errors(tmp_path, suffix, message):
    model, sgd, swa = _mlp_and_two_state_dicts()
    path = _swa_file(tmp_path / "s.pt", sgd, swa)
    with pytest.raises(CheckpointError, match=message) as info:
        ls.load_checkpoint(path + suffix, model)
    assert "\n" not in str(info.value)


def test_key_on_a_safetensors_file_or_missing_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    model, sgd, _ = _mlp_and_two_state_dicts()
    save_file(sgd, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=r"is a \.safetensors file, which holds one state dict"):
        ls.load_checkpoint(f"{tmp_path / 'm.safetensors'}:state_dict", model)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nothere\.pt:state_dict' does not exist"):
        ls.load_checkpoint(f"{tmp_path / 'nothere.pt'}:state_dict", model)


def test_cli_ckpt_takes_file_key(tmp_path, capsys):
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [16]})
    sgd = model.state_dict()
    swa = {k: v + 0.01 for k, v in sgd.items()}
    path = _swa_file(tmp_path / "checkpoint-300.pt", sgd, swa)
    args = ["eval", "--model", "mlp", "--model-kwargs", '{"widths": [16]}', "--data", "digits", "--no-progress"]
    assert main([*args, "--ckpt", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'state_dict', 'swa_state_dict'" in err and "Traceback" not in err
    out = tmp_path / "r.h5"
    assert main([*args, "--ckpt", f"{path}:swa_state_dict", "--out", str(out)]) == 0
    with ls.open_result(out) as f:
        assert f.attrs["checkpoints"][0]["path"] == f"{path}:swa_state_dict"
        assert f.attrs["checkpoints"][0]["sha256"] == file_sha256(path)


# ---------------------------------------------------------------------------- item 2: names and shapes


FULL_SIZE = [
    ("dmc.vgg16", dmc_vgg_names(), "dmc"),
    ("dmc.vgg16bn", dmc_vgg_names(batch_norm=True), "dmc"),
    ("dmc.preresnet110", preresnet_names(12), "dmc"),
    ("dmc.preresnet164", preresnet_names(18), "dmc"),
    ("dmc.wideresnet28x10", wideresnet_names(4, 10), "dmc"),
    ("dmc.convfc", convfc_names(), "dmc"),
    ("swa.vgg16", swa_vgg_names(), "swa"),
    ("swa.vgg16bn", swa_vgg_names(batch_norm=True), "swa"),
    ("swa.preresnet110", preresnet_names(12), "swa"),
    ("swa.preresnet164", preresnet_names(18), "swa"),
    ("swa.wideresnet28x10", wideresnet_names(4, 10), "swa"),
    ("dbc.vgg16", dmc_vgg_names(), "dbc"),
    ("dbc.convfc", convfc_names(), "dbc"),
    ("dbc.linearonelayer", dbc_one_layer_names(784, 2000), "dbc"),
    ("dbc.linearonelayer100", dbc_one_layer_names(3072, 100), "dbc"),
    ("dbc.linear", dbc_linear_names([3072, 6144, 6144, 1152, 1000, 1000, 10], bias=True), "dbc"),
    ("dbc.linear3nobias", dbc_linear_names([3072, 6144, 2000, 10], bias=False), "dbc"),
    ("dbc.linear5nobias", dbc_linear_names([3072, 6144, 2000, 1000, 1000, 10], bias=False), "dbc"),
]


@pytest.mark.parametrize(("spec", "names", "peer"), FULL_SIZE, ids=[s for s, _, _ in FULL_SIZE])
def test_peer_checkpoint_loads_into_its_spec(tmp_path, spec, names, peer):
    sd = _constant_state_dict(names)
    path = tmp_path / "checkpoint.pt"
    if peer == "swa":
        path = _swa_file(path, sd, sd) + ":swa_state_dict"
    else:
        path = _dmc_file(path, sd)
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        model = build_model(spec)
    w = ls.load_checkpoint(path, model)
    ours = model.state_dict()
    assert len(w) == len(ours) == len(names)
    assert {k: tuple(v.shape) for k, v in w.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    # every value arrived, once: the constants 0..len-1 each appear in exactly one entry
    seen = sorted(int(v.reshape(-1)[0]) for v in w.values())
    assert seen == list(range(len(names)))
    del sd, w, model


def test_peer_spec_names_ignore_case_and_match_our_factories():
    assert isinstance(build_model("dmc.PreResNet110"), ls.models.PreResNet)
    model = build_model("dbc.Linear3NoBias", {"num_classes": 100})
    assert [tuple(m.weight.shape) for m in model if isinstance(m, nn.Linear)] == [
        (6144, 3072),
        (2000, 6144),
        (100, 2000),
    ]
    assert all(m.bias is None for m in model if isinstance(m, nn.Linear))


def test_vgg16bn_checkpoint_into_vgg16_without_bn_is_refused(tmp_path):
    path = _dmc_file(tmp_path / "c.pt", _constant_state_dict(dmc_vgg_names(batch_norm=True)))
    with torch.device("meta"):
        model = build_model("vgg16")
    with pytest.raises(CheckpointError, match="does not match the model"):
        ls.load_checkpoint(path, model)


def test_peer_key_map_names_the_naming_and_knows_only_ours():
    naming, renaming = peer_key_map(build_model("vgg16_bn"), ["layer_blocks.0.1.running_mean", "layer_blocks.4.5.bias"])
    assert "layer_blocks" in naming
    assert renaming == {
        "layer_blocks.0.1.running_mean": "features.1.running_mean",
        "layer_blocks.4.5.bias": "features.41.bias",
    }
    assert peer_key_map(nn.Sequential(nn.Linear(2, 2)), ["fc.0.weight"]) is None
    assert peer_key_map(build_model("mlp"), ["features.0.weight"]) is None


# ---------------------------------------------------------------------------- item 2: forward passes


def vgg_oracle(x, stages, classifier):
    """float64 VGG as dmc/swa/dbc define it: per stage conv3x3(pad 1) [+ BN] + ReLU, MaxPool(2);
    flatten; Linear, ReLU, Linear, ReLU, Linear (dropout is the identity in eval)."""
    for stage in stages:
        for conv_w, conv_b, bn in stage:
            x = F.conv2d(x, conv_w, conv_b, padding=1)
            if bn is not None:
                x = F.batch_norm(x, bn["running_mean"], bn["running_var"], bn["weight"], bn["bias"], False, 0.0, 1e-5)
            x = torch.clamp(x, min=0)
        x = F.max_pool2d(x, 2, 2)
    x = x.reshape(x.shape[0], -1)
    (w1, b1), (w2, b2), (w3, b3) = classifier
    x = torch.clamp(x @ w1.T + b1, min=0)
    x = torch.clamp(x @ w2.T + b2, min=0)
    return x @ w3.T + b3


def _vgg_parts_dmc(sd, config, batch_norm):
    stages = []
    for s, widths in enumerate(config):
        stage, i = [], 0
        for _ in widths:
            w, b = sd[f"layer_blocks.{s}.{i}.weight"], sd[f"layer_blocks.{s}.{i}.bias"]
            i += 1
            bn = None
            if batch_norm:
                bn = {e: sd[f"layer_blocks.{s}.{i}.{e}"] for e in BN_ENTRIES}
                i += 1
            stage.append((w, b, bn))
        stages.append(stage)
    return stages


def _vgg_parts_swa(sd, config, batch_norm):
    stages, k = [], 0
    for widths in config:
        stage = []
        for _ in widths:
            w, b = sd[f"features.{k}.weight"], sd[f"features.{k}.bias"]
            k += 1
            bn = None
            if batch_norm:
                bn = {e: sd[f"features.{k}.{e}"] for e in BN_ENTRIES}
                k += 1
            k += 1
            stage.append((w, b, bn))
        k += 1
        stages.append(stage)
    return stages


SMALL_VGG = tuple(tuple(max(1, round(c * 0.0625)) for c in widths) for widths in VGG16)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("peer", ["dmc", "swa"])
def test_vgg_forward_equals_the_peers_definition(tmp_path, peer, batch_norm):
    names_of, parts_of = (dmc_vgg_names, _vgg_parts_dmc) if peer == "dmc" else (swa_vgg_names, _vgg_parts_swa)
    sd = _random_state_dict(names_of(SMALL_VGG, batch_norm, num_classes=7, hidden=32))
    path = _dmc_file(tmp_path / "c.pt", sd) if peer == "dmc" else _swa_file(tmp_path / "c.pt", sd, None)
    spec = f"{peer}.vgg16bn" if batch_norm else f"{peer}.vgg16"
    model, w = _ours(spec, {"width": 0.0625, "num_classes": 7}, path)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    classifier = [(sd[f"classifier.{i}.weight"], sd[f"classifier.{i}.bias"]) for i in (1, 4, 6)]
    expected = vgg_oracle(x, parts_of(sd, SMALL_VGG, batch_norm), classifier)
    torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
    if peer == "dmc":  # the renaming is a bijection onto our names, values bit for bit
        renaming = peer_key_map(model, sd)[1]
        assert sorted(renaming.values()) == sorted(w)
        assert all(torch.equal(w[ours], sd[theirs]) for theirs, ours in renaming.items())


def preresnet_oracle(x, sd, blocks):
    """float64 bottleneck PreResNet as dmc/swa define it (avgpool(8) on 32x32 inputs)."""
    x = F.conv2d(x, sd["conv1.weight"], padding=1)
    for layer in (1, 2, 3):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            stride = 2 if layer > 1 and b == 0 else 1
            out = F.conv2d(torch.clamp(_bn_eval(x, sd, f"{p}.bn1"), min=0), sd[f"{p}.conv1.weight"])
            out = F.conv2d(
                torch.clamp(_bn_eval(out, sd, f"{p}.bn2"), min=0), sd[f"{p}.conv2.weight"], stride=stride, padding=1
            )
            out = F.conv2d(torch.clamp(_bn_eval(out, sd, f"{p}.bn3"), min=0), sd[f"{p}.conv3.weight"])
            residual = x
            if f"{p}.downsample.0.weight" in sd:
                residual = F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride)
            x = out + residual
    x = torch.clamp(_bn_eval(x, sd, "bn"), min=0)
    x = F.avg_pool2d(x, 8).reshape(x.shape[0], -1)
    return x @ sd["fc.weight"].T + sd["fc.bias"]


def test_preresnet_forward_equals_the_peers_definition(tmp_path):
    # two bottlenecks per stage (our depth 20 with bottleneck blocks): the first of each stage
    # with a downsample, the second without
    sd = _random_state_dict(preresnet_names(2, num_classes=5))
    path = _swa_file(tmp_path / "c.pt", _random_state_dict(preresnet_names(2, num_classes=5), seed=9), sd)
    model, _ = _ours(
        "landscape.models.resnet:PreResNet",
        {"depth": 20, "block": "bottleneck", "num_classes": 5},
        path + ":swa_state_dict",
    )
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x), preresnet_oracle(x, sd, 2), rtol=1e-10, atol=1e-10)


def wideresnet_oracle(x, sd, blocks):
    """float64 WideResNet as dmc/swa define it (stride on conv2, avg_pool2d(8) on 32x32)."""
    x = F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], padding=1)
    for layer in (1, 2, 3):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            stride = 2 if layer > 1 and b == 0 else 1
            out = F.conv2d(
                torch.clamp(_bn_eval(x, sd, f"{p}.bn1"), min=0),
                sd[f"{p}.conv1.weight"],
                sd[f"{p}.conv1.bias"],
                padding=1,
            )
            out = F.conv2d(
                torch.clamp(_bn_eval(out, sd, f"{p}.bn2"), min=0),
                sd[f"{p}.conv2.weight"],
                sd[f"{p}.conv2.bias"],
                stride=stride,
                padding=1,
            )
            residual = x
            if f"{p}.shortcut.0.weight" in sd:
                residual = F.conv2d(x, sd[f"{p}.shortcut.0.weight"], sd[f"{p}.shortcut.0.bias"], stride=stride)
            x = out + residual
    x = torch.clamp(_bn_eval(x, sd, "bn1"), min=0)
    x = F.avg_pool2d(x, 8).reshape(x.shape[0], -1)
    return x @ sd["linear.weight"].T + sd["linear.bias"]


def test_wideresnet_forward_equals_the_peers_definition(tmp_path):
    sd = _random_state_dict(wideresnet_names(blocks=2, k=1, num_classes=4))
    path = _dmc_file(tmp_path / "c.pt", sd)
    model, _ = _ours("dmc.wideresnet28x10", {"depth": 16, "widen_factor": 1, "num_classes": 4}, path)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(x), wideresnet_oracle(x, sd, 2), rtol=1e-10, atol=1e-10)


def mlp_oracle(x, layers):
    """float64 ReLU MLP: flatten, then x W^T (+ b), ReLU between layers."""
    x = x.reshape(x.shape[0], -1)
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + (0 if b is None else b)
        if i < len(layers) - 1:
            x = torch.clamp(x, min=0)
    return x


@pytest.mark.parametrize(
    ("names", "kwargs", "layers"),
    [
        (
            dbc_linear_names([12, 20, 16, 5], bias=False),
            {"in_features": 12, "widths": [20, 16], "num_classes": 5, "bias": False},
            lambda sd: [(sd[f"linear_layers.{j}.weight"], None) for j in range(3)],
        ),
        (
            dbc_linear_names([12, 20, 5], bias=True),
            {"in_features": 12, "widths": [20], "num_classes": 5},
            lambda sd: [(sd[f"linear_layers.{j}.weight"], sd[f"linear_layers.{j}.bias"]) for j in range(2)],
        ),
        (
            dbc_one_layer_names(12, 9, num_classes=5),
            {"in_features": 12, "widths": [9], "num_classes": 5},
            lambda sd: [(sd["fc.0.weight"], sd["fc.0.bias"]), (sd["fc.2.weight"], sd["fc.2.bias"])],
        ),
        (
            {"fc.weight": (5, 12), "fc.bias": (5,)},  # dbc's LogRegression
            {"in_features": 12, "widths": [], "num_classes": 5},
            lambda sd: [(sd["fc.weight"], sd["fc.bias"])],
        ),
    ],
    ids=["linear_layers-nobias", "linear_layers", "fc-one-layer", "fc-logregression"],
)
def test_dbc_mlp_forward_equals_the_peers_definition(tmp_path, names, kwargs, layers):
    sd = _random_state_dict(names)
    model, w = _ours("mlp", kwargs, _dmc_file(tmp_path / "c.pt", sd))
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(x), mlp_oracle(x, layers(sd)), rtol=1e-12, atol=1e-12)
    # the engine takes the renamed MLP like any other: one point equals the module
    model32 = build_model("mlp", kwargs)
    w32 = ls.load_checkpoint(w.source, model32)
    model32.load_state_dict(w32.state_dict())
    data = ls.TensorData(x.float(), torch.tensor([0, 1, 2, 3]))
    res = ls.evaluate(model32, [w32], data, progress=False)
    expected = F.cross_entropy(model32(x.float()), torch.tensor([0, 1, 2, 3])).item()
    assert abs(float(res["loss"][0]) - expected) < 1e-5
