"""The layer report: which ONNX layers TensorRT found eligible for 2:4 kernels, and which it picked.

Two sources, both read here without TensorRT (docs/design/tensorrt.md §4):

* the builder log, whose INFO lines ``(Sparsity) Layers eligible for sparse math: a, b`` and
  ``(Sparsity) TRT inference plan picked sparse implementation for layers: b`` name layers;
* the engine inspector's JSON (built with DETAILED profiling verbosity): per layer its type,
  tactic, output format/type, ``HasSparseWeights`` and ``Metadata`` with the ONNX node names.
  10.x lists the engine's I/O under ``Bindings`` and writes ``Format/Datatype``; 11.x has
  ``I/O Tensors`` objects and separate format and type fields. Both are accepted.

:func:`join_layers` puts them beside ``verify.json`` so that a user reads, per layer, "2:4
verified, eligible, not picked (dense faster, as the rule expected)".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "EngineLayer",
    "LayerRow",
    "SparsityLog",
    "format_rows",
    "join_layers",
    "parse_build_log",
    "parse_inspector",
    "rule_agreement",
]

_ELIGIBLE = re.compile(r"\(Sparsity\) Layers eligible for sparse math:\s*(.*?)\s*$")
_PICKED = re.compile(r"\(Sparsity\) TRT inference plan picked sparse implementation for layers:\s*(.*?)\s*$")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")
_PRECISIONS = (
    ("int8", "INT8"),
    ("fp16", "FP16"),
    ("half", "FP16"),
    ("bf16", "BF16"),
    ("fp8", "FP8"),
    ("int32", "INT32"),
    ("int64", "INT64"),
    ("fp32", "FP32"),
    ("float", "FP32"),
)


@dataclass(frozen=True)
class SparsityLog:
    """The two sparsity lines of a build log; None where the line was not seen."""

    eligible: tuple[str, ...] | None
    picked: tuple[str, ...] | None


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(", ") if name.strip())


def parse_build_log(lines: Iterable[str]) -> SparsityLog:
    """Find the sparsity lines in TensorRT's log (raw logger messages or trtexec output)."""
    eligible = picked = None
    for line in lines:
        if (m := _ELIGIBLE.search(line)) is not None:
            eligible = (eligible or ()) + _names(m.group(1))
        elif (m := _PICKED.search(line)) is not None:
            picked = (picked or ()) + _names(m.group(1))
    return SparsityLog(eligible, picked)


@dataclass(frozen=True)
class EngineLayer:
    name: str
    layer_type: str
    onnx_nodes: tuple[str, ...]
    precision: str  # of the layer's first output (INT8, FP16, FP32, ...), "?" when not stated
    tactic: str
    has_sparse_weights: bool | None  # None: the inspector did not say (e.g. not DETAILED)


def _precision(text: object) -> str | None:
    lowered = str(text or "").lower()
    for token, name in _PRECISIONS:
        if token in lowered:
            return name
    return None


def _layer_precision(layer: Mapping[str, Any]) -> str:
    for tensor in layer.get("Outputs") or []:
        if isinstance(tensor, Mapping):
            for key in ("DataType", "Datatype", "Format/Datatype", "Format/DataType"):
                found = _precision(tensor.get(key))
                if found:
                    return found
    weights = layer.get("Weights")
    found = _precision(weights.get("Type")) if isinstance(weights, Mapping) else None
    return found or "?"


def _onnx_nodes(name: str, metadata: object) -> tuple[str, ...]:
    from_metadata = tuple(_ONNX_LAYER.findall(str(metadata or "")))
    return from_metadata or tuple(part.strip() for part in name.split(" + ") if part.strip())


def parse_inspector(info: str | Mapping[str, Any]) -> tuple[str, list[EngineLayer]]:
    """(schema, layers) from ``get_engine_information(JSON)`` or trtexec ``--exportLayerInfo``.

    schema: ``"10.x"`` (``Bindings``), ``"11.x"`` (``I/O Tensors``) or ``"unknown"``.
    """
    data = json.loads(info) if isinstance(info, str) else info
    if isinstance(data, list):  # trtexec --exportLayerInfo may write the layers list alone
        data = {"Layers": data}
    schema = "11.x" if "I/O Tensors" in data else "10.x" if "Bindings" in data else "unknown"
    layers = []
    for item in data.get("Layers") or []:
        if isinstance(item, str):  # LAYER_NAMES_ONLY verbosity: names only
            layers.append(EngineLayer(item, "", _onnx_nodes(item, None), "?", "", None))
            continue
        name = str(item.get("Name", ""))
        sparse = item.get("HasSparseWeights")
        layers.append(
            EngineLayer(
                name,
                str(item.get("LayerType", "")),
                _onnx_nodes(name, item.get("Metadata")),
                _layer_precision(item),
                str(item.get("TacticName", "")),
                None if sparse is None else bool(int(sparse)),
            )
        )
    return schema, layers


