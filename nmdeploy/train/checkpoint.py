"""Epoch checkpoints that make an interrupted fine-tune resume to the same weights.

A checkpoint holds everything the next epoch depends on: model (masks included, they are
parametrization buffers), optimizer, LR schedule, sparsifier, the global torch RNG, the
epoch reached and the metrics so far. It is written to a temporary file and renamed, so a
crash mid-write leaves the previous checkpoint intact; it is read with ``weights_only=True``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from nmdeploy import schemas
from nmdeploy._atomic import write_atomic
from nmdeploy.errors import InputError

__all__ = ["load_training_state", "save_training_state", "SCHEMA"]

SCHEMA = schemas.TRAIN


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` (plus the schema tag) to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"schema": SCHEMA, **state}, buffer)
    write_atomic(path, buffer.getvalue())


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_state` (never unpickles code)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable nmdeploy training checkpoint ({type(exc).__name__}); delete it to start over"
        ) from None
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise InputError(f"{path} is not an nmdeploy training checkpoint ({SCHEMA}); delete it or pick another folder")
    return state
