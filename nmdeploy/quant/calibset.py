"""Calibration sets: N samples drawn reproducibly from a data source, stored as ``.npz`` + manifest.

The draw is class-balanced when the source has labels (each class gets ``N // classes``
samples, the first ``N % classes`` classes one more) and uniform otherwise, always from
``numpy.random.default_rng(seed)``. The ``.npz`` is written byte-for-byte reproducibly (fixed
zip timestamps, fixed member order), so the manifest's sha256 identifies the file itself:
anyone with the same source can regenerate it and compare with ``sha256sum``.

A *definition* (``NAME.yaml``) records how a committed set was made: ``data``,
``count``, ``seed`` and an optional ``output``; ``nmdeploy calibrate --definition FILE``
rebuilds it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy import __version__, schemas
from nmdeploy._atomic import write_all_atomic
from nmdeploy.config import MAX_INT, build_config, parse_yaml
from nmdeploy.data import ArrayData, Source, Stream, load_data
from nmdeploy.errors import ConfigError, InputError, first_line
from nmdeploy.quant.config import QuantizeConfig

__all__ = [
    "CalibrationDefinition",
    "CalibrationManifest",
    "check_draw",
    "check_set_path",
    "draw_indices",
    "make_calibration_set",
    "read_definition",
    "load_calibration_set",
    "write_calibration_set",
]

SCHEMA = schemas.CALIBRATION
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: the same bytes on every run


@dataclass(frozen=True)
class CalibrationManifest:
    """What a calibration set is and where it came from (the ``.json`` beside the ``.npz``)."""

    source: str
    split: str
    seed: int
    count: int
    balanced: bool
    per_class: dict[str, int]
    inputs: dict[str, list[int]]
    dtypes: dict[str, str]
    preprocessing: str
    sha256: str
    schema: str = SCHEMA
    nmdeploy: str = __version__


@dataclass(frozen=True)
class CalibrationDefinition:
    """A recipe for one calibration set (``NAME.yaml``); unknown keys are errors."""

    data: str
    count: int = QuantizeConfig.count
    seed: int = QuantizeConfig.seed
    output: str = ""  # default: NAME.npz beside the definition


def check_draw(count: int, seed: int) -> None:
    """Raise unless ``count`` and ``seed`` make a draw (before any data is read)."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ConfigError(f"calibration count {count} is invalid: give a positive number of samples, e.g. -n 512")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_INT:
        raise ConfigError(f"calibration seed {seed!r} is invalid: give an integer from 0 to 2**63 - 1, e.g. --seed 0")


