"""The two texts a Triton repository carries for its user: ``README.md`` and ``client.py``.

``client.py`` is a template with the models' inputs filled in, so it runs with nothing but
``tritonclient[http]`` and numpy: one request of random data of the right names, dtypes and
shapes, and the outputs printed. ``--dry-run`` builds the request without sending it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nmdeploy.engine.triton import PENDING_SUFFIX, ServeConfig

__all__ = ["client_script", "repository_readme"]

_CLIENT = '''#!/usr/bin/env python3
"""Send one batch to a model of this Triton repository over HTTP and print its outputs.

    pip install "tritonclient[http]" numpy
    python3 client.py                               # the default model, batch 1, at localhost:8000
    python3 client.py --model {other} --batch 8 --url host:8000
    python3 client.py --dry-run                     # build the request only; needs no server

The inputs are random data of the model's names, dtypes and shapes (integer inputs are token
ids 0 and masks 1; a dynamic dim besides the batch takes --length). Written by nmdeploy.
"""

import argparse
import sys

import numpy as np

MODELS = {models}
DEFAULT = {default!r}


def make_inputs(model, batch, length, seed=0):
    """name -> array for one request."""
    rng = np.random.default_rng(seed)
    arrays = {{}}
    for spec in model["inputs"]:
        shape = [length if d < 0 else d for d in spec["dims"]]
        if model["max_batch"] > 0:
            shape = [batch, *shape]
        dtype = np.dtype(spec["dtype"])
        if dtype.kind == "f":
            arrays[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays[spec["name"]] = np.ones(shape, dtype)
        else:
            fill = 1 if "mask" in spec["name"].lower() else 0
            arrays[spec["name"]] = np.full(shape, fill, dtype)
    return arrays


def main(argv=None):
    parser = argparse.ArgumentParser(description="One request to a model of this Triton repository.")
    parser.add_argument("--url", default="localhost:8000", help="Triton's HTTP endpoint (default: %(default)s)")
    parser.add_argument("--model", default=DEFAULT, choices=sorted(MODELS), help="model (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1, help="samples in the request (default: %(default)s)")
    parser.add_argument("--length", type=int, default=16, help="size of dynamic dims besides the batch")
    parser.add_argument("--dry-run", action="store_true", help="build the request, do not send it")
    args = parser.parse_args(argv)
    model = MODELS[args.model]
    if model["max_batch"] == 0 and args.batch != 1:
        parser.error(f"{{args.model}} has a fixed batch (max_batch_size 0); drop --batch")
    if model["max_batch"] and not 1 <= args.batch <= model["max_batch"]:
        parser.error(f"--batch {{args.batch}}: {{args.model}} takes 1..{{model['max_batch']}}")
    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype
    except ImportError:
        sys.exit('this script needs tritonclient: pip install "tritonclient[http]"')
    arrays = make_inputs(model, args.batch, args.length)
    inputs = []
    for name, array in arrays.items():
        item = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        inputs.append(item)
    wanted = [httpclient.InferRequestedOutput(name) for name in model["outputs"]]
    if args.dry_run:
        for item in inputs:
            print(f"would send {{item.name()}} {{item.datatype()}} {{item.shape()}} to {{args.model}} at {{args.url}}")
        return 0
    client = httpclient.InferenceServerClient(url=args.url)
    try:
        ready = client.is_model_ready(args.model)
    except Exception as exc:
        sys.exit(f"cannot reach Triton at {{args.url}} ({{type(exc).__name__}}: {{exc}}); start tritonserver (README.md)")
    if not ready:
        sys.exit(f"{{args.model}} is not ready on {{args.url}}; see tritonserver's log for why it did not load")
    result = client.infer(args.model, inputs, outputs=wanted)
    for name in model["outputs"]:
        value = result.as_numpy(name)
        line = f"{{name}}: {{value.dtype}} {{list(value.shape)}}"
        if value.ndim == 2:
            line += f", arg-max per sample {{value.argmax(axis=1).tolist()[:16]}}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''


def client_script(models: Mapping[str, Any], default: str) -> str:
    """``client.py`` for ``models`` (name -> max_batch, inputs with dtype and dims, output names)."""
    other = next((m for m in models if m != default), default)
    return _CLIENT.format(models=json.dumps(dict(models), indent=4), default=default, other=other)


def repository_readme(
    models: Sequence[str],
    pending: str | None,
    onnx_model: str,
    max_batch: int,
    serve: ServeConfig,
    facts: Mapping[str, Any],
) -> str:
    """How to serve the repository, what each model is, and how to check it answers."""
    plan_model = next((m for m in models if m != onnx_model), None)
    lines = ["# Triton model repository (written by nmdeploy)", ""]
    if facts:
        lines += [", ".join(f"{k}: {v}" for k, v in facts.items()), ""]
    lines += ["| model | platform | what |", "|---|---|---|"]
    if plan_model:
        state = (
            f"waits for its plan: `{plan_model}{PENDING_SUFFIX}` holds its config"
            if pending
            else "`1/model.plan`, the sparse INT8 TensorRT engine"
        )
        lines.append(f"| `{plan_model}` | `tensorrt_plan` | {state} |")
    lines.append(
        f"| `{onnx_model}` | `onnxruntime_onnx` | the ONNX, run by ONNX Runtime's TensorRT accelerator "
        f"(engines cached in `{serve.trt_cache}/{onnx_model}`); no build step |"
    )
    batching = (
        f"max_batch_size {max_batch}, dynamic batching {'on' if serve.dynamic_batching else 'off'}"
        if max_batch
        else "a fixed batch (max_batch_size 0: dims include the batch)"
    )
    lines += ["", f"Both take the same inputs; {batching}; {serve.instances} instance(s) per GPU.", ""]
    if pending:
        lines += [
            "## First: build the plan on the target GPU",
            "",
            "TensorRT was not available where this repository was written. On the GPU that will serve it,",
            "with the TensorRT of the Triton release you run:",
            "",
            f"    python3 ../target-bundle/build_engine.py --triton .      # builds model.plan, moves it into {pending}/1/",
            "",
            f"Until then start Triton with `--model-control-mode=explicit --load-model={onnx_model}`",
            "(a model without its plan would stop the server at start-up).",
            "",
        ]
    lines += [
        "## Serve",
        "",
        "A plan runs only with the TensorRT version that built it: pick the Triton release whose TensorRT",
        "matches (Triton's release notes list it), or rebuild the plan inside that container.",
        "",
        "    docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \\",
        "        -v $PWD:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\",
        "        tritonserver --model-repository=/models",
        "",
        "On Jetson (JetPack), use the Triton release built for JetPack and the same `--model-repository`.",
        "",
        "## Check it answers",
        "",
        '    pip install "tritonclient[http]" numpy',
        f"    python3 client.py                        # one request to {onnx_model if pending else models[0]}",
        f"    python3 client.py --model {plan_model if pending else onnx_model}"
        + ("                # once its plan is in" if pending else ""),
        "    python3 client.py --dry-run              # the request only, no server needed",
        "",
    ]
    return "\n".join(lines)
