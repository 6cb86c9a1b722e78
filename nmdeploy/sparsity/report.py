"""Per-layer sparsity report rows, printable as a text table."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LayerReport", "SparsityReport"]


@dataclass(frozen=True)
class LayerReport:
    """One weighted layer.

    ``sparsity``: share of exact zeros in the weight the layer computes with now.
    ``sad``: sparse architecture divergence, the number of N:M mask positions that changed
    since the last ``set_epoch()`` (or ``sparsify()``); ``sad_fraction`` is that over the
    weight count. Both are None for layers that are not sparsified.
    """

    name: str
    type_name: str
    shape: tuple[int, ...]
    eligible: bool
    reason: str | None
    detail: str
    sparsity: float
    sad: int | None
    sad_fraction: float | None


@dataclass(frozen=True)
class SparsityReport:
    """The rows of ``Sparsifier.report()``, with the model-level figures users ask for first."""

    pattern: str
    method: str
    epoch: int
    dense_fraction: float
    rows: tuple[LayerReport, ...]

    def __iter__(self) -> Iterator[LayerReport]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerReport:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def sparse_layers(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rows if r.eligible)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]

    def __str__(self) -> str:
        header = ("layer", "type", "shape", "sparse", "reason / detail", "zeros", "SAD")
        lines = [header]
        for r in self.rows:
            lines.append(
                (
                    r.name or "(model)",
                    r.type_name,
                    "x".join(map(str, r.shape)),
                    "yes" if r.eligible else "no",
                    "" if r.eligible else f"{r.reason}: {r.detail}",
                    f"{r.sparsity:.1%}",
                    "-" if r.sad is None else f"{r.sad} ({r.sad_fraction:.2%})",
                )
            )
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        text = [
            f"{self.method} {self.pattern}, epoch {self.epoch}, dense blocks {self.dense_fraction:.0%}: "
            f"{len(self.sparse_layers)} of {len(self.rows)} weighted layers sparse"
        ]
        text += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines]
        return "\n".join(text)
