"""Channel permutation before the first N:M mask (Pool & Yu, NeurIPS 2021; NVIDIA ASP's technique).

An N:M mask keeps the ``n`` largest of every ``m`` neighbouring input channels. Which channels are
neighbours is arbitrary: reorder a layer's input channels, and the same reorder of the output
channels of the layer that makes them (with its bias and any BatchNorm between), and the model
computes the same function while its groups hold other channels. A good order puts large weights
in different groups, so the mask keeps more of the weights' magnitude.

:func:`find_permutation` searches the order for one weight: from the identity, rounds of random
pairings of groups, where each pair takes its best single swap of channels between the two
groups. The gain of every swap is computed in closed form from each group's top ``n`` (what a
group keeps without channel ``a``, plus channel ``b`` if it beats the smallest kept one), so a
round costs about as much as one pass over the weight. The search stops when a few rounds
together add less than 1e-4 of the kept magnitude. It is a local search, like ASP's channel
swaps, not the exact optimum.

:func:`permute_channels` finds the producer of each sparse layer's input in a dataflow trace
(:mod:`nmdeploy.sparsity.trace`), permutes both, and checks on the example inputs that the
outputs are unchanged; a layer it cannot carry back to a producer keeps its order, with the reason.
Sibling layers that read the same channels get one order, searched on the sparse ones' weights
stacked (what the N:M masks of all of them keep), and a dense sibling follows it. Behind a
concatenation along the channels each part has its own producer, so the order is searched part
by part (every part a multiple of m, so that no group straddles two).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils import _pytree as pytree

from nmdeploy.sparsity.trace import Link, find_producer, trace_forward

__all__ = ["PermutationReport", "PermutationRow", "find_permutation", "kept_magnitude", "permute_channels"]

_PAIR_ELEMENTS = 1 << 24  # rows x pairs x m² floats evaluated at once (64 MiB)
_PATIENCE = 5  # rounds whose summed gain must reach the tolerance for the search to go on
_TOLERANCE = 1e-4  # of the kept magnitude


Weights = torch.Tensor | Sequence[torch.Tensor]  # one layer's, or sibling layers' that read the same channels


def _columns(weight: Weights) -> torch.Tensor:
    """``|weight|`` as ``[rows, in]``: one row per output channel and kernel position (fp32); sibling
    layers' weights (the same input channels) stacked, so that one order serves them all."""
    if not isinstance(weight, torch.Tensor):
        return torch.cat([_columns(w) for w in weight])
    a = weight.detach().abs().float()
    return a.movedim(1, -1).reshape(-1, a.shape[1])


def kept_magnitude(weight: Weights, n: int, m: int, order: torch.Tensor | None = None) -> float:
    """Share of ``|weight|`` an N:M mask keeps, with the input channels in ``order`` (default: as they are)."""
    a = _columns(weight)
    if order is not None:
        a = a[:, order]
    total = float(a.sum())
    if total == 0:
        return 1.0
    kept = a.reshape(a.shape[0], -1, m).topk(n, dim=-1).values.sum()
    return float(kept) / total


