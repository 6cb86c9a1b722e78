"""Build a model from a spec and load a checkpoint into it (for the CLI)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmdeploy._hf import is_hf_spec
from nmdeploy._imports import call_target
from nmdeploy.errors import InputError, NMDeployError, describe

__all__ = ["BUILTIN_MODELS", "build_model", "check_fits", "load_checkpoint"]

# Built-in example names -> "module:callable" (the examples live in the source checkout).
BUILTIN_MODELS = {"fashion-resnet": "nmdeploy.examples.fashion_mnist.model:FashionResNet"}


def build_model(spec: str, hf_task: str | None = None, hf_config: dict | None = None) -> nn.Module:
    """``spec``: a built-in example name, ``hf:PATH`` (a local transformers folder, for ``hf_task``)
    or ``package.module:callable`` returning an nn.Module."""
    if is_hf_spec(spec):
        from nmdeploy.export.hf import load_hf_model

        return load_hf_model(spec, hf_task, overrides=hf_config)
    target = BUILTIN_MODELS.get(spec, spec)
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InputError(
            f"model spec {spec!r} is not 'package.module:callable', hf:PATH nor a built-in ({', '.join(BUILTIN_MODELS)})"
        )
    model = call_target(target, spec, "model")
    if not isinstance(model, nn.Module):
        raise InputError(f"model spec {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model``: a state_dict, ``{"model": ...}`` or ``{"model": ..., "sparsity": ...}``.

    A checkpoint saved mid-sparsification holds nmdeploy's mask buffers; its ``sparsity``
    entry (``Sparsifier.state_dict()``) says how to sparsify the fresh model so they fit.
    Loaded with ``weights_only=True``: a checkpoint can never run code.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); give a checkpoint saved with torch.save")
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"{path} holds Python objects besides tensors and was refused (loading them could run code); "
            "save plain tensors: torch.save({'model': model.state_dict()}, path)"
        ) from None
    except Exception as exc:
        raise InputError(f"{path} is not a loadable PyTorch checkpoint ({describe(exc, 120)})") from None
    state = data.get("model", data) if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} holds no state_dict; save model.state_dict() or {{'model': ..., 'sparsity': ...}}")
    sparse = any(".parametrizations." in key for key in state)
    if sparse:
        settings = data.get("sparsity") if isinstance(data, Mapping) else None
        if not isinstance(settings, Mapping):
            raise InputError(
                f"{path} holds nmdeploy masks but no 'sparsity' entry; save "
                "{'model': model.state_dict(), 'sparsity': sp.state_dict()}"
            )
        _check_sparsity_settings(path, settings)
        try:
            sp = _sparsify_like(model, settings)
            sp.load_state_dict(settings)
        except NMDeployError as exc:
            raise InputError(f"{path}: its 'sparsity' entry does not fit this model ({exc})") from None
    check_fits(model, state, path)
    model.load_state_dict(state)
    return model


def check_fits(model: nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """One line on how ``state`` differs from ``model``'s (torch's own message spans many lines)."""
    mine = model.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    resized = [k for k in mine if k in state and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or unexpected or resized:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]!r})")
        if resized:
            k = resized[0]
            parts.append(
                f"{len(resized)} of another shape (first {k!r}: {list(state[k].shape)} vs {list(mine[k].shape)})"
            )
        raise InputError(
            f"{path} does not fit model {type(model).__name__}: " + ", ".join(parts) + " tensors; "
            "give a checkpoint of this model (the same --model and settings)"
        )


# What a checkpoint's ``sparsity`` entry (Sparsifier.state_dict()) must hold, checked before any of it is used.
_SETTINGS = {
    "format": int,
    "pattern": str,
    "method": str,
    "schedule": str,
    "start_epoch": int,
    "end_epoch": int,
    "epoch": int,
    "layers": list,
    "options": dict,
}


def _check_sparsity_settings(path: Path, settings: Mapping[str, Any]) -> None:
    for key, kind in _SETTINGS.items():
        value = settings.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(
                f"{path}: its 'sparsity' entry has {key} = {value!r}, expected {kind.__name__}; "
                "save {'model': model.state_dict(), 'sparsity': sp.state_dict()} with nmdeploy"
            )
    if not all(isinstance(name, str) for name in settings["layers"]):
        raise InputError(f"{path}: its 'sparsity' entry lists layers that are not module names")


def _sparsify_like(model: nn.Module, settings: Mapping[str, Any]) -> Any:
    """Sparsify ``model`` so that exactly the checkpoint's layers carry masks."""
    from nmdeploy.sparsity import sparsify

    layers = list(settings.get("layers", []))
    return sparsify(
        model,
        pattern=settings["pattern"],
        method=settings["method"],
        schedule=settings["schedule"],
        start_epoch=settings["start_epoch"],
        end_epoch=settings["end_epoch"],
        include=[_escape(name) for name in layers] or None,
        exclude=(),
        options=settings.get("options") or None,
    )


def _escape(name: str) -> str:
    """A module name as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)
