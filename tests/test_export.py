"""``export``: a checkpoint as ONNX / TorchScript that runs without Lightning and gives the checkpoint's logits.

The shared LeNet checkpoint (conftest; "mnist" normalization, so the normalization built into the exported graph is
not a no-op) is exported once per format, as a user runs the command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

import mnist_lit.inference.export as export_module
from mnist_lit.data.normalization import normalize
from mnist_lit.inference.export import TOLERANCE, main
from mnist_lit.inference.predictor import Predictor

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
SUMMARY = re.compile(r"max \|Δ logit\| (\S+), classes agree on (\d+)/(\d+) test images")
N_IMAGES = 16


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # slow: the trained checkpoint


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    """The first MNIST test digits, uint8 (N, 1, 28, 28)."""
    return MNIST(mnist_dir, train=False).data[:N_IMAGES].unsqueeze(1)


def run_export(*args: str | Path, mnist_dir: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MNIST_LIT_DATA_DIR": mnist_dir}
    return subprocess.run([sys.executable, "-m", "mnist_lit.cli", "export", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def exported(ckpt, mnist_dir) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each format exported once, to its default file beside the checkpoint."""
    return {fmt: (ckpt.with_suffix(suffix), run_export("--ckpt", ckpt, "--format", fmt, mnist_dir=mnist_dir,
                                                       cwd=ckpt.parent))
            for fmt, suffix in FORMATS.items()}


