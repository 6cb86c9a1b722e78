"""The benchmark scripts keep running, and their baselines compute what they claim to."""

from __future__ import annotations

import torch

from benchmarks.overhead import SortedMaxQMask, main
from nmdeploy.sparsity import maxq_mask


def test_sorted_maxq_baseline_computes_the_same_mask():
    torch.manual_seed(0)
    for w in (torch.randn(32, 16, 3, 3), torch.randn(16, 32)):
        baseline = SortedMaxQMask(2, 4, w, 2e-4, 1e-2)._soft_mask(w)
        library = maxq_mask(w, 2, 4)
        assert torch.equal(baseline != 0, library != 0)
        torch.testing.assert_close(baseline, library, rtol=0, atol=1e-5)


def test_overhead_benchmark_runs(capsys):
    assert main(["--widths", "16,32,64", "--rounds", "2", "--warmup", "1", "--batch", "8"]) == 0
    out = capsys.readouterr().out
    for method in ("dense", "maxq", "maxq-ramp", "maxq-sort", "srste", "ste", "asp"):
        assert f" {method} " in out


def test_verify_speed_benchmark_builds_a_2_4_model_and_runs(capsys):
    from benchmarks.verify_speed import main as verify_speed

    assert verify_speed(["--linears", "0", "--convs", "1", "--repeats", "1", "--skip-polygraphy"]) == 0
    out = capsys.readouterr().out
    assert "2:4 verification of a 2M-parameter ONNX model" in out and "1/1" in out


def test_int8_benchmark_runs_on_a_small_subset(capsys, tmp_path, monkeypatch):
    import pytest

    from tests.data.test_sources import INSTALLED

    if not INSTALLED:
        pytest.skip("apt-get install dataset-fashion-mnist (.ci/setup does)")
    from benchmarks.int8_accuracy import main as int8_accuracy

    monkeypatch.setenv("COLUMNS", "200")  # rich tables keep one line per row

    args = [
        "--dense-epochs",
        "1",
        "--sparse-epochs",
        "2",
        "--train-subset",
        "256",
        "--test-subset",
        "200",
        "--methods",
        "minmax",
        "--rounds",
        "1",
        "--cache",
        str(tmp_path),
    ]
    assert int8_accuracy(args) == 0
    out = capsys.readouterr().out
    assert "MaxQ 2:4 INT8 minmax" in out and "--output-qdq-on-sparse" in out


def test_build_benchmark_runs_on_a_tiny_recipe(capsys, task_files):
    from benchmarks.build_example import main as build_example
    from tests.pipeline.tiny import tiny_overrides

    assert build_example([arg for o in tiny_overrides(*task_files) for arg in ("--set", o)]) == 0
    out = capsys.readouterr().out
    assert "**Wall time of the whole build: " in out and "| quantize | done |" in out and "| int8 | " in out


def test_accuracy_benchmark_runs_and_resumes(capsys, tmp_path):
    import pytest

    from tests.data.test_sources import INSTALLED

    if not INSTALLED:
        pytest.skip("needs dataset-fashion-mnist")
    from benchmarks.accuracy import main as accuracy

    args = [
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--dense-epochs",
        "1",
        "--patterns",
        "2:4",
        "--methods",
        "maxq",
        "--train-subset",
        "512",
        "--runs",
        str(tmp_path),
    ]
    assert accuracy(args) == 0
    out = capsys.readouterr().out
    assert (
        "| maxq | 2:4 | 50% | 1 |" in out
        and "| dense (+1 epochs) | – | 0% | 1 |" in out
        and "MaxQ 2:4 vs converged dense" in out
    )
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["dense-2of4-s0.json", "dense.json", "maxq-2of4-s0.json"]
    assert accuracy(args) == 0 and "maxq-2of4-s0 epoch" not in capsys.readouterr().out  # finished runs are not redone


def test_the_no_multipliers_ablation_gives_hard_masks_and_restores_maxq():
    from benchmarks.maxq_ablations import ABLATIONS, _without_multipliers, summarise

    torch.manual_seed(0)
    w = torch.randn(16, 32, 3, 3)
    soft = maxq_mask(w, 1, 16)
    with _without_multipliers():
        hard = maxq_mask(w, 1, 16)
    assert set(hard.unique().tolist()) == {0.0, 1.0} and torch.equal(hard != 0, soft != 0)
    assert soft.max() > 1 and torch.equal(maxq_mask(w, 1, 16), soft)  # MaxQ is itself again
    table = summarise("1:16", list(ABLATIONS))  # the committed runs
    assert "| `scratch-30` | from scratch, 30 epochs, lr 0.1 | srste | " in table and "| sweep (reference) |" in table


def test_streaming_benchmark_runs_small(capsys, monkeypatch):
    import pytest

    from tests.data.test_sources import INSTALLED

    if not INSTALLED:
        pytest.skip("apt-get install dataset-fashion-mnist (.ci/setup does)")
    from benchmarks.streaming import main as streaming

    monkeypatch.setenv("COLUMNS", "200")
    args = [
        "--items",
        "300,3000",
        "--rss-steps",
        "2",
        "--rss-batch",
        "8",
        "--rss-rounds",
        "1",
        "--steps",
        "3",
        "--rounds",
        "1",
    ]
    assert streaming([*args, "--jpegs", "12"]) == 0
    out = capsys.readouterr().out
    assert "3,000" in out and "DataLoader (fit)" in out and "in-memory tensors" in out
    assert "eval" in out and "train" in out and "2 workers" in out