def check_set_path(path: str | Path) -> Path:
    """``path`` if it can name a calibration set (an ``.npz``; its manifest goes beside it as ``.json``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"calibration set path {path} should end in .npz")
    return path


def draw_indices(count: int, total: int, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """``count`` distinct indices in [0, total): class-balanced when ``labels`` is given."""
    check_draw(count, seed)
    if count > total:
        raise InputError(f"asked for {count} calibration samples but the source has only {total}; lower -n")
    rng = np.random.default_rng(seed)
    if labels is None:
        chosen = rng.choice(total, size=count, replace=False)
    else:
        classes = np.unique(labels)
        quota = np.full(len(classes), count // len(classes))
        quota[: count % len(classes)] += 1
        picks, leftovers = [], []
        for cls, want in zip(classes, quota):
            members = np.flatnonzero(labels == cls)
            order = rng.permutation(members)
            picks.append(order[:want])
            leftovers.append(order[want:])
        chosen = np.concatenate(picks)
        short = count - chosen.size  # classes smaller than their quota: top up uniformly
        if short:
            rest = np.concatenate(leftovers)
            chosen = np.concatenate([chosen, rng.choice(rest, size=short, replace=False)])
        chosen = rng.permutation(chosen)  # mixed classes in every batch
    return chosen.astype(np.int64)


def _labels_for_draw(data: Source) -> np.ndarray | None:
    """The class labels a balanced draw uses: an array set's labels (which must be classes), else
    what the source knows without reading samples (an image folder's), else None (uniform)."""
    if isinstance(data, ArrayData):
        return data.class_labels() if data.labels is not None else None
    return data.known_labels()


def make_calibration_set(
    data: Source | Stream, count: int, seed: int = 0, workers: int = 0, at_most: bool = False
) -> tuple[ArrayData, dict[str, Any]]:
    """Draw the set from ``data``, reading only the drawn samples; returns it and the manifest fields.

    The draw is class-balanced where the labels are known without reading (arrays, image
    folders, a dataset with ``targets``), uniform otherwise; a stream gives its first ``count``.
    ``at_most``: a source holding fewer than ``count`` samples gives all of them (a build's default
    count on a small dataset) instead of an error.
    """
    from nmdeploy.data.loader import read_items
    from nmdeploy.data.streams import read_stream

    check_draw(count, seed)
    if isinstance(data, Stream):
        subset = read_stream(data, count, f"data {data.source!r}")
        if len(subset) < count and not at_most:
            raise InputError(
                f"asked for {count} calibration samples but the stream {data.source!r} has only {len(subset)}; lower -n"
            )
        labels = None
    else:
        labels = _labels_for_draw(data)
        index = draw_indices(min(count, len(data)) if at_most else count, len(data), labels, seed)
        subset = read_items(data, index, workers, f"data {data.source!r}")
    per_class: dict[str, int] = {}
    if subset.has_class_labels:
        values, counts = np.unique(subset.labels, return_counts=True)
        per_class = {str(v): int(c) for v, c in zip(values, counts)}
    return subset, {
        "source": data.source,
        "split": data.split,
        "seed": seed,
        "count": len(subset),
        "balanced": labels is not None,
        "per_class": per_class,
        "preprocessing": data.preprocessing,
    }


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` (what numpy.savez_compressed writes) with fixed timestamps: same input, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def write_calibration_set(path: str | Path, data: ArrayData, fields: dict[str, Any]) -> CalibrationManifest:
    """Write ``path`` (.npz) and its manifest (.json) atomically; returns the manifest."""
    path = check_set_path(path)
    arrays = dict(data.inputs)
    if data.labels is not None:
        arrays["y"] = data.labels
    blob = _npz_bytes(arrays)
    manifest = CalibrationManifest(
        **fields,
        inputs={k: list(v.shape) for k, v in data.inputs.items()},
        dtypes={k: str(v.dtype) for k, v in data.inputs.items()},
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    write_all_atomic([(path, blob), (path.with_suffix(".json"), json.dumps(asdict(manifest), indent=2) + "\n")])
    return manifest


def load_calibration_set(path: str | Path) -> tuple[ArrayData, CalibrationManifest | None]:
    """Read a set; when its manifest is beside it, the file must match the recorded sha256."""
    path = Path(path)
    data = load_data(str(path))
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        return data, None
    try:
        fields = json.loads(manifest_path.read_text())
        manifest = CalibrationManifest(**fields)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{manifest_path} is not a calibration manifest ({exc}); rebuild the set with nmdeploy calibrate"
        ) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != manifest.sha256:
        raise InputError(
            f"{path} does not match its manifest (sha256 {digest[:12]}... != {manifest.sha256[:12]}...); "
            "rebuild it with nmdeploy calibrate or delete the stale .json"
        )
    return ArrayData(data.inputs, data.labels, str(path), manifest.split, manifest.preprocessing), manifest


def read_definition(path: str | Path) -> CalibrationDefinition:
    """Parse a definition ``NAME.yaml``; relative ``output`` paths are beside the definition."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path}: no such calibration definition; give the path of a YAML file with data, count, seed, output"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read calibration definition {path} ({first_line(exc)})") from None
    raw = parse_yaml(text, f"calibration definition {path}", InputError)
    if not isinstance(raw, dict):
        raise InputError(f"{path} should be a mapping with data, count, seed and output")
    definition = build_config(CalibrationDefinition, raw, str(path))
    for key, kind in (("data", str), ("count", int), ("seed", int), ("output", str)):
        value = getattr(definition, key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key} should be {kind.__name__}, got {value!r}")
    output = path.parent / definition.output if definition.output else path.with_suffix(".npz")
    return CalibrationDefinition(definition.data, definition.count, definition.seed, str(output))
