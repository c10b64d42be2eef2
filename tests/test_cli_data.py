"""The command line with user data: py:module:function specs, text: corpora, token metrics,
module:function models from the current directory, and one-line errors for bad data."""

import math
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch

import landscape as ls
from landscape.cli import main

JSON_DIR = os.path.join(os.path.dirname(os.__file__), "json")

MODULE = """
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Tokens(Dataset):
    def __init__(self, n, T, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 256, (n, T), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def loader(split, n=12, T=16, batch_size=5):
    return DataLoader(Tokens(n, T, seed=0 if split == "train" else 1), batch_size=batch_size)


class TinyLM(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.emb = nn.Embedding(256, d)
        self.out = nn.Linear(d, 256)

    def forward(self, input_ids):
        return self.out(self.emb(input_ids))


class NoLogits(TinyLM):
    def forward(self, input_ids):
        return {"hidden": self.emb(input_ids)}


def lm(d=8):
    return TinyLM(d)


def nologits(d=8):
    return NoLogits(d)


def not_data(split):
    return 42


def keyless(split):
    return [{"foo": torch.tensor(3)}]


def pairs(split):
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 64, generator=g), torch.randint(0, 10, (20,), generator=g)
"""


@pytest.fixture
def mod(tmp_path, monkeypatch):
    """A module written into tmp_path, which becomes the current directory (not on sys.path)."""
    name = f"lsdata_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def _ckpt(tmp_path, mod_name, factory="lm", name="lm.pt"):
    """A checkpoint of ``mod_name:factory`` (imported here, then forgotten, so that the CLI
    has to find the module in the current directory itself)."""
    sys.path.append(str(tmp_path))
    try:
        model = getattr(__import__(mod_name), factory)()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(mod_name, None)
    torch.manual_seed(0)
    model.load_state_dict({k: torch.randn_like(v) for k, v in model.state_dict().items()})
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return model, str(path)


