"""``quantize_int8``: an FP32 ONNX -> an INT8 Q/DQ ONNX that TensorRT 10.x-11.x accepts.

Built on ``onnxruntime.quantization.quantize_static`` (docs/design/tensorrt.md §6): QDQ format, int8
activations and weights, symmetric (every zero point 0), per-channel weights along the
output-channel axis, bias left in float. Calibration maths (min-max, entropy, percentile)
is onnxruntime's; nmdeploy chooses the nodes, fixes the placement TensorRT wants
(:mod:`nmdeploy.quant.placement`), and then proves the result: the Q/DQ lint must pass,
every layer that was N:M must still be N:M in its int8 weights, and FP32 vs INT8 accuracy
is measured. The output is written only when all of that holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from nmdeploy._atomic import atomic_output
from nmdeploy._onnx import SINGLE_FILE_LIMIT
from nmdeploy.config import from_arguments
from nmdeploy.data import ArrayData, DataConfig, Source, Stream, open_data
from nmdeploy.data.loader import resolve_workers
from nmdeploy.errors import ConfigError, InputError, QuantError, first_line
from nmdeploy.export.verify import VerifyReport, load_onnx, verify_model
from nmdeploy.quant.calibset import load_calibration_set
from nmdeploy.quant.config import METHODS, QuantizeConfig
from nmdeploy.quant.evaluate import EvalReport, evaluate_onnx
from nmdeploy.quant.lint import LintReport, lint_qdq
from nmdeploy.quant.placement import drop_fused_add_qdq, drop_output_qdq, prune_unused, residual_adds
from nmdeploy.quant.reader import CalibrationReader, bind_inputs, fitting_batch, ort_session
from nmdeploy.sparsity.pattern import parse_pattern

__all__ = ["METHODS", "QuantReport", "quantize_int8", "resolve_data"]

_QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
_ALREADY = ("QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
log = logging.getLogger("nmdeploy")


@dataclass(frozen=True)
class QuantReport:
    path: str
    method: str
    percentile: float | None
    per_channel: bool
    output_qdq_on_sparse: bool
    keep_float_weights: bool
    calibration: str
    calibration_samples: int
    quantized: tuple[str, ...]  # weighted nodes with INT8 inputs and weights
    excluded: tuple[str, ...]  # weighted nodes left in float
    residual_adds: int  # Add nodes whose residual input got Q/DQ
    sparse_layers: tuple[str, ...]  # N:M layers, verified again on the int8 weights
    lint: LintReport
    verify: VerifyReport
    accuracy: EvalReport


def resolve_data(
    spec: str | Path | Source | Stream, default_split: str, data: DataConfig | None = None
) -> Source | Stream:
    """A source as is; a calibration ``.npz`` with its manifest checked; any other data spec, opened."""
    if isinstance(spec, (Source, Stream)):
        return spec
    path = Path(spec)
    if path.suffix == ".npz" and path.with_suffix(".json").is_file():
        return load_calibration_set(path)[0]
    return open_data(str(spec), default_split, data)


def calibration_arrays(source: Source | Stream, config: QuantizeConfig, workers: int = 0) -> ArrayData:
    """What calibrates: arrays in memory whole (a calibration set is drawn already); from any
    other source (an image folder, a plug-in's dataset, a stream) a draw of ``config.count``
    (null: 512), at most what it holds; only a stream given an exact count must hold it."""
    if isinstance(source, ArrayData):
        return source
    from nmdeploy.quant.calibset import make_calibration_set

    exact = isinstance(source, Stream) and config.count is not None
    return make_calibration_set(source, config.draw_count(), config.seed, workers, at_most=not exact)[0]


def _weighted(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in _QUANTIZED_OPS]


def _resolve_exclude(nodes: list[onnx.NodeProto], patterns: Sequence[str]) -> set[str]:
    """Node names matched by ``patterns`` (globs on node names or on their weight/input names)."""
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {
            n.name
            for n in nodes
            if fnmatch.fnmatchcase(n.name, pattern) or any(fnmatch.fnmatchcase(i, pattern) for i in n.input)
        }
        if not hits:
            examples = ", ".join(sorted({i for n in nodes[:3] for i in n.input[1:2]} | {n.name for n in nodes[:2]}))
            raise ConfigError(
                f"exclude pattern {pattern!r} matches no Conv/Gemm/MatMul node or weight; names look like: {examples}"
            )
        chosen |= hits
    return chosen


def _calibrate_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def _drop_unused_opsets(model: onnx.ModelProto) -> None:
    """onnxruntime's pre-processing declares its contrib domains; keep only the ones used."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def quantize_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration: str | Path | Source | Stream,
    method: str = QuantizeConfig.method,
    per_channel: bool = QuantizeConfig.per_channel,
    output_qdq_on_sparse: bool = QuantizeConfig.output_qdq_on_sparse,
    exclude: Sequence[str] = QuantizeConfig.exclude,
    *,
    percentile: float = QuantizeConfig.percentile,
    keep_float_weights: bool = QuantizeConfig.keep_float_weights,
    batch_size: int = QuantizeConfig.batch_size,
    config: QuantizeConfig | None = None,
    pattern: str = "2:4",
    eval_data: str | Path | Source | Stream | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    data: DataConfig | None = None,
) -> QuantReport:
    """Quantise ``onnx_in`` to INT8 Q/DQ at ``onnx_out``, calibrated on ``calibration``.

    ``calibration``: a calibration-set ``.npz`` (``nmdeploy calibrate``), any data spec or
    source: arrays are used whole, anything read lazily gives a class-balanced draw of
    ``config.count`` samples (``config.seed``). ``data`` says how image folders are read. ``method``: minmax (the default: the most accurate on our benchmark), entropy
    or percentile (``percentile`` sets its cut-off). ``output_qdq_on_sparse`` also
    quantises the outputs of N:M layers. ``keep_float_weights`` stores float weights behind
    a Q -> DQ pair (TensorRT 8.6 / JetPack 5-6) instead of int8 initializers. ``exclude``:
    globs on node or weight names kept in float. ``config``: these settings as one
    :class:`QuantizeConfig` (a recipe's ``quantize`` section); the arguments are then not
    used. ``pattern``: the N:M pattern checked again on the int8 weights. Accuracy is
    measured on ``eval_data`` (default: the calibration data). ``progress(stage, done,
    total)`` is told how far calibration and evaluation are.
    """
    if config is None:
        config = from_arguments(
            QuantizeConfig,
            method=method,
            per_channel=per_channel,
            output_qdq_on_sparse=output_qdq_on_sparse,
            exclude=tuple(exclude),
            percentile=percentile,
            keep_float_weights=keep_float_weights,
            batch_size=batch_size,
        )
    parse_pattern(pattern)  # a bad pattern fails now, not after calibration
    onnx_in, onnx_out = Path(onnx_in), Path(onnx_out)
    if onnx_out.suffix != ".onnx":
        raise ConfigError(f"output path {onnx_out} should end in .onnx")
    if onnx_out.resolve() == onnx_in.resolve():
        raise ConfigError(f"output {onnx_out} is the input model; write the INT8 model to a new file")
    model = load_onnx(onnx_in, external_data=False)  # the graph is what is checked here; weights stay on disk
    large = needs_external_data(model, onnx_in)
    already = sorted({n.op_type for n in model.graph.node if n.op_type in _ALREADY or n.op_type.startswith("QLinear")})
    if already:
        raise InputError(f"{onnx_in} is already quantised (it has {', '.join(already)}); pass the FP32 model")
    weighted = _weighted(model)
    if not weighted:
        raise InputError(f"{onnx_in} has no Conv, Gemm or MatMul node; there is nothing to quantise")
    excluded = _resolve_exclude(weighted, config.exclude)
    wanted = None if data is None else data.workers
    source = resolve_data(calibration, "train", data)
    calib = calibration_arrays(source, config, resolve_workers(wanted, source))
    session = ort_session(str(onnx_in))
    bound = bind_inputs(calib, session.get_inputs(), "calibration data")
    del session
    evaluation = calib if eval_data is None else resolve_data(eval_data, "test", data)

    with atomic_output(onnx_out) as tmp:  # only the final model is published, after every check passed
        pre, raw, final = (tmp / name for name in ("pre.onnx", "raw.onnx", onnx_out.name))
        pre_model, adds = _run_ort(onnx_in, pre, raw, bound, config, excluded, progress, Path(tmp), large)
        fp32_check = verify_model(pre_model, pattern, None, str(onnx_in))
        sparse = {layer.node for layer in fp32_check.layers if layer.required and layer.ok}
        quantized = onnx.load(str(raw))
        graph = quantized.graph
        sparse_outputs = {n.output[0] for n in graph.node if n.name in sparse} if config.output_qdq_on_sparse else set()
        drop_fused_add_qdq(graph, adds, keep=sparse_outputs)
        if config.output_qdq_on_sparse:
            protected = {(n.name, 1 - slot) for n in graph.node if n.name in adds for slot in (adds[n.name],)}
            drop_output_qdq(graph, sparse, protected)
        prune_unused(graph)
        _drop_unused_opsets(quantized)
        lint = lint_qdq(quantized, str(onnx_out))
        if not lint.ok:
            raise QuantError(
                f"the quantised model breaks TensorRT's Q/DQ rules: {lint.violations[0]} "
                f"({len(lint.violations)} violation(s)); nothing was written"
            )
        check = verify_model(quantized, pattern, None, str(onnx_out))
        after = {layer.node: layer for layer in check.layers}
        lost = sorted(node for node in sparse if node not in excluded and not (node in after and after[node].ok))
        if lost:
            raise QuantError(
                f"{len(lost)} layer(s) lost their {pattern} zeros in INT8 (first: {lost[0]}); nothing was written"
            )
        save_onnx(quantized, final, large)  # after the checks: with external data it rewrites the tensors' locations
        done = [n.name for n in graph.node if n.op_type in _QUANTIZED_OPS and n.name not in excluded]
        eval_progress = (lambda k, total: progress("evaluate", k, total)) if progress else None
        accuracy = evaluate_onnx(
            final, evaluation, reference=onnx_in, progress=eval_progress, workers=resolve_workers(wanted, evaluation)
        )
        keep = {final, final.with_name(final.name + ".data")}
        for scratch in tmp.iterdir():  # pre-processed and raw models (and their data) are not artifacts
            if scratch not in keep and scratch.is_file():
                scratch.unlink()
    accuracy = dataclasses.replace(accuracy, model=str(onnx_out))
    return QuantReport(
        str(onnx_out),
        config.method,
        config.percentile if config.method == "percentile" else None,
        config.per_channel,
        config.output_qdq_on_sparse,
        config.keep_float_weights,
        calib.source,
        bound.count,
        tuple(done),
        tuple(sorted(excluded)),
        sum(1 for n in graph.node if n.name in adds),
        tuple(sorted(sparse - excluded)),
        lint,
        check,
        accuracy,
    )