def _group_stats(g: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For groups ``g`` (``[groups, m, rows]``): per position and row, the top-n sum and the n-th largest
    of the group without that position, and the group's top-n sum per row.

    Without a position inside the top n, the group keeps its (n+1)-th largest instead; a tie
    at the threshold gives the same sums either way, so comparing values is exact.
    """
    values = g.topk(n + 1, dim=1).values  # n < m
    top = values[:, :n].sum(1, keepdim=True)
    nth, next_ = values[:, n - 1 : n], values[:, n : n + 1]
    inside = g >= nth
    without_sum = torch.where(inside, top - g + next_, top).sum(-1)  # summed over rows: [groups, m]
    without_nth = torch.where(inside, next_, nth)
    return without_sum, without_nth, top.squeeze(1).sum(-1)


def _best_swaps(
    g: torch.Tensor, stats: tuple[torch.Tensor, ...], first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """For each pair of groups (first[i], second[i]): the gain of its best swap and the two positions.

    Group f without channel a, plus channel b of group s, keeps ``S_f[a] + relu(b - t_f[a])``
    per row (S: top-n sum without a, t: n-th largest without a); the same for s.
    """
    without_sum, without_nth, top = stats
    m, rows = g.shape[1], g.shape[2]
    gains, where = [], []
    chunk = max(1, _PAIR_ELEMENTS // max(1, rows * m * m))
    for start in range(0, len(first), chunk):
        f, s = first[start : start + chunk], second[start : start + chunk]
        into_f = (g[s, None, :, :] - without_nth[f, :, None, :]).clamp_(min=0).sum(-1)  # [pairs, a, b]
        into_s = (g[f, :, None, :] - without_nth[s, None, :, :]).clamp_(min=0).sum(-1)
        gain = into_f + into_s + without_sum[f, :, None] + without_sum[s, None, :] - (top[f] + top[s])[:, None, None]
        best, flat = gain.reshape(len(f), -1).max(dim=1)
        gains.append(best)
        where.append(flat)
    flat = torch.cat(where)
    return torch.cat(gains), flat // m, flat % m


def find_permutation(weight: Weights, n: int, m: int, *, max_rounds: int = 500, seed: int = 0) -> torch.Tensor:
    """An order of ``weight``'s input channels (dim 1) under which an N:M mask keeps more magnitude;
    given several weights with the same input channels, one order for all of them together.

    Deterministic for a given ``seed`` (its own generator: the global RNG is not touched).
    """
    a = _columns(weight)
    channels = a.shape[1]
    groups = channels // m
    order = torch.arange(channels)
    if groups < 2:
        return order
    g = a.t().contiguous().reshape(groups, m, -1)  # [groups, m, rows], in the current order
    stats = _group_stats(g, n)
    generator = torch.Generator().manual_seed(seed)
    total = float(a.sum()) or 1.0
    recent: list[float] = []
    half = groups // 2
    for _ in range(max_rounds):
        pairing = torch.randperm(groups, generator=generator)
        first, second = pairing[:half], pairing[half : 2 * half]
        gain, pos_a, pos_b = _best_swaps(g, stats, first, second)
        take = gain > 1e-9 * total
        if bool(take.any()):
            f, s, pa, pb = first[take], second[take], pos_a[take], pos_b[take]
            i, j = f * m + pa, s * m + pb
            order[i], order[j] = order[j].clone(), order[i].clone()
            g[f, pa], g[s, pb] = g[s, pb].clone(), g[f, pa].clone()
            touched = torch.cat([f, s])  # only these groups' statistics change
            for full, part in zip(stats, _group_stats(g[touched], n)):
                full[touched] = part
        recent.append(float(gain[take].sum()) / total)
        if len(recent) >= _PATIENCE and sum(recent[-_PATIENCE:]) < _TOLERANCE:
            break
    return order


@dataclass(frozen=True)
class PermutationRow:
    """One sparse layer: whether its input channels were reordered, and what the mask keeps.

    ``kept_before`` / ``kept_after``: share of the weight's magnitude the N:M mask keeps in
    the original and in the chosen order (equal where the layer was not permuted).
    """

    layer: str
    permuted: bool
    reason: str | None
    kept_before: float
    kept_after: float
    producer: str | None = None

    @property
    def gain(self) -> float:
        """Kept magnitude after over before, minus 1 (0.05 = the mask keeps 5 % more)."""
        return self.kept_after / self.kept_before - 1 if self.kept_before else 0.0


@dataclass(frozen=True)
class PermutationReport:
    """Every sparse layer's row, with the time the search took."""

    pattern: str
    rows: tuple[PermutationRow, ...]
    seconds: float

    def __iter__(self) -> Iterator[PermutationRow]:
        return iter(self.rows)

    def __getitem__(self, layer: str) -> PermutationRow:
        for row in self.rows:
            if row.layer == layer:
                return row
        raise KeyError(layer)

    @property
    def permuted(self) -> tuple[str, ...]:
        return tuple(r.layer for r in self.rows if r.permuted)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [{**asdict(r), "gain": r.gain} for r in self.rows]

    def __str__(self) -> str:
        lines = [
            f"channel permutation, {self.pattern}: {len(self.permuted)} of {len(self.rows)} sparse layers permuted"
        ]
        for r in self.rows:
            what = f"kept {r.kept_before:.1%} -> {r.kept_after:.1%} ({r.gain:+.1%})" if r.permuted else r.reason
            lines.append(f"  {r.layer}: {what}")
        return "\n".join(lines)


def _outputs(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.detach().clone() for t in pytree.tree_leaves(model(*inputs)) if isinstance(t, torch.Tensor)]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """Equal up to the rounding of a different summation order."""
    return len(a) == len(b) and all(
        x.shape == y.shape
        and bool(torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-5 * max(1.0, float(x.abs().max()))))
        for x, y in zip(a, b)
    )


