"""TorchScript models (arch: torchscript) train like the zoo's models: `quilt run` under mpiexec
with training.mode scratch (data parallel over 2 ranks), finetune, freeze (pretrained in the run)
and proxy, with an autoencoder at a cut: 4-D (Conv2d) after small_cnn's features, 2-D (Linear)
inside its classifier, 3-D (Linear over the features of ViT tokens). The models come from
tests/models/make_torchscript_fixture.py. The trained weights load back through model.weights
into a pipeline of the same model and through Python's torch.load into
torch.jit.load(m.pt).load_state_dict. Models that cannot train exit 2 on every rank and write
nothing. small_cnn learns 1000 Fashion-MNIST images in two epochs (about 70% top-1); the proxy
reconstructs ViT tokens of synthetic data."""
import functools
import os
from pathlib import Path

import h5py
import pytest

from conftest import BUILD, mpi_quilt  # noqa: E402

FIXTURE = os.environ.get("QUILT_TORCHSCRIPT_FIXTURE_DIR")
pytestmark = pytest.mark.skipif(not BUILD or not FIXTURE,
                                reason="QUILT_BUILD_DIR / fixture not set (run through CTest)")

TRAIN = """quilt: 1
name: ts-train
model: {{arch: torchscript, path: {path}, input: {input}{weights}}}
data: {{kind: {data}, seed: 3{data_extra}}}
boards: {{count: {ranks}}}
partition: {{cuts: [{cut}]}}
autoencoder: {{rate: 4}}
training: {{mode: {mode}, epochs: {epochs}, batch: 32, lr: 0.003, optimizer: adam,
           test_samples: 300{extra}}}
"""

quilt = functools.partial(mpi_quilt, ranks=1, timeout=300)


def model(name):
    return Path(FIXTURE) / (name + ".pt")


FASHION = dict(data="fashion-mnist", data_extra=", train_samples: 1000")


def experiment(tmp_path, name="small_cnn", input="[1, 28, 28]", cut="after_features",
               mode="scratch", epochs=2, ranks=1, weights="", extra="", data="synthetic",
               data_extra=""):
    p = tmp_path / "exp.yaml"
    p.write_text(TRAIN.format(path=model(name), input=input, cut=cut, mode=mode, epochs=epochs,
                              ranks=ranks, weights=weights and f", weights: {weights}",
                              extra=extra, data=data, data_extra=data_extra))
    return p


def s(x):
    return x.decode() if isinstance(x, bytes) else str(x)


def train_ok(tmp_path, ranks=1, **kw):
    """Runs the training experiment; returns (run attrs, params, training attrs, datasets)."""
    out = tmp_path / "o.h5"
    r = quilt("run", experiment(tmp_path, ranks=ranks, **kw), "--output", out, ranks=ranks)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (rid,) = [s(x) for x in f["run_order"][()]]
        g = f["runs"][rid]
        attrs = dict(g.attrs)
        assert s(attrs["status"]) == "ok", attrs
        params = {k: s(v) for k, v in g["params"].attrs.items()}
        t = g["training"]
        tattrs = {k: (s(v) if isinstance(v, (str, bytes)) else v) for k, v in t.attrs.items()}
        data = {k: ([s(x) for x in t[k][()]] if k == "phase" else t[k][()]) for k in t}
    return attrs, params, tattrs, data