@dataclass(frozen=True)
class LayerRow:
    """One weighted ONNX layer beside what TensorRT did with it."""

    node: str
    weight: str
    shape: tuple[int, ...]
    verified: bool  # N:M verified by nmdeploy (verify.json)
    engine_layer: str | None
    precision: str
    tactic: str
    eligible: bool | None
    picked: bool | None
    status: str
    likely_to_pay: str = ""  # the rule's guess from verify.json (yes / maybe / no), beside what TensorRT picked
    pay_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status(
    check: Mapping[str, Any], layer: EngineLayer | None, eligible: bool | None, picked: bool | None, pattern: str
) -> str:
    if not check.get("required"):
        return "dense weights"
    if not check.get("ok"):
        return f"NOT {pattern} ({check.get('violations')} bad group(s))"
    head = f"{pattern} verified"
    if layer is None:
        return f"{head}, not found in the engine (fused away or inside a Myelin region)"
    if eligible is None:
        return f"{head}, eligibility unknown (the build log had no sparsity lines)"
    if not eligible:
        return f"{head}, not eligible"
    if picked is None:
        return f"{head}, eligible, kernel choice unknown"
    if picked:
        return f"{head}, eligible, sparse kernel picked"
    if check.get("likely_to_pay") == "no":  # verify's pay_reason says why (export.payoff)
        return f"{head}, eligible, not picked (dense faster, as the rule expected)"
    return f"{head}, eligible, not picked (the dense kernel was faster)"


def join_layers(verify: Mapping[str, Any], layers: list[EngineLayer], log: SparsityLog) -> list[LayerRow]:
    """One row per weighted layer of ``verify.json``, matched to the engine layer holding its node."""
    by_node: dict[str, EngineLayer] = {}
    for layer in layers:
        for node in layer.onnx_nodes:
            by_node.setdefault(node, layer)
    rows = []
    pattern = str(verify.get("pattern", "2:4"))
    for check in verify.get("layers") or []:
        layer = by_node.get(check["node"])
        eligible = picked = None
        if layer is not None:
            if log.eligible is not None:
                eligible = layer.name in log.eligible
            elif layer.has_sparse_weights is not None:
                eligible = layer.has_sparse_weights
            if log.picked is not None:
                picked = layer.name in log.picked
        rows.append(
            LayerRow(
                check["node"],
                check.get("weight", ""),
                tuple(check.get("shape") or ()),
                bool(check.get("required") and check.get("ok")),
                layer.name if layer else None,
                layer.precision if layer else "",
                layer.tactic if layer else "",
                eligible,
                picked,
                _status(check, layer, eligible, picked, pattern),
                str(check.get("likely_to_pay", "")) if check.get("required") else "",
                str(check.get("pay_reason", "")) if check.get("required") else "",
            )
        )
    return rows


def rule_agreement(rows: Iterable[LayerRow]) -> tuple[int, int, list[str]]:
    """How often the likely-to-pay rule matched TensorRT's pick: (agreed, judged, the layers it got wrong).

    Only layers with a firm guess (yes / no) and a known pick count; "maybe" is no guess."""
    agreed = judged = 0
    wrong = []
    for row in rows:
        if row.picked is None or row.likely_to_pay not in ("yes", "no"):
            continue
        judged += 1
        if (row.likely_to_pay == "yes") == row.picked:
            agreed += 1
        else:
            wrong.append(row.weight)
    return agreed, judged, wrong


def format_rows(rows: list[LayerRow]) -> str:
    """A plain-text table: weight, engine layer, precision, the rule's guess, status; then how often
    the guess matched what TensorRT picked."""
    header = ("weight", "engine layer", "precision", "likely to pay", "status")
    table = [header] + [
        (r.weight, r.engine_layer or "-", r.precision or "-", r.likely_to_pay or "-", r.status) for r in rows
    ]
    widths = [min(48, max(len(str(row[i])) for row in table)) for i in range(4)]
    lines = ["  ".join([*(str(row[i])[:48].ljust(widths[i]) for i in range(4)), row[4]]) for row in table]
    agreed, judged, wrong = rule_agreement(rows)
    if judged:
        lines.append(
            f"likely-to-pay rule vs TensorRT's pick: {agreed} of {judged} layer(s) agree"
            + (f"; wrong on {', '.join(wrong)}" if wrong else "")
        )
    return "\n".join(lines)
