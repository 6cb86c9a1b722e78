"""``SparsityConfig``: how a model is made N:M sparse, one frozen dataclass.

It is what :func:`nmdeploy.sparsify` takes whole (``config=``) and what a recipe's
``sparsity`` section is. The method options (``decay``, ``tau``, ``rescale``) are flat fields;
each method declares which of them it takes (its ``config_class``), and
:meth:`SparsityConfig.method_options` builds that method's options from them. Importing this
module needs no torch; validating a config imports the method that it names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["SparsityConfig", "pattern_decay", "quarter_end"]

_OPTIONS = ("decay", "tau", "rescale")  # the method options a config carries, as flat fields


@dataclass(frozen=True)
class SparsityConfig:
    """The N:M pattern, the method with its options, MaxQ's schedule and the layer selection."""

    SECTION: ClassVar[str] = "sparsity"

    pattern: str = setting("2:4", "N:M pattern (`2:4`, `1:4`, `1:16`, ...).")
    method: str = setting("maxq", "`maxq`, `srste`, `ste` or `asp` (the library also has `dense`, the no-op baseline).")
    schedule: str = setting("linear", "MaxQ's incremental schedule: `linear`, `cubic`, `cos`, `exp`.")
    start_epoch: int = setting(0, "Fine-tune epoch where the share of dense blocks starts to fall (MaxQ).")
    end_epoch: int | None = setting(
        30,
        "Fine-tune epoch from which every block is N:M; must be below `finetune.epochs`. null = a quarter of "
        "`finetune.epochs`, rounded (not before `start_epoch`): the ramp the Fashion-MNIST sweeps measured best.",
    )
    decay: float | None = setting(
        2e-4,
        "λ: SR decay on pruned weights (`maxq`, `srste`); null = by pattern, as measured for the build: 2e-3 where "
        "the pattern keeps at least half the weights (2:4), 5e-3 where it keeps fewer (1:4, 1:16).",
    )
    tau: float = setting(1e-2, "τ: MaxQ's sigmoid temperature.")
    rescale: bool = setting(
        False,
        "MaxQ: before training, scale each output row so that the multipliers keep its norm; "
        "for pretrained networks without BatchNorm after their layers (transformers).",
    )
    permute: bool = setting(
        False,
        "Before the first mask, reorder each sparse layer's input channels (and the outputs of the layer "
        "that makes them) so that the N:M mask keeps more weight magnitude; the model computes the same "
        "function. Layers that read the same channels share one order; a concatenation gets one per part. "
        "Layers whose channels cannot be carried back (residual adds, inputs also read by other ops) keep "
        "their order; the report says why.",
    )
    include: tuple[str, ...] | None = setting(None, "Globs on module names to sparsify (none: every eligible layer).")
    exclude: str | tuple[str, ...] = setting(
        "auto", "`auto` keeps the first and last weighted layer dense; a list of globs (may hold `auto`); `[]` = none."
    )

    def __post_init__(self) -> None:
        from nmdeploy.sparsity.methods.registry import get_method, method_names
        from nmdeploy.sparsity.pattern import parse_pattern
        from nmdeploy.sparsity.schedule import check_epochs, check_schedule

        check_types(self, self.SECTION)
        for key, check in (("pattern", parse_pattern), ("method", get_method), ("schedule", check_schedule)):
            _checked(key, check, getattr(self, key))
        try:  # a null end (the build's: a quarter of the fine-tune) is resolved by the recipe
            check_epochs(self.start_epoch, self.start_epoch if self.end_epoch is None else self.end_epoch)
        except ConfigError as exc:
            raise ConfigError.setting(
                self.SECTION,
                f"start_epoch = {self.start_epoch}, end_epoch = {self.end_epoch}: need 0 <= start_epoch <= end_epoch",
                plural=True,
                original=exc,
            ) from None
        for key in _OPTIONS:  # every method that takes the option checks its value
            if key == "decay" and self.decay is None:
                continue  # by pattern: resolved in method_options
            for name in method_names():
                spec = get_method(name)
                if key in spec.option_names:
                    _checked(key, spec.make_config, {key: getattr(self, key)})
        if self.permute and not get_method(self.method).makes_mask:
            raise ConfigError.setting(
                self.SECTION,
                f"permute = true does nothing with method = {self.method!r}, which makes no mask; "
                "set permute: false or use a method that masks (asp, ste, srste, maxq)",
            )
        if isinstance(self.exclude, str) and self.exclude != "auto":
            raise ConfigError.setting(
                self.SECTION, f"exclude = {self.exclude!r}: use 'auto' or a list of globs ([] = none)"
            )

    def with_end_for(self, epochs: int) -> SparsityConfig:
        """This config with a null ``end_epoch`` resolved for a fine-tune of ``epochs`` (:func:`quarter_end`)."""
        if self.end_epoch is not None:
            return self
        return dataclasses.replace(self, end_epoch=quarter_end(self.start_epoch, epochs))

    def method_options(self) -> Any:
        """The options of :attr:`method` (its ``config_class``), from this config's fields."""
        from nmdeploy.sparsity.methods.registry import get_method

        spec = get_method(self.method)
        values = {key: getattr(self, key) for key in spec.option_names}
        if "decay" in values and values["decay"] is None:
            values["decay"] = pattern_decay(self.pattern)
        return spec.make_config(values)


def quarter_end(start_epoch: int, epochs: int) -> int:
    """The schedule's end when ``sparsity.end_epoch`` is null: a quarter of the fine-tune, rounded half up
    (6 epochs -> 2, 12 -> 3, 2 -> 1, 1 -> 0), never before ``start_epoch``. The MaxQ paper ends its ramp at
    25 % of the budget, and the sweeps' early ramp (benchmarks/RESULTS.md, ablations, distillation)
    beat the late one at every pattern; a fixed epoch would break a shorter fine-tune."""
    return max(start_epoch, (epochs + 2) // 4)


def pattern_decay(pattern: str) -> float:
    """The SR decay the build uses when ``sparsity.decay`` is null: chosen by the Fashion-MNIST sweeps
    (benchmarks/RESULTS.md, distillation): λ 2e-3 scored best at 2:4 (92.42 vs 92.25 % for 5e-3), 5e-3 at
    1:16 (91.55 vs 91.16 %); a pattern that keeps fewer than half the weights needs the stronger pull."""
    from nmdeploy.sparsity.pattern import parse_pattern

    nm = parse_pattern(pattern)
    return 2e-3 if 2 * nm.n >= nm.m else 5e-3


def _checked(key: str, check: Any, value: Any) -> None:
    try:
        check(value)
    except ConfigError as exc:
        raise type(exc).setting(SparsityConfig.SECTION, f"{key}: {exc}", original=exc) from None