def permute_channels(
    model: nn.Module,
    layers: Sequence[tuple[str, nn.Parameter]],
    n: int,
    m: int,
    example_inputs: Sequence[torch.Tensor],
    *,
    seed: int = 0,
) -> PermutationReport:
    """Reorder the input channels of ``layers`` (name, weight) and their producers' outputs, in place.

    The model computes the same function afterwards: that is checked on ``example_inputs``, and
    a layer whose reorder would change the outputs (a use of the channels the trace missed) is
    put back, with the reason.
    """
    began = time.perf_counter()
    names = {id(p): name for name, mod in model.named_modules() for p in mod.parameters(recurse=False)}
    was_training = model.training
    model.eval()
    try:
        trace = trace_forward(model, example_inputs)
        reference = [t.detach().clone() for t in trace.returned]  # the outputs to keep, from the traced forward
        rows: dict[str, PermutationRow] = {}
        links: dict[Any, Link] = {}  # what makes the channels (_identity) -> its link: siblings share one order
        before_of: dict[int, tuple[str, float]] = {}  # id(weight) -> (name, share the plain mask keeps)
        for name, weight in layers:
            before = kept_magnitude(weight, n, m)
            before_of[id(weight)] = (name, before)
            link = find_producer(trace, weight)
            if not reference:  # nothing to prove the function unchanged with
                link = Link(reason="the model's outputs hold no tensor to check the permutation against")
            if link.reason is not None:
                rows[name] = PermutationRow(name, False, link.reason, before, before)
            elif weight.shape[1] < 2 * m:
                rows[name] = PermutationRow(
                    name, False, f"one group of {m} input channels: nothing to swap", before, before
                )
            elif any(size % m for _, size, _ in _leaves(link)):
                sizes = " + ".join(str(size) for _, size, _ in _leaves(link))
                rows[name] = PermutationRow(
                    name,
                    False,
                    f"a concatenation of {sizes} channels: each part must be a multiple of {m}",
                    before,
                    before,
                )
            else:
                links.setdefault(_identity(link), link)
        del trace
        plans = [_plan(link, before_of, names, n, m, seed, rows) for link in links.values()]
        plans = [p for p in plans if p is not None]
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for plan in plans:
            _apply(plan.link, plan.order)
        if not _same(reference, _outputs(model, example_inputs)):
            model.load_state_dict(saved)  # one of them is not safe: find which, one at a time
            for plan in plans:
                _apply(plan.link, plan.order)
                if not _same(reference, _outputs(model, example_inputs)):
                    _apply(plan.link, plan.order.argsort())
                    for name, before, _ in plan.layers:
                        rows[name] = PermutationRow(
                            name, False, "permuting it changed the model's outputs", before, before, plan.producer
                        )
        for plan in plans:
            for name, before, after in plan.layers:
                rows.setdefault(name, PermutationRow(name, True, None, before, after, plan.producer))
    finally:
        model.train(was_training)
    return PermutationReport(f"{n}:{m}", tuple(rows[name] for name, _ in layers), time.perf_counter() - began)


class _Plan(NamedTuple):
    """One producer's reorder, ready to apply: the order found, and per sparse layer that reads the
    channels, (name, kept before, kept after)."""

    link: Link
    order: torch.Tensor
    layers: tuple[tuple[str, float, float], ...]
    producer: str | None


def _plan(
    link: Link,
    before_of: dict[int, tuple[str, float]],
    names: dict[int, str],
    n: int,
    m: int,
    seed: int,
    rows: dict[str, PermutationRow],
) -> _Plan | None:
    """The order for the layers reading ``link``'s channels (one layer, or siblings searched together:
    the sparse ones make the objective, a dense sibling just follows); None, with rows, when no order
    keeps more magnitude."""
    readers = [w for w in _consumers(link) if id(w) in before_of]
    order = _order(link, readers, n, m, seed)
    kept = tuple((*before_of[id(w)], kept_magnitude(w, n, m, order)) for w in readers)
    if kept_magnitude(readers, n, m, order) <= kept_magnitude(readers, n, m):
        for name, before, _ in kept:
            rows[name] = PermutationRow(name, False, "no order keeps more magnitude", before, before)
        return None
    return _Plan(link, order, kept, _producer_name(link, names))


def _leaves(link: Link, start: int = 0) -> Iterator[tuple[int, int, Link]]:
    """A concatenation's innermost parts, in order, as (offset in the readers' channels, size, link):
    each has one producer; nothing for a link without a concatenation."""
    for offset, size, part in link.parts:
        if part.parts:
            yield from _leaves(part, start + offset)
        else:
            yield start + offset, size, part


def _identity(link: Link) -> Any:
    """What makes a link's channels: its producer, or the producers of a concatenation's parts."""
    return id(link.producer) if not link.parts else tuple(id(part.producer) for _, _, part in _leaves(link))


def _producer_name(link: Link, names: dict[int, str]) -> str | None:
    if not link.parts:
        return names.get(id(link.producer))
    return " + ".join(names.get(id(part.producer), "?") for _, _, part in _leaves(link))


def _order(link: Link, readers: Sequence[torch.Tensor], n: int, m: int, seed: int) -> torch.Tensor:
    """The readers' input-channel order: one search, or one per part of a concatenation (its producers
    can only reorder their own channels), put together."""
    if not link.parts:
        return find_permutation(readers, n, m, seed=seed)
    pieces = [
        offset + find_permutation([w[:, offset : offset + size] for w in readers], n, m, seed=seed)
        for offset, size, _ in _leaves(link)
    ]
    return torch.cat(pieces)


def _consumers(link: Link) -> list[torch.Tensor]:
    """The weights whose input channels ``link`` carries: the layer it was found from and its siblings."""
    return [link.consumer, *link.siblings]  # type: ignore[list-item]


def _apply(link: Link, order: torch.Tensor) -> None:
    """Reorder the readers' input channels and the producer's outputs (weight, bias, BatchNorm) by ``order``."""
    with torch.no_grad():
        for weight in _consumers(link):
            weight.copy_(weight[:, order])
        _reorder_producers(link, order)


def _reorder_producers(link: Link, order: torch.Tensor) -> None:
    for t in (link.producer, link.bias, *link.norms):
        if t is not None:
            t.copy_(t[order])
    for offset, size, part in link.parts:  # each part's order, in its own channel numbers
        _reorder_producers(part, order[offset : offset + size] - offset)
