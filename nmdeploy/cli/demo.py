"""``nmdeploy demo``: the sparsify loop end to end on synthetic data, in seconds on a CPU."""

from __future__ import annotations

import json

import click

METHODS = ("maxq", "srste", "ste", "asp", "dense")  # kept equal to method_names() by a test


@click.command()
@click.option("--method", default="maxq", show_default=True, help=f"One of {', '.join(METHODS)}, or 'all'.")
@click.option("--pattern", default="2:4", show_default=True, help="N:M pattern, e.g. 2:4, 1:4, 1:16.")
@click.option("--epochs", type=click.IntRange(1, 100), default=4, show_default=True, help="Sparse fine-tuning epochs.")
@click.option("--dense-epochs", type=click.IntRange(0, 100), default=3, show_default=True, help="Dense pre-training epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable results instead of tables.")
def demo(method: str, pattern: str, epochs: int, dense_epochs: int, seed: int, as_json: bool) -> None:
    """Train a small CNN dense, fine-tune it N:M sparse, finalize it, and report.

    Shows test accuracy before and after, the per-layer sparsity report (skip reasons,
    zero share, mask flips), and whether the finalized weights are exactly N:M.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from nmdeploy.pipeline.demo import run_demo, train_dense
    from nmdeploy.sparsity import method_names, parse_pattern

    parse_pattern(pattern)  # fail before any training on a bad pattern
    methods = method_names() if method == "all" else (method,)
    console = Console(stderr=as_json)
    results = []
    with Progress(console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("dense training", total=dense_epochs)
        dense = train_dense(dense_epochs, seed, on_epoch=lambda *_: progress.advance(task))
        for name in methods:
            task = progress.add_task(f"{name} {pattern}", total=epochs)
            results.append(
                run_demo(name, pattern, epochs, dense_epochs, seed, lambda *_, t=task: progress.advance(t), dense)
            )
    if as_json:
        click.echo(json.dumps([{
            "method": r.method, "pattern": r.pattern, "dense_accuracy": r.dense_accuracy,
            "sparse_accuracy": r.sparse_accuracy, "exact_nm": r.exact_nm, "layers": r.report.to_dicts(),
        } for r in results], indent=2))
        return
    if len(results) == 1:
        console.print(str(results[0].report), highlight=False)
    table = Table(title=f"Synthetic 10-class task, {pattern}, {epochs} sparse epochs after {dense_epochs} dense")
    for col in ("method", "dense acc", "sparse acc", f"exact {pattern} after finalize"):
        table.add_column(col)
    for r in results:
        table.add_row(r.method, f"{r.dense_accuracy:.1%}", f"{r.sparse_accuracy:.1%}",
                      "n/a" if r.method == "dense" else ("yes" if r.exact_nm else "NO"))
    console.print(table)
