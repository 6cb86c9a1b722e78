"""The exceptions nmdeploy raises for anything a user can fix.

Every message is one line that names the offending value, the rule it breaks and the fix.
The CLI prints that line (exit code 1) instead of a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

__all__ = [
    "NMDeployError",
    "ConfigError",
    "PatternError",
    "LayerSelectionError",
    "SparsityStateError",
    "MissingDependencyError",
    "InputError",
    "ExportError",
    "QuantError",
    "OutputError",
]


class NMDeployError(Exception):
    """Base class: a problem in the user's input or environment, not a bug in nmdeploy."""

    exit_code = 1  # what the CLI exits with


class ConfigError(NMDeployError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class PatternError(ConfigError):
    """An N:M pattern is malformed, or a tensor cannot be grouped by it."""


class LayerSelectionError(ConfigError):
    """No layer of the model can be sparsified with the requested settings."""


class SparsityStateError(NMDeployError, RuntimeError):
    """An operation does not fit the model's current sparsity state (e.g. folding mid-schedule)."""


class MissingDependencyError(NMDeployError, ImportError):
    """An optional dependency (e.g. tensorrt) is not importable here."""


class InputError(NMDeployError):
    """A file the user gave cannot be read as what it should be (exit code 2 on the CLI)."""

    exit_code = 2


class ExportError(NMDeployError):
    """ONNX export failed or the exported model does not match the PyTorch model."""


class QuantError(NMDeployError):
    """INT8 quantisation failed, or its result breaks TensorRT's Q/DQ rules or the N:M layout."""


class OutputError(NMDeployError):
    """An output cannot be written: it already exists (without ``--force``), or its folder is
    unwritable, read-only or full. Nothing is left at the output path."""