# Histogram sizes handed to onnxruntime's calibrators. quantize_static does not pass bin counts
# through, and its entropy default (128 bins for 128 quantized bins) leaves one candidate
# threshold, i.e. entropy == min-max; TensorRT's entropy calibrator uses 2048 bins for 128.
_BINS = {"entropy": {"num_bins": 2048, "num_quantized_bins": 128}, "percentile": {"num_bins": 2048}}


def needs_external_data(model: onnx.ModelProto, path: Path) -> bool:
    """Whether a model derived from ``model`` (read from ``path``) must keep its weights outside the protobuf
    (2 GB limit): it does so already, or its file is near the limit."""
    from onnx.external_data_helper import uses_external_data

    return any(uses_external_data(t) for t in model.graph.initializer) or path.stat().st_size > SINGLE_FILE_LIMIT


def save_onnx(model: onnx.ModelProto, path: Path, large: bool) -> None:
    """``model`` at ``path``; with ``large``, its weights in one ``<name>.data`` file beside it."""
    if large:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)  # fmt: skip
    else:
        onnx.save(model, str(path))


def _calibrate(
    pre: Path, tmp: Path, reader: Any, method: str, percentile: float, cache: Path, large: bool = False
) -> None:
    """Collect activation ranges with onnxruntime's calibrator and save them as its JSON cache."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    options: dict[str, Any] = {"symmetric": True, **_BINS.get(method, {})}
    if method == "percentile":
        options["percentile"] = percentile
    calibrator = create_calibrator(
        pre,
        list(_QUANTIZED_OPS) + ["Add"],
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=_calibrate_method(method),
        use_external_data_format=large,  # the augmented model is as big as the model
        extra_options=options,
    )
    calibrator.collect_data(reader)
    save_tensors_data(calibrator.compute_data(), cache)


@contextlib.contextmanager
def _working_folder(folder: Path):
    """``os.chdir(folder)`` for a while (process-wide, like onnxruntime's own file writes it contains)."""
    import os

    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _run_ort(
    onnx_in: Path,
    pre: Path,
    raw: Path,
    bound: Any,
    config: QuantizeConfig,
    excluded: set[str],
    progress: Any,
    tmp: Path,
    large: bool = False,
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """onnxruntime's pre-processing and quantize_static with TensorRT's settings (docs/design/tensorrt.md §6).

    Returns the pre-processed FP32 model and its residual Adds (what the placement fix-up needs).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    external: dict[str, Any] = (
        {"save_as_external_data": True, "all_tensors_to_one_file": True, "external_data_location": pre.name + ".data"}
        if large
        else {}
    )
    chatter = io.StringIO()  # onnxruntime prints calibration progress with print()
    onnx_in, pre = onnx_in.resolve(), pre.resolve()
    try:
        # the working folder is the scratch folder meanwhile: onnxruntime's symbolic shape inference saves
        # the whole model there (sym_shape_infer_temp.onnx + data) when it gives up
        with contextlib.redirect_stdout(chatter), _working_folder(tmp):
            try:
                quant_pre_process(str(onnx_in), str(pre), **external)
            except Exception:  # onnxruntime's symbolic shape inference trips on some exported graphs (an
                # Expand in a transformer's attention mask); ONNX's own shape inference is enough here
                quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True, **external)
    except Exception as exc:
        raise QuantError(f"onnxruntime pre-processing failed on {onnx_in}: {first_line(exc)}") from None
    pre_model = onnx.load(str(pre))
    adds = residual_adds(pre_model.graph)
    nodes = [n.name for n in pre_model.graph.node if n.op_type in _QUANTIZED_OPS and n.name not in excluded] + list(
        adds
    )
    on_batch = (lambda done, total: progress("calibrate", done, total)) if progress is not None else None
    tokens = max((a.shape[1] for a in bound.arrays.values() if a.ndim == 2), default=128)
    reader = CalibrationReader(bound, fitting_batch(pre, config.batch_size, tokens), on_batch)
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "AddQDQPairToWeight": config.keep_float_weights,
        "OpTypesToExcludeOutputQuantization": ["Add"] + ([] if config.output_qdq_on_sparse else list(_QUANTIZED_OPS)),
    }
    cache = Path(tmp) / "ranges.json"
    ort_logger = logging.getLogger("root")
    level = ort_logger.level
    try:
        with contextlib.redirect_stdout(chatter):
            ort_logger.setLevel(logging.ERROR)
            _calibrate(pre, Path(tmp), reader, config.method, config.percentile, cache, large)
            quantize_static(
                str(pre),
                str(raw),
                None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=[*_QUANTIZED_OPS, "Add"],
                nodes_to_quantize=nodes,
                nodes_to_exclude=sorted(excluded),
                per_channel=config.per_channel,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=_calibrate_method(config.method),
                extra_options=extra,
                calibration_cache_path=str(cache),
                use_external_data_format=large,
            )
    except (InputError, ConfigError):
        raise
    except Exception as exc:
        raise QuantError(f"onnxruntime quantize_static failed: {first_line(exc)}") from None
    finally:
        ort_logger.setLevel(level)
    log.debug("onnxruntime said: %s", chatter.getvalue().strip())
    return pre_model, adds
