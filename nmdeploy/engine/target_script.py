"""Build the TensorRT engine on the target GPU from an nmdeploy target bundle.

Copied into every bundle as ``build_engine.py``. It needs only ``tensorrt``, ``onnx``,
``numpy`` and the ``nmdeploy/`` folder beside it (the engine code, no torch); timing the
dense twin also needs ``polygraphy``. Settings default to the bundle's ``bundle.json``.

    python build_engine.py                          # model.plan + engine_report.json (+ dense twin timing)
    python build_engine.py --batch 1,8,64 --no-dense-twin
    python build_engine.py --from-trtexec layers.json build.log   # report for an engine built by build_engine.sh
    python build_engine.py --triton ../triton       # also put the plan into the build's Triton repository
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _settings() -> dict:
    path = HERE / "bundle.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    return values


def _profile(text: str) -> tuple[int, int, int]:
    values = _batches(text)
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three comma-separated integers min,opt,max")
    return values  # type: ignore[return-value]


def _profile_shapes(profile: dict, batch: tuple[int, int, int] | None) -> list[dict | None]:
    """The bundle's min/opt/max shapes per input (its sequence ranges with them), dim 0 set to ``batch`` when given."""
    out: list[dict | None] = []
    for k, key in enumerate(("min", "opt", "max")):
        shapes = {}
        for name, entry in profile.items():
            shape = list(entry[key])
            if batch is not None and shape:
                shape[0] = batch[k]
            shapes[name] = tuple(shape)
        out.append(shapes or None)
    return out


