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


def _plugin(name: str, code: str) -> Callable[[Path, dict], None]:
    """A module ``name.py`` in the case's folder (each case its own name: imported modules stay cached)."""
    return _write(f"{name}.py", "import numpy as np\nimport torch\nfrom torch import nn\n\n" + code)


def _empty(name: str) -> Callable[[Path, dict], None]:
    return lambda folder, fixtures: (folder / name).write_bytes(b"")


def _onnx_without_weights(folder: Path, fixtures: dict) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "relu.onnx"))


def _quantised(folder: Path, fixtures: dict) -> None:
    import onnx

    from tests.quant.qdq_graphs import qdq_model

    onnx.save(qdq_model(), str(folder / "int8.onnx"))


def _build_folder(folder: Path, fixtures: dict) -> None:
    """An earlier build's folder: what a bundle must never replace."""
    (folder / "build").mkdir()
    for name in ("dense.pt", "sparse.pt", "manifest.json"):
        (folder / "build" / name).write_text(f"{name} of an earlier build\n")
    shutil.copyfile(fixtures["cnn_onnx"], folder / "build" / "model.int8.onnx")


def _bundle_folder(name: str) -> Callable[[Path, dict], None]:
    def make(folder: Path, fixtures: dict) -> None:
        (folder / name).mkdir()
        (folder / name / "bundle.json").write_text("{}\n")

    return make


def _fixed_batch_onnx(folder: Path, fixtures: dict) -> None:
    import onnx

    model = onnx.load(str(fixtures["cnn_onnx"]))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, str(folder / "model.onnx"))


def _folder(name: str, *files: str) -> Callable[[Path, dict], None]:
    def make(folder: Path, fixtures: dict) -> None:
        (folder / name).mkdir()
        for file in files:
            (folder / name / file).write_text("mine\n")

    return make


def _images(name: str, classes: int, empty: str | None = None) -> Callable[[Path, dict], None]:
    """An image folder ``name/<class>/*.png`` of 28x28 grayscale images, two per class."""

    def make(folder: Path, fixtures: dict) -> None:
        from PIL import Image

        for label in range(classes):
            (folder / name / f"c{label:02d}").mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((28, 28), 20 * i + label, np.uint8)).save(
                    folder / name / f"c{label:02d}" / f"{i}.png"
                )
        if empty:
            (folder / name / empty).mkdir()
            (folder / name / empty / "notes.txt").write_text("no images here\n")

    return make


TINY = _all(
    lambda folder, fx: shutil.copyfile(fx["train"], folder / "train.npz"),
    lambda folder, fx: shutil.copyfile(fx["val"], folder / "val.npz"),
)
DATA = ("--set", "data.train=train.npz", "--set", "data.val=val.npz")
EXPORT = ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.onnx")
rng = np.random.default_rng(0)
IMAGES = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)


def _bert(folder: Path, fixtures: dict) -> None:
    from tests.hf_models import text_lines, write_bert, write_jsonl

    write_bert(folder / "bert")
    write_jsonl(folder / "train.jsonl", text_lines(40))
    write_jsonl(folder / "val.jsonl", text_lines(12, seed=1))


def _bert_weights_only(folder: Path, fixtures: dict) -> None:
    from tests.hf_models import write_bert

    write_bert(folder / "bert", tokenizer=False)


def _config_only(folder: Path, fixtures: dict) -> None:
    (folder / "bert").mkdir()
    (folder / "bert" / "config.json").write_text('{"model_type": "bert"}')


