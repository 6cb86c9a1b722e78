"""``nmdeploy build`` / ``finetune`` through click's CliRunner, and ``finetune`` under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from nmdeploy.cli import cli
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.pipeline.recipe import Recipe, dump_recipe, load_recipe
from nmdeploy.sparsity import is_nm_sparse
from tests.data.test_sources import needs_fashion_mnist
from tests.pipeline.tiny import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _sets(task_files) -> list[str]:
    return [a for item in tiny_overrides(*task_files) for a in ("--set", item)]


def test_dump_recipe_prints_the_merged_recipe(tmp_path):
    result = _run("build", "--dump-recipe")
    assert result.exit_code == 0 and result.output == dump_recipe(Recipe())
    (tmp_path / "r.yaml").write_text("sparsity:\n  method: srste\n")
    result = _run("build", "--recipe", str(tmp_path / "r.yaml"), "--set", "finetune.epochs=7", "--dump-recipe")
    dumped = yaml.safe_load(result.output)
    assert dumped["sparsity"]["method"] == "srste" and dumped["finetune"]["epochs"] == 7
    assert load_recipe(None, ["sparsity.method=srste", "finetune.epochs=7"]).to_dict() == dumped
    result = _run("finetune", "--method", "asp", "--pattern", "1:4", "--epochs", "3", "--dump-recipe")
    assert yaml.safe_load(result.output)["sparsity"] | {} == {
        **Recipe().to_dict()["sparsity"],
        "method": "asp",
        "pattern": "1:4",
    }


def test_build_from_a_recipe_file(tmp_path, task_files):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(dump_recipe(load_recipe(None, tiny_overrides(*task_files))))
    result = _run("build", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("dense epoch 1/1: loss ") and lines[-2].startswith("top-1: dense ")
    assert lines[-1].startswith(
        f"wrote {tmp_path}/out/: dense.pt, sparse.pt, model.onnx, verify.json, model.int8.onnx, "
    )
    assert lines[-1].endswith(f"manifest.json, report.md; see {tmp_path}/out/report.md")
    assert (
        f"Made by `nmdeploy build --recipe {recipe} --out {tmp_path}/out`"
        in (tmp_path / "out" / "report.md").read_text()
    )
    quiet = _run("-q", "build", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert quiet.exit_code == 0 and [line.split(":")[0] for line in quiet.output.splitlines()] == [
        "top-1",
        "wrote " + str(tmp_path) + "/out/",
    ]


@pytest.mark.parametrize(
    "args, message, code",
    [
        (
            ["--set", "sparsity.lambda=1"],
            "Error: unknown recipe key sparsity.lambda; sparsity has: pattern, method, schedule, "
            "start_epoch, end_epoch, decay, tau, rescale, permute, include, exclude\n",
            1,
        ),
        (
            ["--set", "finetune.epochs=two"],
            "Error: recipe key finetune.epochs = 'two' has the wrong type: expected an integer\n",
            1,
        ),
        (["--set", "model.spec=nowhere.nets:Net"], None, 2),
    ],
)
def test_build_errors_are_one_line(tmp_path, task_files, args, message, code):
    result = _run("build", *_sets(task_files), *args, "--out", str(tmp_path / "out"))
    assert result.exit_code == code
    if message is not None:
        assert result.output == message
    assert len(result.output.splitlines()) == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "out").exists()


def test_finetune_trains_only(tmp_path, task_files):
    train, val = task_files
    result = _run(
        "finetune",
        "--data",
        str(train),
        "--val-data",
        str(val),
        "--method",
        "srste",
        "--epochs",
        "1",
        "--set",
        "dense.epochs=1",
        "--set",
        "sparsity.end_epoch=0",
        "--set",
        "device=cpu",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".pt", ".onnx")) == [
        "dense.pt",
        "sparse.pt",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["dense", "sparse"] and manifest["recipe"]["sparsity"]["method"] == "srste"
    assert "next: nmdeploy build with the same recipe" in result.output


def test_finetune_under_torchrun_with_two_processes(tmp_path, task_files):
    """torchrun --nproc_per_node=2 -m nmdeploy finetune: gloo DDP on CPU, one writer, exact 2:4 result."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(dump_recipe(load_recipe(None, tiny_overrides(*task_files))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "nmdeploy",
            "finetune",
            "--recipe",
            str(recipe),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("top-1: ") == 1  # only rank 0 reports and writes
    model = load_checkpoint(build_model("fashion-resnet"), tmp_path / "out" / "sparse.pt")
    assert is_nm_sparse(model.blocks[2].conv2.weight, 2, 4)
    history = json.loads((tmp_path / "out" / "manifest.json").read_text())["stages"]["sparse"]["metrics"]["history"]
    assert [m["epoch"] for m in history] == [1, 2] and history[-1]["val_score"] > 0.5
    assert torch.load(tmp_path / "out" / "sparse.pt", weights_only=True)["method"] == "maxq"


_RECORDING = """
import os
import numpy as np
import torch


class Recording(torch.utils.data.Dataset):
    \"\"\"Writes every index a DataLoader worker reads to reads-<split>-<rank>.txt.\"\"\"

    def __init__(self, split, n):
        self.split, self.n = split, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if torch.utils.data.get_worker_info() is not None:  # not the shape probes of the main process
            with open(f"reads-{self.split}-{os.environ['RANK']}.txt", "a") as log:
                log.write(f"{i}\\n")
        return np.full((1, 28, 28), i / self.n, np.float32), i % 10


def load(split):
    return Recording(split, 200 if split == "train" else 60)
"""


def test_under_torchrun_each_rank_reads_only_its_shard_of_the_epoch(tmp_path):
    """torchrun, 2 gloo processes, a dataset that logs what each rank's worker reads: disjoint shards,
    together exactly the epoch's samples; validation split the same way."""
    (tmp_path / "recording.py").write_text(_RECORDING)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {spec: fashion-resnet, pretrained: true}\n"
        "data: {train: 'recording:load', val: 'recording:load', workers: 1}\n"
        "finetune: {epochs: 1, batch_size: 40}\nsparsity: {end_epoch: 0}\n"
        "quantize: {enabled: false}\nengine: {enabled: false}\ndevice: cpu\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nmdeploy",
         "finetune", "--recipe", str(recipe), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    reads = {
        (split, rank): [int(v) for v in (tmp_path / f"reads-{split}-{rank}.txt").read_text().split()]
        for split in ("train", "test")
        for rank in (0, 1)
    }
    # one training epoch; validation three times: the dense model's score, the epoch's, the sparse model's
    for split, size, passes in (("train", 200, 1), ("test", 60, 3)):
        first, second = reads[(split, 0)], reads[(split, 1)]
        assert not set(first) & set(second) and sorted(first + second) == sorted(list(range(size)) * passes)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0)).tolist()  # epoch 0, seed 0
    assert reads[("train", 1)] == [i for step in range(5) for i in order[step * 40 : (step + 1) * 40][1::2]]


@needs_fashion_mnist
def test_the_built_in_example_on_a_subset(tmp_path):
    """``nmdeploy build`` with the built-in recipe, cut to a subset and one epoch per stage."""
    result = _run(
        "build",
        "--set",
        "data.train_subset=2000",
        "--set",
        "data.val_subset=500",
        "--set",
        "dense.epochs=1",
        "--set",
        "finetune.epochs=1",
        "--set",
        "sparsity.end_epoch=0",
        "--set",
        "quantize.count=64",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["recipe"]["data"]["train"] == "fashion-mnist:train" and manifest["accuracy"]["int8"] > 0.4
    assert manifest["stages"]["verify"]["metrics"]["nm_layers"] == 8
