"""Channel permutation: how much more weight magnitude the N:M mask keeps, and what one-shot ASP scores.

For each model, every layer nmdeploy sparsifies is measured twice: the share of the weights'
magnitude a magnitude N:M mask keeps in the channel order as it is, and after
``sparsity.permute`` reordered the channels it can carry back to a producer. The figure per model
is over all its sparse layers (the layers left in order count with no gain), so it is what the
whole model keeps. On the trained models (the accuracy sweep's converged Fashion-MNIST CNN, and
an MLP trained here for 6 epochs), one-shot ASP is then scored on the 10,000 test images, with no
fine-tune, with and without the permutation. ResNet-50, BERT-base and MobileNetV2 (depthwise
convolutions, TensorFlow-style padding) are built from their default ``transformers`` configs
with random weights, so only magnitude is measured there.

    python -m benchmarks.permutation --write     # about 10 min on 2 cores
    python -m benchmarks.permutation --small     # the CNN and the MLP only
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks import accuracy
from benchmarks._results import write_section

RUNS = Path(__file__).with_name("runs") / "permutation"


class FashionMLP(nn.Module):
    """784 -> 512 -> 256 -> 128 -> 10 with BatchNorm and ReLU: the MLP of the test."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _trained_mlp(data) -> nn.Module:
    from nmdeploy.train import TrainConfig, fit

    torch.manual_seed(0)
    model = FashionMLP()
    path = RUNS / "mlp.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    fit(model, data["train"], None, TrainConfig(epochs=6, lr=0.05))
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def _trained_cnn() -> nn.Module:
    path = accuracy.RUNS / "dense.pt"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m benchmarks.accuracy --seeds 0 --no-control` first")
    model = accuracy._model()
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    return model


def _kept(sp, total: float) -> float:
    """Share of ``total`` (the dense magnitude of the sparse layers) that their masks keep."""
    with torch.no_grad():
        return sum(float(getattr(t.module, t.param_name).abs().sum()) for t in sp.targets if t.eligible) / total


def measure(name: str, model: nn.Module, inputs: tuple, pattern: str, test=None) -> dict:
    """One model at one pattern: kept magnitude and (with ``test``) one-shot ASP top-1, plain and permuted."""
    import nmdeploy
    from nmdeploy.sparsity import parse_pattern, select_layers
    from nmdeploy.train import top1_accuracy

    out = {"model": name, "pattern": pattern}
    targets = select_layers(model, parse_pattern(pattern).m)
    total = sum(float(getattr(t.module, t.param_name).detach().abs().sum()) for t in targets if t.eligible)
    for permute in (False, True):
        work = copy.deepcopy(model).eval()
        began = time.perf_counter()
        sp = nmdeploy.sparsify(work, pattern, "asp", permute=permute, example_inputs=inputs if permute else None)
        tag = "permuted" if permute else "plain"
        out[f"{tag}_seconds"] = time.perf_counter() - began
        out[f"{tag}_kept"] = _kept(sp, total)
        if permute:
            rows = list(sp.permutation)
            out["layers"] = len(rows)
            out["permuted_layers"] = sum(r.permuted for r in rows)
            gains = [r.gain for r in rows if r.permuted]
            out["mean_gain"] = sum(gains) / len(gains) if gains else 0.0
        if test is not None:
            out[f"{tag}_top1"] = top1_accuracy(work, *test)
        print(json.dumps(out), flush=True)
    return out


def _row(r: dict) -> str:
    gain = r["permuted_kept"] / r["plain_kept"] - 1
    top1 = (
        f"{100 * r['plain_top1']:.2f} | {100 * r['permuted_top1']:.2f} | {100 * (r['permuted_top1'] - r['plain_top1']):+.2f}"
        if "plain_top1" in r
        else "– | – | –"
    )
    return (
        f"| {r['model']} | {r['pattern']} | {r['permuted_layers']} of {r['layers']} | "
        f"{100 * r['plain_kept']:.2f} | {100 * r['permuted_kept']:.2f} | {100 * gain:+.2f}% | "
        f"{100 * r['mean_gain']:+.2f}% | {top1} | {r['permuted_seconds']:.2f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the Fashion-MNIST CNN and MLP only")
    parser.add_argument("--patterns", default="2:4,1:16")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    patterns = args.patterns.split(",")
    data = accuracy._data()
    sample = (data["val"][0][:16],)
    test = data["test"]
    rows = []
    cnn, mlp = _trained_cnn(), _trained_mlp(data)
    for pattern in patterns:
        rows.append(measure("FashionResNet(16, 32, 64), trained", cnn, sample, pattern, test))
        rows.append(measure("MLP 784-512-256-128-10, trained", mlp, sample, pattern, test))
    if not args.small:
        import transformers

        torch.manual_seed(0)
        resnet = transformers.ResNetForImageClassification(transformers.ResNetConfig()).eval()
        bert = transformers.BertModel(transformers.BertConfig()).eval()
        mobilenet = transformers.MobileNetV2Model(transformers.MobileNetV2Config()).eval()
        ids = torch.randint(0, 30000, (2, 128), generator=torch.Generator().manual_seed(0))
        for pattern in patterns[:1]:  # 2:4, the pattern TensorRT runs
            rows.append(
                measure("ResNet-50 from its config (random weights)", resnet, (torch.randn(2, 3, 224, 224),), pattern)
            )
            rows.append(measure("BERT-base from its config (random weights)", bert, (ids,), pattern))
            rows.append(
                measure(
                    "MobileNetV2 from its config (random weights)", mobilenet, (torch.randn(2, 3, 224, 224),), pattern
                )
            )
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join(
        [
            f"Command: `python -m benchmarks.permutation {shown}`.",
            "",
            "Kept = share of the sparse layers' weight magnitude that the magnitude N:M mask keeps, over all of them. "
            "Layer gain = the mean gain of the layers that were permuted. Top-1 = one-shot ASP on the 10,000 test "
            "images, no fine-tune. Seconds = the permutation search and checks.",
            "",
            "| model | pattern | permuted layers | kept, plain (%) | kept, permuted (%) | model gain | layer gain | "
            "one-shot top-1, plain (%) | permuted (%) | diff (pt) | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *(_row(r) for r in rows),
        ]
    )
    print(text)
    if args.write:
        write_section("Channel permutation (benchmarks/permutation.py)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
