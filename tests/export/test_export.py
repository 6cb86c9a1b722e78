"""ONNX export: finalize a copy, fold BN, one file, parity through onnxruntime, verify passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.errors import ExportError
from nmdeploy.export.onnx import export_onnx
from nmdeploy.export.verify import verify_model, verify_onnx


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A MaxQ-sparsified net (trained a few steps, BN statistics moved), exported once."""
    model = _net()
    sp = nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3, 4, 4)).logsumexp(1).mean().backward()
        opt.step()
    path = tmp_path_factory.mktemp("export") / "net.onnx"
    report = export_onnx(model, torch.randn(2, 3, 4, 4), path)
    return model, sp, path, report


def test_export_writes_one_checked_file_and_leaves_the_model_alone(exported):
    model, sp, path, report = exported
    assert [p.name for p in path.parent.iterdir()] == ["net.onnx"]  # no external data, no temp files
    assert report.path == str(path) and not report.external_data and report.size_bytes == path.stat().st_size
    assert all(hasattr(model.get_submodule(name), "parametrizations") for name in sp.sparse_layers)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    (parity,) = report.parity
    assert parity.max_abs_error < 1e-4 and parity.cosine > 0.999999


def test_exported_model_matches_eval_outputs_at_any_batch(exported):
    model, _, path, _ = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 4, 4)
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    model.train()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_export_of_a_finalized_model_verifies_and_a_perturbed_weight_fails_exactly(exported):
    _, _, path, _ = exported
    report = verify_onnx(path)
    assert report.ok
    assert [(r.weight, r.observed, r.hw_2of4) for r in report.layers if r.required] == [
        ("3.weight", "2:4", True),
        ("6.weight", "2:4", True),
        ("9.weight", "2:4", True),
    ]
    proto = onnx.load(str(path))
    init = next(i for i in proto.graph.initializer if i.name == "6.weight")
    w = onnx.numpy_helper.to_array(init).copy()
    group = np.flatnonzero(w[7, 4:8, 0, 0] == 0)
    w[7, 4 + group[0], 0, 0] = 0.5  # output channel 7, input group 4..7: now 3 non-zeros
    init.CopyFrom(onnx.numpy_helper.from_array(w, "6.weight"))
    bad = verify_model(proto)
    assert [f.weight for f in bad.failures] == ["6.weight"]
    layer = bad.failures[0]
    assert (layer.violations, layer.first_violation, layer.observed) == (1, (7, 4, 0, 0), "3:4")


def test_agrees_with_polygraphy_inspect_sparsity(exported):
    """An independent check: polygraphy's checker (it logs, and always exits 0)."""
    _, _, path, _ = exported
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "polygraphy"), "inspect", "sparsity", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = proc.stdout + proc.stderr
    polygraphy = {}
    for line in text.splitlines():
        if "Found sparse tensor:" in line:
            polygraphy[line.rsplit(":", 1)[1].strip()] = True
        elif "Found non-sparse tensor:" in line:
            polygraphy[line.rsplit(":", 1)[1].strip()] = False
    ours = {r.weight: r.hw_2of4 for r in verify_onnx(path).layers if r.shape[r.axis] % 4 == 0}
    assert polygraphy and polygraphy == ours


def test_static_batch_and_multiple_inputs(tmp_path):
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.a(x), self.b(y)

    report = export_onnx(Two(), (torch.randn(2, 8), torch.randn(2, 8)), tmp_path / "two.onnx", dynamic_batch=False)
    assert len(report.inputs) == 2 and len(report.parity) == 2
    session = ort.InferenceSession(report.path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 8]


def test_failed_export_leaves_nothing(tmp_path):
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow cannot be exported
                return x * 2
            return x

    with pytest.raises(ExportError, match="^torch.onnx.export failed: "):
        export_onnx(Branchy(), torch.ones(2, 3), tmp_path / "b.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="should end in .onnx"):
        export_onnx(_net(), torch.randn(1, 3, 4, 4), tmp_path / "b.pt")


def test_parity_above_tolerance_fails_and_writes_nothing(exported, tmp_path):
    model, _, _, report = exported
    assert report.parity[0].max_abs_error > 0  # BN folding changes the arithmetic a little
    with pytest.raises(ExportError) as info:
        export_onnx(model, torch.randn(2, 3, 4, 4), tmp_path / "strict.onnx", atol=0.0, rtol=0.0)
    message = str(info.value)
    assert message.startswith("ONNX output 'linear_1' differs from PyTorch by ")
    assert message.endswith("above the tolerance 0; nothing was written")
    assert list(tmp_path.iterdir()) == []