def _parser(settings: dict, engine: object) -> argparse.ArgumentParser:
    """Options default to the bundle's settings (``engine``: its EngineConfig)."""
    parser = argparse.ArgumentParser(
        prog="build_engine.py", description="Build the sparse TensorRT engine of this bundle on this GPU."
    )
    parser.add_argument(
        "--onnx", default=str(HERE / settings.get("onnx", "model.int8.onnx")), help="ONNX model (default: %(default)s)"
    )
    parser.add_argument("--out", default=str(HERE / "model.plan"), help="plan to write (default: %(default)s)")
    parser.add_argument(
        "--batch",
        type=_profile,
        default=None,
        help=f"min,opt,max batch of the profile (default: {','.join(map(str, engine.batch))}; the other dims "
        "keep the bundle's profile)",
    )
    parser.add_argument("--no-sparse", action="store_true", help="build without SPARSE_WEIGHTS")
    parser.add_argument(
        "--dense-twin",
        action="store_true",
        default=engine.dense_twin,
        help="also build the dense twin and time it against the sparse plan (default: %(default)s)",
    )
    parser.add_argument("--no-dense-twin", action="store_true", help="skip the dense twin and its timing")
    parser.add_argument("--workspace", type=int, default=engine.workspace_mb, help="workspace limit in MiB")
    parser.add_argument(
        "--timing-cache", default=str(HERE / "timing.cache"), help="timing cache, read and saved (default: %(default)s)"
    )
    parser.add_argument("--hardware-compat", default=engine.hardware_compat, choices=("none", "ampere_plus", "same_cc"))
    parser.add_argument("--version-compatible", action="store_true", default=engine.version_compatible)
    parser.add_argument(
        "--fp16", action="store_true", default=engine.fp16, help="TensorRT 10.x: FP16 for layers without Q/DQ"
    )
    parser.add_argument(
        "--strongly-typed",
        action="store_true",
        default=engine.strongly_typed,
        help="TensorRT 10.x: strongly typed network instead of the INT8 flag",
    )
    parser.add_argument(
        "--bench-batch", type=_batches, default=(1, 32), help="batch sizes timed (default: %(default)s)"
    )
    parser.add_argument(
        "--iterations", type=int, default=200, help="timed runs per engine and batch (default: %(default)s)"
    )
    parser.add_argument(
        "--triton",
        metavar="REPO",
        help="also put the plan into this Triton model repository (the build's triton/ folder), where its model waits",
    )
    parser.add_argument(
        "--from-trtexec",
        nargs=2,
        metavar=("LAYERS_JSON", "BUILD_LOG"),
        help="only write engine_report.json from trtexec --exportLayerInfo output and its --verbose log",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    import dataclasses

    from nmdeploy import schemas
    from nmdeploy._atomic import write_atomic
    from nmdeploy.engine.config import EngineConfig
    from nmdeploy.engine.layers import format_rows, join_layers, parse_build_log, parse_inspector
    from nmdeploy.errors import NMDeployError

    settings = _settings()
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    try:
        bundled = EngineConfig(**{k: v for k, v in settings.items() if k in fields})
    except NMDeployError as exc:
        print(f"error: bundle.json: {exc}", file=sys.stderr)
        return exc.exit_code
    args = _parser(settings, bundled).parse_args(argv)

    if args.triton:
        from nmdeploy.engine.triton import pending_configs

        try:
            pending_configs(args.triton)  # before minutes of engine build
        except NMDeployError as exc:
            print(f"error: --triton: {exc}", file=sys.stderr)
            return exc.exit_code
    verify = json.loads((HERE / "verify.json").read_text()) if (HERE / "verify.json").is_file() else {"layers": []}
    try:
        if args.from_trtexec:
            layers_json, build_log = (Path(p) for p in args.from_trtexec)
            schema, layers = parse_inspector(layers_json.read_text())
            rows = join_layers(verify, layers, parse_build_log(build_log.read_text(errors="replace").splitlines()))
            report = {
                "schema": schemas.ENGINE,
                "source": "trtexec",
                "inspector_schema": schema,
                "layers": [row.to_dict() for row in rows],
            }
            write_atomic(HERE / "engine_report.json", json.dumps(report, indent=2) + "\n")
            print(format_rows(rows))
            if args.triton:
                from nmdeploy.engine.triton import install_plan

                for path in install_plan(args.triton, HERE / "model.plan"):
                    print(f"wrote {path}")
            return 0
        from nmdeploy.engine.build import build_engine

        low, opt, high = args.batch or bundled.batch
        shapes = _profile_shapes(settings.get("profile") or {}, args.batch)
        config = dataclasses.replace(
            bundled,
            sparse=bundled.sparse and not args.no_sparse,
            dense_twin=args.dense_twin and not args.no_dense_twin,
            workspace_mb=args.workspace,
            timing_cache=args.timing_cache,
            hardware_compat=args.hardware_compat,
            version_compatible=args.version_compatible,
            fp16=args.fp16,
            strongly_typed=args.strongly_typed,
            min_batch=low,
            opt_batch=opt,
            max_batch=high,
        )
        report = build_engine(
            args.onnx, args.out, config, verify=verify, min_shapes=shapes[0], opt_shapes=shapes[1], max_shapes=shapes[2]
        )
        print(
            f"wrote {report.plan} (TensorRT {report.tensorrt}, flags {', '.join(report.build.builder_flags) or 'none'}, "
            f"{report.seconds:.0f} s) and engine_report.json"
        )
        print(format_rows(list(report.layers)))
        if args.triton:
            from nmdeploy.engine.triton import install_plan

            for path in install_plan(args.triton, report.plan):
                print(f"wrote {path}")
        if report.dense_twin:
            from nmdeploy.engine.bench import bench_engines
            from nmdeploy.errors import EngineUnavailable

            try:
                rows = bench_engines(
                    {"sparse": report.plan, "dense": report.dense_twin}, args.bench_batch, iterations=args.iterations
                )
            except EngineUnavailable as exc:
                print(f"dense twin written, not timed: {exc}; or time both with trtexec --loadEngine=PLAN")
                return 0
            for batch in args.bench_batch:
                got = {r.engine: r for r in rows if r.batch == batch}
                print(
                    f"batch {batch}: sparse p50 {got['sparse'].p50_ms:.3f} ms, dense p50 {got['dense'].p50_ms:.3f} ms, "
                    f"dense/sparse {got['dense'].p50_ms / got['sparse'].p50_ms:.2f}x"
                )
    except NMDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    if (HERE / "nmdeploy").is_dir():
        sys.path.insert(0, str(HERE))  # the bundled engine code, ahead of any installed nmdeploy
    raise SystemExit(main())