def test_zoo_benchmark_runs_small(capsys, monkeypatch):
    import pytest

    pytest.importorskip("transformers")
    from benchmarks.zoo import main as zoo

    monkeypatch.setenv("COLUMNS", "200")
    assert zoo(["--small"]) == 0
    out = capsys.readouterr().out
    for name in ("resnet-50", "bert-base"):
        assert f"| **{name}** | **whole chain** |" in out
        assert f"{name}: peak " in out and "2:4 layer verified: met." in out


def test_the_scratch_verdict_needs_the_margin_and_every_pair_positive():
    from benchmarks.scratch import summarise, verdict

    assert verdict([0.6, 0.7, 0.5, 0.9]).endswith("holds") and "mean +0.68 pt over 4 pair(s), 4 positive" in verdict(
        [0.6, 0.7, 0.5, 0.9]
    )
    assert verdict([2.0, 1.0, 0.5, -0.1]).endswith("does NOT hold")  # the mean is not enough
    assert verdict([0.3, 0.4]).endswith("does NOT hold") and verdict([]) == "no paired runs yet"
    table = summarise(["1:16"], 4)  # the committed runs
    assert table.startswith("Runs recorded: ") and "| 1:16 | srste |" in table


def test_distillation_and_permutation_benchmarks_run_small(tmp_path, capsys):
    import pytest

    from tests.data.test_sources import INSTALLED

    if not INSTALLED:
        pytest.skip("needs dataset-fashion-mnist")
    from benchmarks import accuracy
    from benchmarks.distill import summarise
    from benchmarks.permutation import FashionMLP, measure
    from nmdeploy.train import Distill

    data = accuracy._data(subset=512)
    accuracy.train_dense(data, tmp_path, 1)
    run = accuracy.run_one(data, tmp_path, "srste", "2:4", 0, 1, distill=Distill(0.5, 4.0))
    assert run["distill"] == {"weight": 0.5, "temperature": 4.0} and 0 < run["int8_top1"] <= 1
    assert summarise(["default"], ["1:16"])[0].startswith("| arm | what | pattern |")  # the committed runs
    x, y = data["val"]
    row = measure("mlp", FashionMLP(), (x[:8],), "2:4", (x, y))
    assert row["permuted_layers"] == 2 and row["layers"] == 2 and row["permuted_kept"] > row["plain_kept"]
    assert 0 <= row["plain_top1"] <= 1 and 0 <= row["permuted_top1"] <= 1


def test_the_gpu_proof_dry_run_takes_every_step_but_the_timing(tmp_path):
    """bash benchmarks/gpu_proof.sh --dry-run: the GPU script checked on the CPU."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ran = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_proof.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OUT": str(tmp_path)},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "tests collected" in ran.stdout and ran.stdout.rstrip().endswith("(status 0)")
    result = json.loads((tmp_path / "dry_run.json").read_text())
    shapes = json.loads((root / "benchmarks" / "gpu_shapes.json").read_text())
    assert result["dry_run"] is True and result["device"] == "cpu (dry run)"
    expected = sum(len(entries) for entries in shapes["models"].values()) * 2  # fp16 and int8
    assert len(result["rows"]) == expected
    assert all("dense_ms" in row and "speedup" not in row and "error" not in row for row in result["rows"])


def test_the_gpu_shapes_are_the_sparsified_layers_of_each_model():
    import json
    from pathlib import Path

    shapes = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_shapes.json").read_text())
    layers = {model: sum(len(e["layers"]) for e in entries) for model, entries in shapes["models"].items()}
    # every conv but the stem of ResNet-50; every Linear of BERT-base's 12 blocks and its pooler, not the classifier
    assert layers == {"fashion-resnet": 8, "minilm-l6": 36, "resnet-50": 52, "bert-base": 73}
    resnet = {(e["m"], e["n"], e["k"]) for e in shapes["models"]["resnet-50"]}
    assert (32 * 56 * 56, 64, 64 * 9) in resnet and (32 * 7 * 7, 2048, 512) in resnet  # a 3x3 and an expansion 1x1
    bert = {(e["m"], e["n"], e["k"]) for e in shapes["models"]["bert-base"]}
    assert bert == {(32 * 128, 768, 768), (32 * 128, 3072, 768), (32 * 128, 768, 3072), (32, 768, 768)}


def test_the_gpu_proof_section_reads_the_json():
    from benchmarks.gpu_proof import render

    assert "Not run on a GPU yet" in render(None)
    result = {
        "device": "NVIDIA H200",
        "torch": "2.13.0",
        "cuda": "13.0",
        "batch": 32,
        "tokens": 128,
        "tests": {"tests": 13, "failures": 0, "errors": 0, "skipped": 1, "seconds": 50.2},
        "rows": [
            {
                "model": "bert-base",
                "layers": ["a", "b", "c"],
                "m": 4096,
                "n": 3072,
                "k": 768,
                "dtype": "fp16",
                "dense_ms": 0.2,
                "sparse_ms": 0.125,
                "speedup": 1.6,
            },
            {
                "model": "bert-base",
                "layers": ["a", "b", "c"],
                "m": 4096,
                "n": 3072,
                "k": 768,
                "dtype": "int8",
                "dense_ms": 0.1,
                "error": "sparse: not supported",
            },
        ],
    }
    text = render(result)
    assert (
        "Device: NVIDIA H200 (torch 2.13.0, CUDA 13.0); batch 32, 128 tokens. tests/gpu: 13 tests, 0 failed, 0 errors, 1 skipped (50.2 s)."
        in text
    )
    assert "| bert-base | 4096 | 3072 | 768 | a, b (+1) | 0.200 | 1.60x | 0.100 | sparse: not supported |" in text
    assert text.endswith("fp16: 2:4 faster on 1 of 1 layer shapes (median speed-up 1.60x).")
