"""A real ``nmdeploy finetune`` process killed mid-epoch: exit 143, the resume command, bit-identical result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from nmdeploy.pipeline.recipe import dump_recipe, load_recipe
from tests.pipeline.tiny import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # the same threads in every run: same float sums


def _finetune(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nmdeploy", "-q", "finetune", "--recipe", str(recipe), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=ROOT,
    )


def _ckpt_id(out: Path) -> str:
    return next((out / ".work").glob("sparse-*.ckpt")).name[len("sparse-") : -len(".ckpt")]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_sigterm_mid_epoch_saves_exits_143_and_resumes_to_the_same_weights(tmp_path, task_files):
    recipe = tmp_path / "tiny.yaml"
    overrides = [*tiny_overrides(*task_files), "finetune.epochs=3", "finetune.batch_size=16"]
    recipe.write_text(dump_recipe(load_recipe(None, overrides)))
    reference = _finetune(recipe, tmp_path / "ref")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()[-3000:]

    out = tmp_path / "out"
    proc = _finetune(recipe, out)
    deadline = time.monotonic() + 600
    while not list((out / ".work").glob("sparse-*.ckpt")):  # the first fine-tune epoch is saved: now in epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, "finetune ended before its second sparse epoch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("Error: stopped by SIGTERM ")
    assert err.rstrip().endswith(
        f"/.work/sparse-{_ckpt_id(out)}.ckpt: resume with: nmdeploy -q finetune --recipe {recipe} --out {out}"
    )
    assert "in epoch 2 after step " in err or "after epoch 2 of 3" in err  # the usual case is mid-epoch
    assert not (out / "sparse.pt").exists()

    resumed = _finetune(recipe, out)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    got, want = _weights(out / "sparse.pt"), _weights(tmp_path / "ref" / "sparse.pt")
    assert got.keys() == want.keys() and all(
        torch.equal(got[k], want[k]) for k in want
    )  # weights, and so the N:M masks
    assert (out / "dense.pt").read_bytes() == (tmp_path / "ref" / "dense.pt").read_bytes()


def test_signals_outside_training_exit_130_or_143_in_one_line_and_restore_the_handler(tmp_path, monkeypatch, cnn_onnx):
    """Ctrl-C or SIGTERM while, say, verifying: one line, 130/143, the caller's SIGTERM handler is back."""
    from click.testing import CliRunner

    import nmdeploy.export.verify as verify
    from nmdeploy.cli import cli

    before = signal.getsignal(signal.SIGTERM)
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):

        def stop(path, signum=signum):
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # what Python's default SIGINT handler raises
            os.kill(os.getpid(), signum)  # delivered to the handler the CLI installed
            time.sleep(5)  # never reached: the handler raises first

        monkeypatch.setattr(verify, "load_onnx", stop)
        result = CliRunner().invoke(cli, ["verify", str(cnn_onnx)])
        assert result.exit_code == code, result.output
        assert result.stderr == (
            f"Error: stopped by {signal.Signals(signum).name}; files already written are complete, "
            "nothing half-written was left; run the same command again to redo what is missing\n"
        )
    assert signal.getsignal(signal.SIGTERM) is before
