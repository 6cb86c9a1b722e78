"""Triton model configuration: the ``serve`` settings, ``config.pbtxt`` text, and the plan's
move into a repository on the target.

Standard library only: the target bundle's ``build_engine.py --triton REPO`` uses
:func:`install_plan` where only TensorRT is installed. The text is written by hand rather
than through Triton's ``ModelConfig`` protobuf, because that schema ships only with
``tritonclient`` (a test dependency: every file written here is parsed with it in the tests).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from nmdeploy._atomic import staged_folder
from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError, InputError

__all__ = [
    "PENDING_SUFFIX",
    "pending_configs",
    "ServeConfig",
    "TensorSpec",
    "check_model_name",
    "install_plan",
    "render_config",
]

# the tensorrt_plan model's config waits at the repository root as <name>.tensorrt_plan.pbtxt until its
# plan is built on the target; Triton reads only folders there, so a file at the root is never loaded
PENDING_SUFFIX = ".tensorrt_plan.pbtxt"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _name_problem(name: str) -> str | None:
    if isinstance(name, str) and _NAME.fullmatch(name) and ".." not in name and len(name) <= 128:
        return None
    return (
        f"{name!r} is not a Triton model name: use letters, digits, '_', '-' and '.', starting with a letter or "
        "digit, without '..' and at most 128 characters (Triton refuses '/' and '..'; other characters need "
        "escaping in every request URL), e.g. fashion_resnet"
    )


def check_model_name(name: str, what: str = "model name") -> str:
    """Raise unless ``name`` is a model name Triton accepts and every client can put in a URL."""
    problem = _name_problem(name)
    if problem:
        raise ConfigError(f"{what} {problem}")
    return name


@dataclass(frozen=True)
class ServeConfig:
    """How the build's Triton model repository is written (``triton/`` in the build folder)."""

    SECTION: ClassVar[str] = "serve"

    triton: bool = setting(
        True,
        "Write a Triton model repository (`triton/`): the TensorRT plan as a `tensorrt_plan` model and the INT8 ONNX "
        "as an `onnxruntime_onnx` model with the TensorRT accelerator.",
    )
    name: str | None = setting(
        None,
        "Model name in Triton (the plan's model; the ONNX one is NAME_onnx); null = the model's: `model.spec`'s "
        "name (`fashion-resnet`), an `hf:` folder's, or a factory's (its module's for a generic `build`, "
        "`create_model` and the like).",
    )
    max_batch: int | None = setting(
        None, "Triton's max_batch_size; null = engine.max_batch; 0 = no batching (dims include the batch)."
    )
    dynamic_batching: bool = setting(True, "Let Triton batch requests together (the dynamic batcher).")
    preferred_batch: tuple[int, ...] | None = setting(
        None, "Batch sizes the dynamic batcher aims for; null = engine.opt_batch; [] = none."
    )
    queue_delay_us: int = setting(100, "How long a request may wait for others to batch with, in microseconds.")
    instances: int = setting(1, "Model instances per GPU (copies that run at the same time).")
    trt_cache: str = setting(
        "/tmp/nmdeploy-trt-cache",
        "Where the ONNX model's TensorRT accelerator caches its engines on the server (NAME_onnx/ below it).",
    )

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        problem = None if self.name is None else _name_problem(self.name)
        if problem:
            raise ConfigError.setting(self.SECTION, f"name {problem}", original=ConfigError(f"model name {problem}"))
        if self.max_batch is not None and self.max_batch < 0:
            raise ConfigError.setting(
                self.SECTION,
                f"max_batch: {self.max_batch} must be >= 0 (0 = no batching); or null for engine.max_batch",
            )
        if self.queue_delay_us < 0:
            raise ConfigError.setting(self.SECTION, f"queue_delay_us: {self.queue_delay_us} must be >= 0")
        if self.instances < 1:
            raise ConfigError.setting(self.SECTION, f"instances: {self.instances} must be at least 1")
        if any(b < 1 for b in self.preferred_batch or ()):
            raise ConfigError.setting(
                self.SECTION, f"preferred_batch: {list(self.preferred_batch or ())} must hold positive batch sizes"
            )
        if self.max_batch is not None and any(b > self.max_batch for b in self.preferred_batch or ()):
            sizes = list(self.preferred_batch or ())
            raise ConfigError.setting(
                self.SECTION,
                f"preferred_batch: {sizes} must not exceed {{section}}.max_batch = {self.max_batch}",
                original=ConfigError(f"--preferred-batch {sizes} must not exceed --max-batch {self.max_batch}"),
            )
        if not self.trt_cache:
            raise ConfigError.setting(
                self.SECTION, "trt_cache: give a folder on the server, e.g. /tmp/nmdeploy-trt-cache"
            )


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton declares it: ``dims`` without the batch when the model batches."""

    name: str
    dtype: str  # Triton's TYPE_* name
    dims: tuple[int, ...]  # -1 for a dynamic dim

    def to_dict(self) -> dict:
        return {"name": self.name, "data_type": self.dtype, "dims": list(self.dims)}


def _quote(text: str) -> str:
    return json.dumps(text)  # protobuf text format takes JSON's string escapes


def _tensors(kind: str, specs: Sequence[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for k, spec in enumerate(specs):
        lines += [
            "  {",
            f"    name: {_quote(spec.name)}",
            f"    data_type: {spec.dtype}",
            f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]",
            "  }" + ("," if k < len(specs) - 1 else ""),
        ]
    return [*lines, "]"]


def render_config(
    name: str,
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    max_batch: int,
    serve: ServeConfig,
    preferred: Sequence[int] = (),
    accelerator: Mapping[str, str] | None = None,
    header: Sequence[str] = (),
) -> str:
    """``config.pbtxt`` for one model: IO, batching, one instance group on the GPU and, for an
    ONNX model, the TensorRT execution accelerator with ``accelerator``'s parameters."""
    lines = [f"# {line}" for line in header]
    lines += [f"name: {_quote(name)}", f"platform: {_quote(platform)}", f"max_batch_size: {max_batch}"]
    lines += _tensors("input", inputs) + _tensors("output", outputs)
    if max_batch > 0 and serve.dynamic_batching:
        lines.append("dynamic_batching {")
        if preferred:
            lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]")
        lines += [f"  max_queue_delay_microseconds: {serve.queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {serve.instances}", "    kind: KIND_GPU", "  }", "]"]
    if accelerator is not None:
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator [", "      {"]
        lines.append('        name: "tensorrt"')
        for key, value in accelerator.items():
            lines.append(f"        parameters {{ key: {_quote(key)} value: {_quote(value)} }}")
        lines += ["      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def pending_configs(repo: str | Path) -> list[Path]:
    """The configs at the root of ``repo`` that wait for a plan; raises when there are none, so a
    target build can check its ``--triton`` folder before it spends minutes on the engine."""
    repo = Path(repo)
    if not repo.is_dir():
        raise InputError(f"{repo}: no such Triton model repository; pass the triton/ folder nmdeploy wrote")
    pending = sorted(repo.glob("*" + PENDING_SUFFIX))
    if not pending:
        done = sorted(p.parent.parent.name for p in repo.glob("*/1/model.plan"))
        raise InputError(
            f"{repo} has no model waiting for a plan (no *{PENDING_SUFFIX} at its root"
            + (f"; {', '.join(done)} already hold one" if done else "")
            + "); pass the triton/ folder of an nmdeploy build whose engine was bundled"
        )
    return pending


def install_plan(repo: str | Path, plan: str | Path) -> list[Path]:
    """Put ``plan`` into every model of ``repo`` whose config waits for one (``<name>.tensorrt_plan.pbtxt``
    at the root): ``<name>/config.pbtxt`` and ``<name>/1/model.plan``, each model folder written whole.

    What the target bundle's ``build_engine.py --triton REPO`` runs once it has built the plan.
    """
    plan = Path(plan)
    written = []
    for config in pending_configs(repo):
        name = config.name[: -len(PENDING_SUFFIX)]
        dest = config.parent / name
        with staged_folder(dest) as stage:
            (stage / "1").mkdir()
            shutil.copyfile(plan, stage / "1" / "model.plan")
            shutil.copyfile(config, stage / "config.pbtxt")
        config.unlink()
        written += [dest / "config.pbtxt", dest / "1" / "model.plan"]
    return written
