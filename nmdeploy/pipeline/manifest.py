"""``manifest.json``: what each stage was given, what it wrote, how long it took, what it measured.

A stage's *inputs* are the hashes of the recipe sections it reads and of the artifacts it
consumes; its *outputs* are the hashes of the files it wrote. A re-run skips a stage whose
inputs hash the same as last time and whose outputs are still on disk unchanged, so an
interrupted build resumes at the first stage that did not finish and a changed key redoes
only the stages downstream of it. The manifest is rewritten atomically after every stage.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from nmdeploy import __version__, schemas
from nmdeploy._atomic import write_atomic

__all__ = ["Manifest", "StageRecord", "file_sha256", "inputs_key", "versions"]

SCHEMA = schemas.MANIFEST


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def inputs_key(config: Mapping[str, Any], files: Mapping[str, str | Path]) -> dict[str, str]:
    """Named input hashes: ``recipe:SECTION`` for each recipe part, ``file:NAME`` for each artifact."""
    key = {f"recipe:{name}": _json_sha256(value) for name, value in config.items()}
    key.update({f"file:{Path(path).name}": file_sha256(path) for name, path in files.items()})
    return dict(sorted(key.items()))


def versions() -> dict[str, str]:
    """Versions of nmdeploy and the libraries whose behaviour the artifacts depend on."""
    found = {"nmdeploy": __version__, "python": platform.python_version()}
    for name, dist in (
        ("torch", "torch"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime-gpu"),
        ("onnxruntime", "onnxruntime"),
    ):
        if name in found:
            continue
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


@dataclass
class StageRecord:
    status: str  # done, skipped (inputs unchanged), disabled, bundled (engine: written for the target GPU)
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    note: str = ""


class Manifest:
    """The build's ``manifest.json`` in ``out``: read at the start, rewritten after each stage."""

    def __init__(self, out: Path, recipe: Mapping[str, Any]) -> None:
        self.out = out
        self.path = out / "manifest.json"
        self.recipe = dict(recipe)
        self.previous: dict[str, Any] = self._read_previous()
        self.stages: dict[str, StageRecord] = {}

    def _read_previous(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # no manifest (or an unreadable one): every stage runs
        return data.get("stages", {}) if isinstance(data, dict) and data.get("schema") == SCHEMA else {}

    def reusable(self, name: str, inputs: Mapping[str, str]) -> StageRecord | None:
        """The previous record of ``name`` if its inputs match and its outputs are intact."""
        old = self.previous.get(name)
        if (
            not isinstance(old, dict)
            or old.get("status") not in ("done", "skipped", "bundled")
            or old.get("inputs") != dict(inputs)
        ):
            return None
        for file, digest in (old.get("outputs") or {}).items():
            path = self.out / file
            if not path.is_file() or file_sha256(path) != digest:
                return None
        if old.get("status") == "bundled":  # still only bundled: say so rather than "skipped"
            return StageRecord(
                "bundled",
                dict(inputs),
                dict(old.get("outputs") or {}),
                0.0,
                dict(old.get("metrics") or {}),
                "bundled for target (kept: inputs unchanged)",
            )
        took = old.get("note") if old.get("status") == "skipped" else f"built in {old.get('seconds', 0):.1f} s"
        return StageRecord(
            "skipped", dict(inputs), dict(old.get("outputs") or {}), 0.0, dict(old.get("metrics") or {}), took or ""
        )

    def record(self, name: str, record: StageRecord) -> None:
        self.stages[name] = record
        self.save()

    def outputs_of(self, files: Iterable[Path]) -> dict[str, str]:
        """file path relative to the output folder -> sha256."""
        return {path.resolve().relative_to(self.out.resolve()).as_posix(): file_sha256(path) for path in files}

    def to_dict(self) -> dict[str, Any]:
        stages = {
            name: {
                "status": r.status,
                "seconds": round(r.seconds, 3),
                "inputs": r.inputs,
                "outputs": r.outputs,
                "metrics": r.metrics,
                **({"note": r.note} if r.note else {}),
            }
            for name, r in self.stages.items()
        }
        return {
            "schema": SCHEMA,
            "versions": versions(),
            "recipe": self.recipe,
            "stages": stages,
            "accuracy": self.accuracy(),
        }

    def accuracy(self) -> dict[str, Any]:
        """The task's validation score per artifact (top-1 for classification), and its name under "metric"."""
        found: dict[str, Any] = {}
        for stage, key, label in (
            ("dense", "val_score", "dense"),
            ("sparse", "val_score", "sparse"),
            ("quantize", "onnx_score", "sparse_onnx"),
            ("quantize", "int8_score", "int8"),
        ):
            metrics = self.stages.get(stage, StageRecord("")).metrics
            if metrics.get(key) is not None:
                found.setdefault("metric", metrics.get("metric", "top-1"))
                found[label] = metrics[key]
        return found

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.to_dict(), indent=2) + "\n")