def test_scratch_data_parallel_trains_and_its_weights_load_back(tmp_path):
    torch = pytest.importorskip("torch")
    _, params, t, d = train_ok(tmp_path, ranks=2, **FASHION)
    assert t["ranks"] == 2 and d["phase"] == ["train"] * 2
    assert d["train_loss"][-1] < d["train_loss"][0]
    assert t["final_top1"] > 0.5, t  # 10 classes: chance is 0.1
    weights = Path(params["training.saved_weights"])
    assert weights.exists()

    # Python: the file is the scripted module's state_dict plus the autoencoder's keys.
    saved = torch.load(weights)
    assert {"ae_after_features.encoder.weight", "ae_after_features.decoder.bias"} <= set(saved)
    base = {k: v for k, v in saved.items() if not k.startswith("ae_")}
    m = torch.jit.load(str(model("small_cnn")))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert set(base) == set(before)
    m.load_state_dict(base)  # strict: every key, every shape
    for k in ("features.0.weight", "features.1.running_mean", "classifier.4.bias"):
        assert not torch.equal(m.state_dict()[k], before[k]), k  # trained, and loaded
    assert int(m.state_dict()["features.1.num_batches_tracked"]) > 0
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)

    # model.weights: a pipeline of the same model, cut and rate serves them; its outputs are
    # checked against the single-process model (the boards freeze the trained weights).
    serve = tmp_path / "serve.yaml"
    serve.write_text(f"""quilt: 1
name: serve
model: {{arch: torchscript, path: {model("small_cnn")}, input: [1, 28, 28], weights: {weights}}}
boards: {{count: 2}}
partition: {{cuts: [after_features]}}
autoencoder: {{rate: 4}}
measurement: {{batch: 4, warmup_batches: 1, batches: 2, check_outputs: true}}
""")
    out = tmp_path / "s.h5"
    r = quilt("run", serve, "--output", out, ranks=2)
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out, "r") as f:
        (g,) = f["runs"].values()
        assert s(g.attrs["status"]) == "ok" and g.attrs["max_abs_error"] >= 0


def test_finetune_from_python_weights_with_a_linear_autoencoder(tmp_path):
    # after_classifier.2: the [N, 32] output of the classifier's first Linear (2-D at the cut).
    _, params, t, d = train_ok(tmp_path, cut="after_classifier.2", mode="finetune", epochs=3,
                               weights=model("small_cnn_sd"), extra=", freeze_epochs: 1",
                               **FASHION)
    assert d["phase"] == ["train"] * 3 and t["phase1_epochs"] == 1
    assert t["pretrained"] == f"model.weights {model('small_cnn_sd')}"
    assert d["train_loss"][-1] < d["train_loss"][0]
    assert t["final_top1"] > 0.5, t
    assert Path(params["training.saved_weights"]).exists()


def test_freeze_with_pretraining(tmp_path):
    _, params, t, d = train_ok(tmp_path, mode="freeze", epochs=2,
                               extra=", freeze_epochs: 1, pretrain_epochs: 1, "
                               "pretrain_samples: 1000", **FASHION)
    assert d["phase"] == ["freeze", "unfreeze"] and t["phase1_epochs"] == 1
    assert "in this run" in t["pretrained"] and t["pretrain_top1"] > 0.5, t
    assert t["final_top1"] > 0.5, t
    assert list((tmp_path / ".quilt-cache").glob("pretrained-*.pt"))
    assert Path(params["training.saved_weights"]).exists()


def test_proxy_on_vit_tokens(tmp_path):
    # after_encoder: 17 tokens x 64 features; the autoencoder is Linear over the features.
    _, _, t, d = train_ok(tmp_path, name="vit", input="[3, 32, 32]", cut="after_encoder",
                          mode="proxy", epochs=3)
    assert d["phase"] == ["proxy"] * 3
    assert d["test_loss"][-1] < d["test_loss"][0]
    assert t["final_test_loss"] > 0 and t["full_epoch_s"] > 0 and t["proxy_speedup"] > 0


@pytest.mark.parametrize("kind,key,expect", [
    ("no_parameters", "training.mode", "no parameters to train"),
    ("not_a_classifier", "model.path", "returns [N, 16, 7, 7]"),
    ("too_few_outputs", "data.kind", "has 3 classes but the TorchScript model"),
])
def test_models_that_cannot_train_exit_2_and_write_nothing(tmp_path, kind, key, expect):
    args = {
        "no_parameters": dict(name="frozen_cnn", cut=""),
        "not_a_classifier": dict(name="conv_head", cut="after_3"),
        "too_few_outputs": dict(name="loop", input="[8]", cut="after_head", data="uci-iris"),
    }[kind]
    out = tmp_path / "o.h5"
    r = quilt("run", experiment(tmp_path, ranks=2, **args), "--output", out, ranks=2)
    assert r.returncode == 2, r.stdout + r.stderr
    assert key in r.stderr and expect in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "o.weights").exists()
