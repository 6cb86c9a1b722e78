"""The bad inputs of the errors table (docs/errors.md), each a command run through the CLI.

Every case runs in a fresh folder (paths in messages are relative to it), with the files its
``setup`` writes. ``tests/cli/test_errors.py`` runs each case and checks its exit code, that
it printed exactly the table's one-line message and no traceback, and that nothing was left
at its output path. ``python -m tests.cli.error_cases`` rewrites the table from the
actual runs (run it after changing a message, then review the diff).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
START, END = "<!-- errors:start -->", "<!-- errors:end -->"


@dataclass(frozen=True)
class Case:
    id: str
    what: str  # the bad input, in words
    argv: tuple[str, ...]
    code: int
    artifacts: tuple[str, ...] = ()  # paths that must not exist afterwards
    setup: Callable[[Path, dict], None] | None = None
    env: dict = field(default_factory=dict)
    patch: str | None = None  # a fault to inject (see test_errors.py), shown in the table


def _write(name: str, text: str) -> Callable[[Path, dict], None]:
    return lambda folder, fixtures: (folder / name).write_text(text)


def _copy(source: str, name: str) -> Callable[[Path, dict], None]:
    return lambda folder, fixtures: shutil.copyfile(fixtures[source], folder / name)


def _npz(name: str, x: np.ndarray, y: np.ndarray | None = None) -> Callable[[Path, dict], None]:
    def write(folder: Path, fixtures: dict) -> None:
        np.savez(folder / name, x=x, **({} if y is None else {"y": y}))

    return write


def _all(*steps: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    def run(folder: Path, fixtures: dict) -> None:
        for step in steps:
            step(folder, fixtures)

    return run


def _truncated(folder: Path, fixtures: dict) -> None:
    data = Path(fixtures["cnn_onnx"]).read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])


def _without_external_data(folder: Path, fixtures: dict) -> None:
    import onnx

    model = onnx.load(str(fixtures["cnn_onnx"]))
    onnx.save(
        model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    (folder / "model.onnx.data").unlink()


def _other_model_checkpoint(folder: Path, fixtures: dict) -> None:
    import torch

    torch.save({"model": torch.nn.Linear(4, 2).state_dict()}, folder / "linear.pt")


def _code_checkpoint(folder: Path, fixtures: dict) -> None:
    import torch

    torch.save({"model": {}, "hook": _Payload()}, folder / "evil.pt")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch ran",))


def _fashion_checkpoint(folder: Path, fixtures: dict) -> None:
    import torch

    from nmdeploy.export.loading import build_model

    torch.save({"model": build_model("fashion-resnet").state_dict()}, folder / "dense.pt")


TINY = _all(
    lambda folder, fx: shutil.copyfile(fx["train"], folder / "train.npz"),
    lambda folder, fx: shutil.copyfile(fx["val"], folder / "val.npz"),
)
DATA = ("--set", "data.train=train.npz", "--set", "data.val=val.npz")
EXPORT = ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.onnx")
rng = np.random.default_rng(0)
IMAGES = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)

CASES: tuple[Case, ...] = (
    Case(
        "pattern-syntax",
        "N:M pattern that is not two integers",
        ("verify", "model.onnx", "--pattern", "2:x"),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case("pattern-range", "N:M pattern with N >= M", ("finetune", "--pattern", "4:4", "--out", "out"), 1, ("out",)),
    Case(
        "unknown-method",
        "unknown sparsity method",
        ("build", "--set", "sparsity.method=magic", "--out", "out"),
        1,
        ("out",),
    ),
    Case(
        "unknown-schedule",
        "unknown MaxQ schedule",
        ("build", "--set", "sparsity.schedule=sawtooth", "--out", "out"),
        1,
        ("out",),
    ),
    Case(
        "unknown-task", "unknown training task", ("build", "--set", "task.spec=regression", "--out", "out"), 1, ("out",)
    ),
    Case(
        "recipe-unknown-key",
        "recipe with a misspelt key",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "sparsity:\n  patern: '2:4'\n"),
    ),
    Case(
        "recipe-wrong-type",
        "recipe value of the wrong type",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "finetune:\n  epochs: many\n"),
    ),
    Case(
        "recipe-bad-yaml",
        "recipe that is not valid YAML",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "sparsity: [2:4\n"),
    ),
    Case(
        "recipe-python-tag",
        "recipe that tries to build a Python object",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out", "ran"),
        setup=_write("r.yaml", "output: !!python/object/apply:os.system ['touch ran']\n"),
    ),
    Case(
        "recipe-missing",
        "recipe file that does not exist",
        ("build", "--recipe", "nosuch.yaml", "--out", "out"),
        2,
        ("out",),
    ),
    Case("set-syntax", "--set without =", ("build", "--set", "finetune.epochs", "--out", "out"), 1, ("out",)),
    Case(
        "data-missing",
        "training data file that does not exist",
        ("build", "--set", "data.train=missing.npz", "--out", "out"),
        2,
        ("out",),
    ),
    Case(
        "data-labels",
        "labels that do not fit the model's outputs",
        ("build", *DATA, "--out", "out"),
        2,
        ("out",),
        setup=_all(_npz("train.npz", IMAGES, np.full(16, 12)), _npz("val.npz", IMAGES, np.full(16, 12))),
    ),
    Case(
        "model-spec-import",
        "model spec whose module does not import",
        ("export", "dense.pt", "--model", "nosuch_pkg.nets:Net", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
    ),
    Case(
        "model-spec-form",
        "model spec that is not module:callable",
        ("export", "dense.pt", "--model", "os", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
    ),
    Case("checkpoint-missing", "checkpoint file that does not exist", EXPORT, 2, ("model.onnx",)),
    Case(
        "checkpoint-other-model",
        "checkpoint of another model",
        ("export", "linear.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_other_model_checkpoint,
    ),
    Case(
        "checkpoint-code",
        "checkpoint that would run code when unpickled",
        ("export", "evil.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx", "ran"),
        setup=_code_checkpoint,
    ),
    Case(
        "input-shape-syntax",
        "input shape that is not sizes joined by x",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1xAx28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "input-shape-mismatch",
        "input shape the model cannot take",
        ("build", *DATA, "--set", "model.input_shape=[1, 3, 28, 28]", "--out", "out"),
        2,
        ("out",),
        setup=TINY,
    ),
    Case("not-onnx", "a file that is not ONNX", ("verify", "model.onnx"), 2, setup=_write("model.onnx", "hello\n")),
    Case("truncated-onnx", "a truncated ONNX file", ("verify", "model.onnx"), 2, setup=_truncated),
    Case(
        "external-data-missing",
        "ONNX whose external data file is missing",
        ("verify", "model.onnx"),
        2,
        setup=_without_external_data,
    ),
    Case(
        "require-regex",
        "--require that is not a regular expression",
        ("verify", "model.onnx", "--require", "("),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "calibration-shape",
        "calibration data of the wrong shape",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "-o", "model.int8.onnx"),
        2,
        ("model.int8.onnx",),
        setup=_all(
            _copy("cnn_onnx", "model.onnx"), _npz("calib.npz", rng.standard_normal((8, 3, 5, 5)).astype(np.float32))
        ),
    ),
    Case(
        "calibration-nan",
        "calibration data holding NaN",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "-o", "model.int8.onnx"),
        2,
        ("model.int8.onnx",),
        setup=_all(
            _copy("cnn_onnx", "model.onnx"),
            _npz(
                "calib.npz",
                np.where(np.arange(IMAGES.size).reshape(IMAGES.shape) == 5, np.nan, IMAGES).astype(np.float32),
            ),
        ),
    ),
    Case(
        "calibration-count",
        "calibration sample count below 1",
        ("calibrate", "--data", "train.npz", "-n", "0", "-o", "c.npz"),
        1,
        ("c.npz", "c.json"),
        setup=TINY,
    ),
    Case(
        "output-exists",
        "output file that already exists (no --force)",
        EXPORT,
        1,
        setup=_all(_fashion_checkpoint, _write("model.onnx", "an older model\n")),
    ),
    Case(
        "batch-profile",
        "engine batch profile that is not three sizes",
        ("engine", "model.onnx", "--batch", "1,32"),
        1,
        ("model.plan", "model-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "build-into-foreign-folder",
        "build output folder holding files no build wrote (no --force)",
        ("build", *DATA, "--out", "docs"),
        1,
        ("docs/manifest.json",),
        setup=_all(TINY, lambda folder, fx: (folder / "docs").mkdir(), _write("docs/notes.txt", "mine\n")),
    ),
    Case(
        "output-not-writable",
        "output folder that cannot be written",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "/sys/model.onnx"),
        1,
        setup=_fashion_checkpoint,
    ),
    Case(
        "disk-full",
        "disk full while the output is written",
        ("calibrate", "--data", "train.npz", "-n", "8", "-o", "calib.npz"),
        1,
        ("calib.npz", "calib.json"),
        setup=TINY,
        patch="disk-full",
    ),
    Case(
        "eval-labels",
        "evaluation labels that do not match the samples",
        ("eval", "model.onnx", "--data", "d.npz"),
        2,
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("d.npz", IMAGES, np.zeros(3, dtype=np.int64))),
    ),
    Case(
        "no-tensorrt",
        "engine build where TensorRT is not installed",
        ("engine", "model.onnx", "-o", "model.plan"),
        3,
        ("model.plan",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "bench-no-tensorrt",
        "timing engines where TensorRT is not installed",
        ("bench", "model.plan"),
        3,
        setup=_write("model.plan", "not a plan\n"),
    ),
    Case(
        "debug-env",
        "NMDEPLOY_DEBUG set to a non-boolean",
        ("verify", "model.onnx"),
        1,
        env={"NMDEPLOY_DEBUG": "maybe"},
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
)


def inject(case: Case, monkeypatch) -> None:
    """The fault ``case.patch`` names: a full disk makes the atomic writer fail half-way through its first file."""
    if case.patch == "disk-full":
        import nmdeploy._atomic as atomic

        def full(fh, payload: bytes) -> None:
            fh.write(payload[: len(payload) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(atomic, "_write_payload", full)


def command(case: Case) -> str:
    import shlex

    env = "".join(f"{k}={v} " for k, v in case.env.items())
    fault = {"disk-full": " (with the disk full)"}.get(case.patch or "", "")
    return env + shlex.join(["nmdeploy", *case.argv]) + fault


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(messages: dict[str, str]) -> str:
    lines = ["| # | bad input | command | exit | message |", "|---|---|---|---|---|"]
    for number, case in enumerate(CASES, 1):
        lines.append(
            f"| {number} | {case.what} | `{_cell(command(case))}` | {case.code} | {_cell(messages[case.id])} |"
        )
    return "\n".join(lines)


def readme_rows() -> list[tuple[str, int, str]]:
    """(command, exit code, message) of every row of the table in docs/errors.md, in order."""
    block = DOC.read_text().split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows.append((cells[2].strip("`").replace("\\|", "|"), int(cells[3]), cells[4].replace("\\|", "|")))
    return rows


def main() -> None:
    """Run every case (like the tests) and rewrite the table in docs/errors.md from what they print."""
    import json
    import tempfile

    import pytest

    record = Path(tempfile.mkdtemp()) / "errors.json"
    os.environ["NMDEPLOY_RECORD_ERRORS"] = str(record)
    pytest.main(
        ["-q", "-p", "no:cacheprovider", str(Path(__file__).with_name("test_errors.py")), "-k", "test_bad_input"]
    )
    messages = {}
    for line in record.read_text().splitlines():
        messages.update(json.loads(line))
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{table(messages)}\n{END}{tail}")
    print(f"wrote {len(messages)} of {len(CASES)} rows to {DOC}")


if __name__ == "__main__":
    main()