def test_py_loader_of_dict_batches_with_a_cwd_model_equals_evaluate(tmp_path, mod, capsys):
    args = ["--model", f"{mod}:lm", "--data", f"py:{mod}:loader", "--data-kwargs", '{"n": 14, "batch_size": 4}']
    metrics = ["token_loss", "perplexity", "token_acc"]
    out = tmp_path / "r.h5"
    model, ckpt = _ckpt(tmp_path, mod)
    # the module is found in the current directory although it is not on sys.path
    assert mod not in sys.modules and str(tmp_path) not in sys.path
    argv = ["eval", *args, "--ckpt", ckpt, "--metrics", ",".join(metrics), "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    module = sys.modules[mod]
    direct = ls.evaluate(
        model, [ls.load_checkpoint(ckpt, model)], module.loader("test", n=14, batch_size=4), metrics, progress=False
    )
    with ls.open_result(out) as f:
        assert f.done.all()
        for name in metrics:
            np.testing.assert_allclose(f.read_metric(name), direct[name], rtol=1e-6)
        assert f.attrs["data"]["spec"] == f"py:{mod}:loader"
        assert f.attrs["data-kwargs"] == '{"n": 14, "batch_size": 4}'
    np.testing.assert_allclose(direct["perplexity"], np.exp(direct["token_loss"]), rtol=1e-9)
    # --max-samples takes the first samples of the loader (the last batch cut)
    capsys.readouterr()
    assert main(argv[:-3] + ["--max-samples", "6", "--no-progress"]) == 0
    first6 = ls.evaluate(
        model,
        [ls.load_checkpoint(ckpt, model)],
        (module.loader("test", n=14).dataset.ids[:6], module.loader("test", n=14).dataset.ids[:6]),
        ["token_loss"],
        progress=False,
    )
    assert f"{first6['token_loss'][0]:.5g}" in capsys.readouterr().out


def test_text_corpus_perplexity_is_exp_token_loss(tmp_path, mod, capsys):
    model, ckpt = _ckpt(tmp_path, mod)
    out = tmp_path / "t.h5"
    argv = ["eval", "--model", f"{mod}:lm", "--ckpt", ckpt, "--data", f"text:{JSON_DIR}", "--seq-len", "32"]
    argv += ["--max-samples", "40", "--metrics", "token_loss,perplexity,token_acc", "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    with ls.open_result(out) as f:
        loss, ppl = f.read_metric("token_loss")[0], f.read_metric("perplexity")[0]
        data_attrs = f.attrs["data"]
    assert ppl == pytest.approx(math.exp(loss), rel=1e-9)
    assert data_attrs["seq_len"] == 32 and data_attrs["num_classes"] == 256 and data_attrs["n"] == 40
    test = ls.load_data(f"text:{JSON_DIR}", "test", seq_len=32, max_samples=40)
    direct = ls.evaluate(model, [ls.load_checkpoint(ckpt, model)], test, ["token_loss"], progress=False)
    assert loss == pytest.approx(direct["token_loss"][0], rel=1e-6)
    assert data_attrs["text_sha256"] == test.describe()["text_sha256"]


def test_py_tensors_work_in_commands_that_need_memory(tmp_path, mod, capsys):
    """A py: function returning (x, y) runs the in-memory commands too (here hessian eig)."""
    torch.manual_seed(0)
    model = ls.build_model("mlp", {"widths": [8]})
    ckpt = tmp_path / "m.pt"
    torch.save(model.state_dict(), ckpt)
    argv = ["hessian", "eig", "--model", "mlp", "--model-kwargs", '{"widths": [8]}', "--data", f"py:{mod}:pairs"]
    argv += ["--ckpt", str(ckpt), "--max-iter", "5", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "lambda_max" in capsys.readouterr().out


def _empty_folder(tmp_path):
    folder = tmp_path / "empty_corpus"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"")
    return str(folder)


@pytest.mark.parametrize(
    "case,fragment",
    [
        ("batch", "cannot read a batch of type dict with keys ['foo']"),
        ("logits", "model output of type dict with keys ['hidden'] has no logits"),
        ("targets", "metric 'token_loss': outputs [20, 10] and targets [20] do not match"),
        ("module", "could not import module 'no_such_module_xyz' for data spec"),
        ("function", "has no attribute 'missing'"),
        ("not-data", "data of type int is not a data set"),
        ("normalize", "normalize (--normalize) does not apply to 'py:"),
        ("text-missing", "text path 'no/such/corpus' does not exist"),
        ("text-empty", "holds no bytes"),
        ("kwargs", "data kwargs {'n': 3} apply to py:<module>:<function> specs, not to 'digits'"),
    ],
)
def test_bad_data_is_one_line_exit_2_and_no_file(tmp_path, mod, capsys, case, fragment):
    model_args = ["--model", f"{mod}:lm"]
    data = f"py:{mod}:loader"
    extra = []
    if case == "batch":
        data = f"py:{mod}:keyless"
    elif case == "logits":
        model_args = ["--model", f"{mod}:nologits"]
    elif case == "targets":
        model_args = ["--model", "mlp", "--model-kwargs", '{"widths": [8]}']
        data = f"py:{mod}:pairs"
    elif case == "module":
        data = "py:no_such_module_xyz:load"
    elif case == "function":
        data = f"py:{mod}:missing"
    elif case == "not-data":
        data = f"py:{mod}:not_data"
    elif case == "normalize":
        extra = ["--normalize"]
    elif case == "text-missing":
        data = "text:no/such/corpus"
    elif case == "text-empty":
        data = "text:" + _empty_folder(tmp_path)
    elif case == "kwargs":
        data, extra = "digits", ["--data-kwargs", '{"n": 3}']
    if ":" in model_args[1]:
        _, ckpt = _ckpt(tmp_path, mod, model_args[1].split(":")[1])
    else:
        ckpt = str(tmp_path / "c.pt")
        torch.save(ls.build_model("mlp", {"widths": [8]}).state_dict(), ckpt)
    out = tmp_path / "out.h5"
    argv = ["eval", *model_args, "--data", data, *extra, "--ckpt", ckpt, "--metrics", "token_loss"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("landscape: error:") and fragment in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "--debug" not in err
    assert not out.exists()


def test_console_script_imports_from_the_current_directory(tmp_path, mod):
    """The installed `landscape` script (whose sys.path lacks the current directory) finds
    module:function models and py: data there, and bad data is one line on the real stderr."""
    script = shutil.which("landscape") or os.path.join(os.path.dirname(sys.executable), "landscape")
    if not os.path.exists(script):
        pytest.skip("the landscape console script is not installed")
    _, ckpt = _ckpt(tmp_path, mod)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    base = [script, "eval", "--model", f"{mod}:lm", "--ckpt", ckpt, "--metrics", "token_loss", "--no-progress"]
    r = subprocess.run([*base, "--data", f"py:{mod}:loader"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "token_loss" in r.stdout
    r = subprocess.run(
        [*base, "--data", f"py:{mod}:keyless", "--out", "x.h5"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "landscape: error: cannot read a batch of type dict with keys ['foo']: no tensor with a leading sample "
        "dimension; expected a dict of tensors with 'labels' as the targets (or pass forward=)"
    ]
    assert not (tmp_path / "x.h5").exists()
