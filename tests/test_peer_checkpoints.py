"""Checkpoints of the peer repositories load as they are (issue 19, item 1).

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

import landscape as ls
from landscape.cli import main
from landscape.models import build_model
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