HF = ("--set", "model.spec=hf:bert", "--set", "data.train=train.jsonl", "--set", "data.val=val.jsonl")
HF_SMALL = (*HF, "--set", "dense.batch_size=8", "--set", "finetune.batch_size=8", "--set", "quantize.count=16")
HF_CALIBRATE = ("calibrate", "--tokenizer", "bert", "-o", "calib.npz")

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
        "data-short",
        "training data smaller than one batch",
        ("build", *DATA, "--out", "out"),
        2,
        ("out",),
        setup=_all(_npz("train.npz", IMAGES, np.arange(16) % 10), _npz("val.npz", IMAGES, np.arange(16) % 10)),
    ),
    Case(
        "image-folder-flat",
        "an image folder without class folders",
        ("build", "--set", "data.train=imgs", "--out", "out"),
        2,
        ("out",),
        setup=_all(_folder("imgs", "a.png")),
    ),
    Case(
        "image-class-empty",
        "an image folder with an empty class folder",
        ("build", "--set", "data.train=imgs", "--out", "out"),
        2,
        ("out",),
        setup=_images("imgs", 2, empty="c99"),
    ),
    Case(
        "image-labels",
        "an image folder with more classes than the model has outputs",
        ("build", "--set", "data.train=imgs", "--set", "data.val=imgs", "--set", "dense.batch_size=8", "--out", "out"),
        2,
        ("out",),
        setup=_images("imgs", 12),
    ),
    Case(
        "data-image-size",
        "an image size that is not a size",
        ("build", "--set", "data.image_size=[0]", "--out", "out"),
        1,
        ("out",),
    ),
    Case(
        "data-augment-size",
        "augmentation without an image size",
        ("build", "--set", "data.augment=true", "--out", "out"),
        1,
        ("out",),
    ),
    Case("data-workers", "a negative worker count", ("build", "--set", "data.workers=-1", "--out", "out"), 1, ("out",)),
    Case(
        "train-grad-accum",
        "gradient accumulation over no micro-batch",
        ("build", "--set", "finetune.grad_accum=0", "--out", "out"),
        1,
        ("out",),
    ),
    Case("train-amp", "an unknown mixed precision", ("build", "--set", "dense.amp=fp8", "--out", "out"), 1, ("out",)),
    Case(
        "data-stream-steps",
        "a stream (IterableDataset) without steps_per_epoch",
        ("build", "--set", "data.train=plug_stream_steps:load", "--set", "data.val=val.npz", "--out", "out"),
        2,
        ("out",),
        setup=_all(
            TINY,
            _plugin(
                "plug_stream_steps",
                "class Rows(torch.utils.data.IterableDataset):\n    def __iter__(self):\n"
                "        for i in range(256):\n            yield torch.zeros(1, 28, 28), i % 10\n\n\n"
                "def load(split):\n    return Rows()\n",
            ),
        ),
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
        "eval-provider-missing",
        "an onnxruntime provider that cannot start here (--provider tensorrt without its libraries or a GPU)",
        ("eval", "model.onnx", "--data", "d.npz", "--provider", "tensorrt", "--json", "e.json"),
        3,
        ("e.json",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("d.npz", IMAGES, np.zeros(len(IMAGES), dtype=np.int64))),
    ),
    Case(
        "bench-provider-plan",
        "an onnxruntime provider for TensorRT plans",
        ("bench", "model.plan", "--provider", "cuda"),
        1,
        setup=_write("model.plan", "not a plan\n"),
    ),
    Case(
        "bench-mixed",
        "plans and ONNX models timed together",
        ("bench", "model.plan", "model.onnx"),
        1,
        setup=_all(_write("model.plan", "not a plan\n"), _copy("cnn_onnx", "model.onnx")),
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
    # -- build and finetune: every setting is checked before the first stage --------------------------------
    Case(
        "nan-number",
        "a learning rate that is NaN",
        ("build", *DATA, "--set", "finetune.lr=.nan", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "infinite-number",
        "an SR decay that is infinite",
        ("build", *DATA, "--set", "sparsity.decay=.inf", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "negative-seed",
        "a negative training seed",
        ("build", *DATA, "--set", "dense.seed=-1", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "huge-integer",
        "a batch size past int64",
        ("build", *DATA, "--set", "finetune.batch_size=99999999999999999999", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "zero-epochs",
        "zero fine-tune epochs",
        ("finetune", *DATA, "--epochs", "0", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "end-epoch-late",
        "a MaxQ schedule that ends after the fine-tune",
        ("build", *DATA, "--set", "sparsity.end_epoch=6", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "include-unmatched",
        "an include glob that matches no layer",
        ("build", *DATA, "--set", "sparsity.include=[nosuch.*]", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "exclude-unmatched",
        "an exclude glob that matches no layer",
        ("build", *DATA, "--set", "sparsity.exclude=[auto, lyer1.*]", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "no-eligible-layer",
        "layer selection that leaves no layer to sparsify",
        ("build", *DATA, "--set", "sparsity.include=[stem.0, fc]", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "distill-untrained",
        "distillation with no trained dense model",
        ("build", *DATA, "--set", "task.spec=distillation", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "device-unknown",
        "a device that does not exist",
        ("build", *DATA, "--set", "device=tpu", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "build-calibration-missing",
        "a calibration file that does not exist",
        ("build", *DATA, "--set", "quantize.calibration=missing.npz", "--out", "out"),
        2,
        ("out",),
        setup=TINY,
    ),
    Case(
        "build-calibration-shape",
        "calibration data that does not fit the model",
        ("build", *DATA, "--set", "quantize.calibration=calib.npz", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _npz("calib.npz", IMAGES[:, :, :5, :5])),
    ),
    Case(
        "build-calibration-count",
        "more calibration samples than the data holds",
        ("build", *DATA, "--set", "quantize.count=5000", "--out", "out"),
        2,
        ("out",),
        setup=TINY,
    ),
    Case(
        "build-opset-old",
        "an export opset too old for INT8",
        ("build", *DATA, "--set", "export.opset=5", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "build-opset-new",
        "an export opset newer than ONNX knows",
        ("build", *DATA, "--set", "export.opset=99", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "recipe-duplicate-key",
        "a recipe that gives a key twice",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "finetune:\n  epochs: 3\n  epochs: 4\n"),
    ),
    Case(
        "recipe-duplicate-section",
        "a recipe that gives a section twice",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "sparsity:\n  pattern: 1:4\nsparsity:\n  method: srste\n"),
    ),
    Case(
        "recipe-list",
        "a recipe that is a list, not sections",
        ("build", "--recipe", "r.yaml", "--out", "out"),
        1,
        ("out",),
        setup=_write("r.yaml", "- model\n- data\n"),
    ),
    Case(
        "set-unknown-section",
        "--set of a key that is no section",
        ("build", "--set", "outputs=x", "--out", "out"),
        1,
        ("out",),
    ),
    Case("set-empty-key", "--set with nothing before =", ("build", "--set", "=3", "--out", "out"), 1, ("out",)),
    Case(
        "data-plugin-raises",
        "a data plug-in that raises",
        ("build", "--set", "data.train=plug_data_raise:load", "--out", "out"),
        2,
        ("out",),
        setup=_plugin("plug_data_raise", "def load(split):\n    raise ValueError('no such bucket')\n"),
    ),
    Case(
        "data-plugin-not-callable",
        "a data plug-in that is no callable",
        ("build", "--set", "data.train=plug_data_const:TABLE", "--out", "out"),
        2,
        ("out",),
        setup=_plugin("plug_data_const", "TABLE = [1, 2, 3]\n"),
    ),
    Case(
        "data-plugin-arguments",
        "a data plug-in that wants other arguments",
        ("build", "--set", "data.train=plug_data_args:load", "--out", "out"),
        2,
        ("out",),
        setup=_plugin("plug_data_args", "def load(split, root):\n    return None\n"),
    ),
    Case(
        "data-plugin-import",
        "a data plug-in whose module fails to import",
        ("build", "--set", "data.train=plug_data_import:load", "--out", "out"),
        2,
        ("out",),
        setup=_plugin("plug_data_import", "raise RuntimeError('credentials missing')\n"),
    ),
    Case(
        "data-plugin-item",
        "a data plug-in whose dataset fails on an item",
        ("build", "--set", "data.train=plug_data_item:load", "--out", "out"),
        2,
        ("out",),
        setup=_plugin(
            "plug_data_item",
            "class Broken:\n    def __len__(self):\n        return 4\n\n    def __getitem__(self, i):\n        raise OSError('image 3.png is corrupt')\n\n\ndef load(split):\n    return Broken()\n",
        ),
    ),
    Case(
        "model-factory-raises",
        "a model factory that raises",
        ("build", *DATA, "--set", "model.spec=plug_model_raise:make", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _plugin("plug_model_raise", "def make():\n    raise KeyError('width')\n")),
    ),
    Case(
        "model-factory-not-module",
        "a model factory that returns no nn.Module",
        ("build", *DATA, "--set", "model.spec=plug_model_dict:make", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _plugin("plug_model_dict", "def make():\n    return {'layers': 3}\n")),
    ),
    Case(
        "model-factory-arguments",
        "a model factory that needs arguments",
        ("build", *DATA, "--set", "model.spec=plug_model_args:make", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _plugin("plug_model_args", "def make(width):\n    return nn.Linear(width, 10)\n")),
    ),
    Case(
        "model-no-weights",
        "a model with no weighted layer",
        ("build", *DATA, "--set", "model.spec=plug_model_empty:make", "--out", "out"),
        1,
        ("out",),
        setup=_all(
            TINY,
            _plugin(
                "plug_model_empty",
                "class Pick(nn.Module):\n    def forward(self, x):\n        return x.flatten(1)[:, :10]\n\n\ndef make():\n    return Pick()\n",
            ),
        ),
    ),
    Case(
        "task-plugin-raises",
        "a task plug-in that raises",
        ("build", *DATA, "--set", "task.spec=plug_task_raise:make", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _plugin("plug_task_raise", "def make():\n    raise NotImplementedError('loss')\n")),
    ),
    Case(
        "task-plugin-incomplete",
        "a task plug-in without the task methods",
        ("build", *DATA, "--set", "task.spec=plug_task_half:make", "--out", "out"),
        2,
        ("out",),
        setup=_all(
            TINY, _plugin("plug_task_half", "class Half:\n    metric = 'mae'\n\n\ndef make():\n    return Half()\n")
        ),
    ),
    Case(
        "build-checkpoint-empty",
        "a zero-byte pretrained checkpoint",
        ("build", *DATA, "--set", "model.checkpoint=empty.pt", "--out", "out"),
        2,
        ("out",),
        setup=_all(TINY, _empty("empty.pt")),
    ),
    Case(
        "labels-float",
        "training labels that are not integers",
        ("build", *DATA, "--out", "out"),
        2,
        ("out",),
        setup=_all(_npz("train.npz", IMAGES, np.linspace(0, 9, 16)), _npz("val.npz", IMAGES, np.arange(16) % 10)),
    ),
    Case(
        "labels-2d",
        "training labels of two dimensions",
        ("build", *DATA, "--out", "out"),
        2,
        ("out",),
        setup=_all(
            _npz("train.npz", IMAGES, np.zeros((16, 10), dtype=np.int64)), _npz("val.npz", IMAGES, np.arange(16) % 10)
        ),
    ),
    Case(
        "npz-scalar",
        "an .npz whose array holds no samples axis",
        ("build", *DATA, "--out", "out"),
        2,
        ("out",),
        setup=_all(_npz("train.npz", np.float32(1.0)), _npz("val.npz", IMAGES, np.arange(16) % 10)),
    ),
    Case(
        "out-is-file",
        "a build output that is a file",
        ("build", *DATA, "--out", "notes.txt"),
        2,
        setup=_all(TINY, _write("notes.txt", "mine\n")),
    ),
    Case(
        "out-parent-file",
        "a build output below a file",
        ("build", *DATA, "--out", "notes.txt/out"),
        1,
        setup=_all(TINY, _write("notes.txt", "mine\n")),
    ),
    Case(
        "out-under-proc",
        "a build output where no file can be made",
        ("build", *DATA, "--out", "/proc/nmdeploy-out"),
        1,
        setup=TINY,
    ),
    Case(
        "checkpoint-is-artifact",
        "a pretrained checkpoint the build would overwrite",
        ("build", *DATA, "--set", "model.checkpoint=out/dense.pt", "--out", "out"),
        1,
        setup=_all(TINY, _folder("out", "manifest.json"), lambda folder, fx: _fashion_checkpoint(folder / "out", fx)),
    ),
    Case(
        "build-foreign-bundle",
        "a target-bundle folder in the output that no build wrote",
        ("build", *DATA, "--out", "out"),
        1,
        setup=_all(TINY, _folder("out", "manifest.json"), _folder("out/target-bundle", "notes.txt")),
    ),
    Case(
        "build-timing-cache-proc",
        "an engine timing cache where no file can be made",
        ("build", *DATA, "--set", "engine.timing_cache=/proc/x/timing.cache", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case("build-unknown-option", "an option build does not have", ("build", "--epochs", "3"), 2),
    # -- export ----------------------------------------------------------------------------------------------
    Case(
        "export-opset-old",
        "an opset too old for INT8",
        (*EXPORT, "--opset", "5"),
        1,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-opset-new",
        "an opset newer than ONNX knows",
        (*EXPORT, "--opset", "99"),
        1,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-shape-huge",
        "an input shape too large to sample",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x99999999999x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-forward-fails",
        "an input shape the model's forward rejects",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x3x28x28", "-o", "model.onnx"),
        1,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-output-is-input",
        "an export written over its own checkpoint",
        (
            "export",
            "weights.onnx",
            "--model",
            "fashion-resnet",
            "--input-shape",
            "1x1x28x28",
            "-o",
            "weights.onnx",
            "--force",
        ),
        1,
        setup=lambda folder, fx: (
            _fashion_checkpoint(folder, fx),
            (folder / "dense.pt").rename(folder / "weights.onnx"),
        ),
    ),
    Case(
        "export-checkpoint-empty",
        "a zero-byte checkpoint",
        ("export", "empty.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_empty("empty.pt"),
    ),
    Case(
        "export-output-suffix",
        "an export output that is not .onnx",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "model.pt"),
        1,
        ("model.pt",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-output-parent-file",
        "an export output below a file",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "notes.txt/model.onnx"),
        1,
        setup=_all(_fashion_checkpoint, _write("notes.txt", "mine\n")),
    ),
    Case(
        "export-output-proc",
        "an export output where no file can be made",
        ("export", "dense.pt", "--model", "fashion-resnet", "--input-shape", "1x1x28x28", "-o", "/proc/model.onnx"),
        1,
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-atol-nan",
        "a parity tolerance that is NaN",
        (*EXPORT, "--atol", "nan"),
        1,
        ("model.onnx",),
        setup=_fashion_checkpoint,
    ),
    Case(
        "export-factory-raises",
        "a model factory that raises",
        ("export", "dense.pt", "--model", "plug_export_raise:make", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_all(
            _fashion_checkpoint, _plugin("plug_export_raise", "def make():\n    raise ImportError('needs timm')\n")
        ),
    ),
    Case(
        "export-factory-not-callable",
        "a model spec that is no callable",
        ("export", "dense.pt", "--model", "plug_export_const:WIDTH", "--input-shape", "1x1x28x28", "-o", "model.onnx"),
        2,
        ("model.onnx",),
        setup=_all(_fashion_checkpoint, _plugin("plug_export_const", "WIDTH = 64\n")),
    ),
    # -- verify ----------------------------------------------------------------------------------------------
    Case(
        "verify-json-is-model",
        "a report written over the model it checks",
        ("verify", "model.onnx", "--json", "model.onnx", "--force"),
        1,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "verify-json-is-data",
        "a report written over the model's external data",
        ("verify", "ext.onnx", "--json", "ext.onnx.data", "--force"),
        1,
        setup=lambda folder, fx: __import__("onnx").save(
            __import__("onnx").load(str(fx["cnn_onnx"])),
            str(folder / "ext.onnx"),
            save_as_external_data=True,
            location="ext.onnx.data",
            size_threshold=0,
        ),
    ),
    Case(
        "verify-json-proc",
        "a report where no file can be made",
        ("verify", "model.onnx", "--json", "/proc/verify.json"),
        1,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "verify-pattern-range",
        "an N:M pattern with N >= M",
        ("verify", "model.onnx", "--pattern", "4:4"),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case("verify-missing", "a model that does not exist", ("verify", "none.onnx"), 2),
    Case("verify-missing-argument", "verify without a model", ("verify",), 2),
    # -- calibrate -------------------------------------------------------------------------------------------
    Case(
        "calibrate-negative-seed",
        "a negative calibration seed",
        ("calibrate", "--data", "train.npz", "-n", "8", "--seed", "-1", "-o", "c.npz"),
        1,
        ("c.npz", "c.json"),
        setup=TINY,
    ),
    Case(
        "calibrate-labels-float",
        "labels that are not integers",
        ("calibrate", "--data", "d.npz", "-n", "8", "-o", "c.npz"),
        2,
        ("c.npz", "c.json"),
        setup=_npz("d.npz", IMAGES, np.linspace(0, 1, 16)),
    ),
    Case(
        "calibrate-labels-2d",
        "labels of two dimensions",
        ("calibrate", "--data", "d.npz", "-n", "8", "-o", "c.npz"),
        2,
        ("c.npz", "c.json"),
        setup=_npz("d.npz", IMAGES, np.zeros((16, 2), dtype=np.int64)),
    ),
    Case(
        "calibrate-output-suffix",
        "a calibration set that is not .npz",
        ("calibrate", "--data", "train.npz", "-n", "8", "-o", "c.bin"),
        1,
        ("c.bin", "c.json"),
        setup=TINY,
    ),
    Case(
        "calibrate-output-is-data",
        "a calibration set written over its own data",
        ("calibrate", "--data", "train.npz", "-n", "8", "-o", "train.npz", "--force"),
        1,
        setup=TINY,
    ),
    Case(
        "calibrate-count-too-large",
        "more samples than the data holds",
        ("calibrate", "--data", "d.npz", "-n", "100", "-o", "c.npz"),
        2,
        ("c.npz", "c.json"),
        setup=_npz("d.npz", IMAGES, np.arange(16) % 10),
    ),
    Case(
        "calibrate-definition-missing",
        "a calibration definition that does not exist",
        ("calibrate", "--definition", "nosuch.yaml"),
        2,
    ),
    Case(
        "calibrate-definition-list",
        "a calibration definition that is no mapping",
        ("calibrate", "--definition", "d.yaml"),
        2,
        setup=_write("d.yaml", "- train.npz\n"),
    ),
    Case(
        "calibrate-definition-duplicate",
        "a calibration definition that gives a key twice",
        ("calibrate", "--definition", "d.yaml"),
        2,
        setup=_write("d.yaml", "data: a.npz\ncount: 8\ncount: 16\n"),
    ),
    Case(
        "calibrate-npz-scalar",
        "an .npz whose array holds no samples axis",
        ("calibrate", "--data", "s.npz", "-n", "1", "-o", "c.npz"),
        2,
        ("c.npz", "c.json"),
        setup=_npz("s.npz", np.float32(3.0)),
    ),
    Case(
        "calibrate-plugin-raises",
        "a data plug-in that raises",
        ("calibrate", "--data", "plug_calib_raise:load", "-n", "8", "-o", "c.npz"),
        2,
        ("c.npz", "c.json"),
        setup=_plugin("plug_calib_raise", "def load(split):\n    raise ConnectionError('bucket offline')\n"),
    ),
    Case(
        "calibrate-stream-short",
        "a calibration draw larger than the stream",
        ("calibrate", "--data", "plug_calib_stream:load", "-n", "64", "-o", "calib.npz"),
        2,
        ("calib.npz", "calib.json"),
        setup=_plugin(
            "plug_calib_stream",
            "class Rows(torch.utils.data.IterableDataset):\n    def __iter__(self):\n"
            "        for i in range(10):\n            yield np.zeros(4, np.float32), i % 2\n\n\n"
            "def load(split):\n    return Rows()\n",
        ),
    ),
    Case(
        "eval-image-size",
        "an image size that is not numbers",
        ("eval", "model.onnx", "--data", "fashion-mnist", "--image-size", "big"),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "calibrate-definition-and-data",
        "--definition together with --data",
        ("calibrate", "--definition", "d.yaml", "--data", "train.npz"),
        2,
        setup=_write("d.yaml", "data: train.npz\n"),
    ),
    # -- quantize --------------------------------------------------------------------------------------------
    Case(
        "quantize-json-is-model",
        "a report written over the model",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--json", "model.onnx", "--force"),
        1,
        ("model.int8.onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("calib.npz", IMAGES)),
    ),
    Case(
        "quantize-output-is-input",
        "an INT8 model written over its FP32 input",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "-o", "model.onnx", "--force"),
        1,
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("calib.npz", IMAGES)),
    ),
    Case(
        "quantize-calibration-missing",
        "a calibration file that does not exist",
        ("quantize", "model.onnx", "--calibration", "missing.npz"),
        2,
        ("model.int8.onnx",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "quantize-percentile-nan",
        "a percentile that is NaN",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--method", "percentile", "--percentile", "nan"),
        1,
        ("model.int8.onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("calib.npz", IMAGES)),
    ),
    Case(
        "quantize-exclude-unmatched",
        "an exclude glob that matches no node",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--exclude", "nope*"),
        1,
        ("model.int8.onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("calib.npz", IMAGES)),
    ),
    Case(
        "quantize-already-int8",
        "a model that is already quantised",
        ("quantize", "int8.onnx", "--calibration", "calib.npz"),
        2,
        ("int8.int8.onnx",),
        setup=_all(_quantised, _npz("calib.npz", IMAGES)),
    ),
    Case(
        "quantize-no-weights",
        "a model with nothing to quantise",
        ("quantize", "relu.onnx", "--calibration", "calib.npz"),
        2,
        ("relu.int8.onnx",),
        setup=_all(_onnx_without_weights, _npz("calib.npz", np.zeros((8, 4), np.float32))),
    ),
    Case(
        "quantize-eval-shape",
        "evaluation data that does not fit the model",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--eval-data", "other.npz"),
        2,
        ("model.int8.onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("calib.npz", IMAGES), _npz("other.npz", IMAGES[:, :, :7, :7])),
    ),
    Case(
        "quantize-batch-zero",
        "a calibration batch size of 0",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--batch-size", "0"),
        2,
        ("model.int8.onnx",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "quantize-method-unknown",
        "a calibration method that does not exist",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--method", "kl"),
        2,
        ("model.int8.onnx",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "quantize-pattern",
        "an N:M pattern with N >= M",
        ("quantize", "model.onnx", "--calibration", "calib.npz", "--pattern", "3:2"),
        1,
        ("model.int8.onnx",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    # -- eval ------------------------------------------------------------------------------------------------
    Case(
        "eval-data-missing",
        "evaluation data that does not exist",
        ("eval", "model.onnx", "--data", "missing.npz"),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "eval-json-is-model",
        "a result written over the model",
        ("eval", "model.onnx", "--data", "d.npz", "--json", "model.onnx", "--force"),
        1,
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("d.npz", IMAGES)),
    ),
    Case(
        "eval-dtype",
        "evaluation data of the wrong dtype",
        ("eval", "model.onnx", "--data", "d.npz"),
        2,
        setup=_all(_copy("cnn_onnx", "model.onnx"), _npz("d.npz", IMAGES.astype(np.float64))),
    ),
    Case(
        "eval-batch-zero",
        "an evaluation batch size of 0",
        ("eval", "model.onnx", "--data", "d.npz", "--batch-size", "0"),
        2,
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    # -- engine and bench ------------------------------------------------------------------------------------
    Case(
        "bundle-is-build-folder",
        "a bundle written over a build folder",
        ("engine", "model.onnx", "-o", "e.plan", "--bundle", "build", "--force"),
        1,
        ("e.plan",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _build_folder),
    ),
    Case(
        "bundle-holds-model",
        "a bundle folder that holds the model",
        ("engine", "model.onnx", "-o", "e.plan", "--bundle", ".", "--force"),
        1,
        ("e.plan",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "bundle-exists",
        "a bundle that already exists (no --force)",
        ("engine", "model.onnx", "-o", "e.plan"),
        1,
        ("e.plan",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _bundle_folder("e-bundle")),
    ),
    Case(
        "bundle-foreign",
        "a default bundle folder that nmdeploy did not write",
        ("engine", "model.onnx", "-o", "e.plan", "--force"),
        1,
        ("e.plan",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _folder("e-bundle", "notes.txt")),
    ),
    Case(
        "engine-verify-foreign",
        "a layer report made from a file that is no verify report",
        ("engine", "model.onnx", "-o", "e.plan", "--verify", "v.json"),
        2,
        ("e.plan", "e-bundle"),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _write("v.json", '{"layers": []}\n')),
    ),
    Case(
        "engine-verify-missing",
        "a verify report that does not exist",
        ("engine", "model.onnx", "-o", "e.plan", "--verify", "v.json"),
        2,
        ("e.plan", "e-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "engine-timing-cache-is-model",
        "a timing cache that is the model",
        ("engine", "model.onnx", "-o", "e.plan", "--timing-cache", "model.onnx"),
        1,
        ("e.plan", "e-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "engine-report-exists",
        "an engine report that already exists (no --force)",
        ("engine", "model.onnx", "-o", "e.plan"),
        1,
        ("e.plan", "e-bundle"),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _write("engine_report.json", "{}\n")),
    ),
    # -- triton ------------------------------------------------------------------------------------------------
    Case(
        "triton-plan-mismatch",
        "a Triton plan whose inputs do not match the ONNX",
        ("triton", "model.onnx", "--plan", "model.plan"),
        2,
        ("triton",),
        setup=_all(
            _copy("cnn_onnx", "model.onnx"),
            _write("model.plan", "a plan\n"),
            _write(
                "engine_report.json",
                '{"plan": "model.plan", "profile": {"input": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}}}\n',
            ),
        ),
    ),
    Case(
        "triton-plan-unchecked",
        "a Triton plan that cannot be checked here (no TensorRT, no engine report)",
        ("triton", "model.onnx", "--plan", "model.plan"),
        3,
        ("triton",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _write("model.plan", "a plan\n")),
    ),
    Case(
        "triton-name",
        "a model name Triton would reject",
        ("triton", "model.onnx", "--name", "../models"),
        1,
        ("triton",),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "triton-exists",
        "a Triton repository that already exists (no --force)",
        ("triton", "model.onnx", "-o", "repo"),
        1,
        ("repo/model_onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _folder("repo", "client.py")),
    ),
    Case(
        "triton-foreign",
        "a default Triton repository folder that nmdeploy did not write",
        ("triton", "model.onnx", "--force"),
        1,
        ("triton/model_onnx",),
        setup=_all(_copy("cnn_onnx", "model.onnx"), _folder("triton", "notes.txt")),
    ),
    Case(
        "triton-fixed-batch",
        "Triton batching for a model exported with a fixed batch",
        ("triton", "model.onnx", "--max-batch", "8"),
        1,
        ("triton",),
        setup=_fixed_batch_onnx,
    ),
    Case(
        "serve-max-batch",
        "a Triton max batch above the engine's",
        ("build", *DATA, "--set", "serve.max_batch=512", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "engine-plan-suffix",
        "a plan name that is not .plan or .engine",
        ("engine", "model.onnx", "-o", "e.trt"),
        1,
        ("e.trt", "e-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "engine-workspace-zero",
        "a workspace of 0 MiB",
        ("engine", "model.onnx", "--workspace", "0"),
        2,
        ("model.plan", "model-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "engine-hardware-unknown",
        "a hardware compatibility level that does not exist",
        ("engine", "model.onnx", "--hardware-compat", "turing"),
        2,
        ("model.plan", "model-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "bench-json-is-plan",
        "timings written over a plan",
        ("bench", "a.plan", "--json", "a.plan", "--force"),
        1,
        setup=_write("a.plan", "not a plan\n"),
    ),
    Case(
        "bench-json-exists",
        "timings that already exist (no --force)",
        ("bench", "a.plan", "--json", "t.json"),
        1,
        setup=_all(_write("a.plan", "not a plan\n"), _write("t.json", "[]\n")),
    ),
    Case(
        "bench-iterations-zero",
        "zero timed iterations",
        ("bench", "a.plan", "--iterations", "0"),
        2,
        setup=_write("a.plan", "not a plan\n"),
    ),
    # -- the command line itself -----------------------------------------------------------------------------
    Case(
        "hf-folder-without-config",
        "an hf: folder without config.json",
        ("build", *HF, "--out", "out"),
        2,
        ("out",),
        setup=lambda folder, fx: (folder / "bert").mkdir(),
    ),
    Case(
        "hf-folder-without-weights",
        "an hf: folder without weights",
        ("build", *HF, "--out", "out"),
        2,
        ("out",),
        setup=_config_only,
    ),
    Case(
        "hf-task-unsupported",
        "an hf_task the folder cannot serve",
        ("build", *HF, "--set", "model.hf_task=image-classification", "--out", "out"),
        2,
        ("out",),
        setup=_bert,
    ),
    Case(
        "hf-task-unknown",
        "an hf_task nmdeploy does not know",
        ("build", *HF, "--set", "model.hf_task=translation", "--out", "out"),
        1,
        ("out",),
        setup=_bert,
    ),
    Case(
        "text-without-tokenizer-folder",
        "text data whose tokenizer folder holds no tokenizer",
        (*HF_CALIBRATE, "--data", "t.jsonl"),
        2,
        ("calib.npz",),
        setup=_all(_bert_weights_only, _write("t.jsonl", '{"text": "red apple"}\n')),
    ),
    Case(
        "text-without-tokenizer",
        "text data and no tokenizer",
        ("calibrate", "--data", "t.jsonl", "-o", "calib.npz"),
        2,
        ("calib.npz",),
        setup=_write("t.jsonl", '{"text": "red apple"}\n'),
    ),
    Case(
        "text-csv-without-text-column",
        "a .csv of texts without a text column",
        (*HF_CALIBRATE, "--data", "t.csv"),
        2,
        ("calib.npz",),
        setup=_all(_bert, _write("t.csv", "sentence,label\nred apple,0\n")),
    ),
    Case(
        "text-jsonl-without-text",
        "a .jsonl record without a text",
        (*HF_CALIBRATE, "--data", "t.jsonl"),
        2,
        ("calib.npz",),
        setup=_all(_bert, _write("t.jsonl", '{"text": "red apple"}\n{"sentence": "blue sky"}\n')),
    ),
    Case(
        "text-label-not-integer",
        "text labels that are not integers",
        (*HF_CALIBRATE, "--data", "t.jsonl"),
        2,
        ("calib.npz",),
        setup=_all(_bert, _write("t.jsonl", '{"text": "red apple", "label": 0}\n{"text": "sky", "label": "blue"}\n')),
    ),
    Case(
        "engine-shapes-unknown-dim",
        "engine.shapes naming a dim the model lacks",
        ("build", *HF_SMALL, "--set", "engine.shapes={tokens: [1, 8, 16]}", "--out", "out"),
        1,
        ("out",),
        setup=_bert,
    ),
    Case(
        "engine-shapes-order",
        "engine.shapes with min > opt",
        ("build", *HF, "--set", "engine.shapes={sequence: [16, 8, 32]}", "--out", "out"),
        1,
        ("out",),
        setup=_bert,
    ),
    Case(
        "profile-unknown-input",
        "a shape profile naming an input the model lacks",
        ("engine", "model.onnx", "--min-shapes", "ids:1x8", "--opt-shapes", "ids:8x8", "--max-shapes", "ids:8x8"),
        1,
        ("model.plan", "model-bundle"),
        setup=_copy("cnn_onnx", "model.onnx"),
    ),
    Case(
        "export-dynamic-axes-unknown-input",
        "export.dynamic_axes naming an input the model lacks",
        ("build", *HF, "--set", "export.dynamic_axes={ids: [0, 1]}", "--out", "out"),
        1,
        ("out",),
        setup=_bert,
    ),
    Case(
        "one-shot-needs-asp",
        "finetune.epochs = 0 with a method that learns its mask",
        ("build", *DATA, "--set", "finetune.epochs=0", "--out", "out"),
        1,
        ("out",),
        setup=TINY,
    ),
    Case(
        "distill-temperature",
        "task.distill_temperature <= 0",
        ("build", "--set", "task.distill_temperature=0", "--out", "out"),
        1,
        ("out",),
    ),
    Case(
        "distill-weight",
        "task.distill_weight outside (0, 1]",
        ("build", "--set", "task.distill_weight=0", "--out", "out"),
        1,
        ("out",),
    ),
    Case(
        "distill-not-classification",
        "task.distill: true with a task whose outputs are not logits",
        (
            "build",
            *("--set", "task.spec=distillation", "--set", "task.distill=true", "--set", "model.pretrained=true"),
            *("--out", "out"),
        ),
        1,
        ("out",),
    ),
    Case(
        "permute-without-mask",
        "sparsity.permute with a method that makes no mask",
        ("build", "--set", "sparsity.method=dense", "--set", "sparsity.permute=true", "--out", "out"),
        1,
        ("out",),
    ),
    Case("unknown-command", "a command that does not exist", ("bild",), 2),
    Case("unknown-global-option", "an option nmdeploy does not have", ("--bogus", "verify", "model.onnx"), 2),
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