# A separate interpreter in which Lightning, torchmetrics and mnist_lit cannot be imported: the exported file must
# run on torch alone (TorchScript) or onnxruntime + numpy alone (ONNX, torch not even imported).
STANDALONE = textwrap.dedent("""
    import importlib.abc, json, sys
    import numpy as np

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics",
                                      "mnist_lit"}:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocked())
    fmt, model_path, images_path, out_path = sys.argv[1:5]
    images = np.load(images_path)
    info = {}
    if fmt == "torchscript":
        import warnings
        import torch
        torch.set_num_threads(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14: TorchScript is deprecated
            extra = {"mnist_lit.json": ""}
            model = torch.jit.load(model_path, _extra_files=extra)
        info["metadata"] = json.loads(extra["mnist_lit.json"])
        with torch.no_grad():
            logits = model(torch.from_numpy(images)).numpy()
            one = model(torch.from_numpy(images[:1])).numpy()
            as_float = model(torch.from_numpy(images).float()).numpy()
        info["float_input_max_diff"] = float(np.abs(as_float - logits).max())
    else:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        info.update(input=[inp.name, inp.type, inp.shape], output=[out.name, out.type, out.shape],
                    metadata=session.get_modelmeta().custom_metadata_map)
        logits = session.run(None, {inp.name: images})[0]
        one = session.run(None, {inp.name: images[:1]})[0]
        info["torch_imported"] = "torch" in sys.modules
    info["batch_of_one_max_diff"] = float(np.abs(one - logits[:1]).max())
    info["blocked_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in {"lightning", "mnist_lit"})
    np.save(out_path, logits)
    print(json.dumps(info))
""")


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_beside_the_checkpoint_and_agrees_on_the_test_set(fmt, exported, ckpt):
    path, run = exported[fmt]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr, run.stderr
    match = SUMMARY.search(run.stdout)
    assert match, run.stdout
    diff, agree, total = float(match[1]), int(match[2]), int(match[3])
    print(f"{fmt}: {match[0]}")
    assert (agree, total) == (10_000, 10_000)
    assert diff <= 1e-4 < TOLERANCE
    assert f"wrote {path}" in run.stdout and path.is_file() and path.stat().st_size > 10_000
    assert not [p.name for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_file_runs_without_lightning_and_gives_the_checkpoints_logits(fmt, exported, ckpt, digits,
                                                                                tmp_path):
    path, run = exported[fmt]
    assert run.returncode == 0, run.stderr[-3000:]
    np.save(tmp_path / "images.npy", digits.numpy())
    script = tmp_path / "standalone.py"
    script.write_text(STANDALONE)
    done = subprocess.run([sys.executable, str(script), fmt, str(path), str(tmp_path / "images.npy"),
                           str(tmp_path / "logits.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout)
    assert info["blocked_imported"] == []
    assert info["batch_of_one_max_diff"] <= 1e-5  # the batch dimension is dynamic
    assert info["metadata"]["mnist_lit.normalization"] == "mnist" and info["metadata"]["mnist_lit.net"] == "lenet"
    if fmt == "onnx":
        assert info["input"][:2] == ["pixels", "tensor(uint8)"] and info["input"][2][1:] == [1, 28, 28]
        assert isinstance(info["input"][2][0], str)  # a named, dynamic batch dimension
        assert info["output"][:2] == ["logits", "tensor(float)"] and info["output"][2][1:] == [10]
        assert info["torch_imported"] is False
    else:
        assert info["float_input_max_diff"] == 0.0  # float 0–255 pixels give the same logits

    logits = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    predictor = Predictor.from_checkpoint(ckpt)
    with torch.no_grad():
        expected = predictor.net(normalize(digits, predictor.normalization))
    assert logits.shape == (N_IMAGES, 10) and logits.dtype == torch.float32
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0), (logits - expected).abs().max()
    assert torch.allclose(logits.softmax(1), predictor.probabilities(digits), atol=1e-5)


def test_existing_output_is_not_overwritten_without_overwrite(ckpt, tmp_path, capsys):
    out = tmp_path / "model.pt"
    out.write_bytes(b"precious")
    assert main(["--ckpt", str(ckpt), "--format", "torchscript", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(f"error: {out} already exists") and "--overwrite" in captured.err
    assert out.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]

    assert main(["--ckpt", str(ckpt), "--format", "torchscript", "--out", str(out), "--overwrite", "--no-check"]) == 0
    assert out.read_bytes() != b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--out", str(ckpt), "--overwrite", "--no-check"]) == 2
    assert "is the checkpoint itself" in capsys.readouterr().err
    Predictor.from_checkpoint(ckpt)  # still the checkpoint


def test_failed_check_exits_1_and_writes_nothing(ckpt, mnist_dir, tmp_path, monkeypatch, capsys):
    """An export that does not reproduce the checkpoint (here: its logits shifted by 0.01) is not written."""
    save = export_module.SAVERS["torchscript"]

    class Shifted(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.inner(pixels) + torch.linspace(0, 0.01, 10)

    monkeypatch.setitem(export_module.SAVERS, "torchscript", lambda module, path, meta: save(Shifted(module), path))
    out = tmp_path / "shifted.pt"
    assert main(["--ckpt", str(ckpt), "--format", "torchscript", "--out", str(out), "--data-dir", mnist_dir]) == 1
    captured = capsys.readouterr()
    match = SUMMARY.search(captured.out)
    assert match and float(match[1]) > TOLERANCE, captured.out
    assert "does not match the checkpoint" in captured.err and "nothing written" in captured.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["missing", "not_a_checkpoint", "truncated"])
def test_bad_checkpoint_is_one_line_and_exit_2(kind, ckpt, tmp_path, capsys):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "not_a_checkpoint":
        path.write_text("not a checkpoint\n")
    elif kind == "truncated":
        data = ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    assert main(["--ckpt", str(path), "--format", "onnx"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured.err
    assert captured.err.startswith(f"error: {path}"), captured.err
    assert not path.with_suffix(".onnx").exists()


def test_bad_checkpoint_and_bad_format_as_a_user_runs_it(ckpt, mnist_dir, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    run = run_export("--ckpt", truncated, "--format", "torchscript", mnist_dir=mnist_dir, cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert "Traceback" not in run.stderr and run.stderr.startswith(f"error: {truncated}: ")
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.ckpt"]
    with pytest.raises(SystemExit) as exit_:
        main(["--ckpt", str(ckpt), "--format", "tflite"])
    assert exit_.value.code == 2
