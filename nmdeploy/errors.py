"""Every exception (and warning) nmdeploy raises, for anything a user can fix.

Every message is one line that names the offending value, the rule it breaks and the fix.
The CLI prints that line (exit code ``exit_code``) instead of a traceback unless ``--debug``
is given. Errors that carry structure beyond their text (the setting a :class:`ConfigError`
is about, the resume point of a :class:`TrainingInterrupted`, the problem and the fix of an
:class:`EngineUnavailable`) keep it in attributes, so no caller ever edits or searches the
message text.

This module is copied into the TensorRT target bundle, so it needs only the standard library.
"""

from __future__ import annotations

import signal

__all__ = [
    "NMDeployError",
    "ConfigError",
    "PatternError",
    "LayerSelectionError",
    "SparsityStateError",
    "MissingDependencyError",
    "EngineUnavailable",
    "InputError",
    "ExportError",
    "QuantError",
    "EngineBuildError",
    "OutputError",
    "TrainingInterrupted",
    "Terminated",
    "NotAcceleratedWarning",
    "describe",
    "first_line",
]


class NMDeployError(Exception):
    """Base class: a problem in the user's input or environment, not a bug in nmdeploy."""

    exit_code = 1  # what the CLI exits with


class ConfigError(NMDeployError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    An error about one setting of a config section knows where that setting lives:
    ``section`` (``"sparsity"``) and ``detail``, the message after ``"section."``
    (``"pattern: pattern '3:2' is invalid: ..."``), in which ``{section}`` stands for the
    section wherever the detail names another of its keys; ``plural`` when it names several.
    A recipe re-words it with :meth:`in_recipe`, which puts its own section name (the
    training settings serve both ``dense`` and ``finetune``) and ``recipe key`` in front.
    ``original`` is the error of the check behind it, worded for callers that take the
    setting as a plain argument rather than as a config field.
    """

    def __init__(
        self,
        message: str,
        *,
        section: str | None = None,
        detail: str | None = None,
        plural: bool = False,
        original: NMDeployError | None = None,
    ) -> None:
        super().__init__(message)
        self.section = section
        self.detail = detail
        self.plural = plural
        self.original = original

    @classmethod
    def setting(
        cls, section: str, detail: str, *, plural: bool = False, original: NMDeployError | None = None
    ) -> ConfigError:
        """The error about ``section.<detail>``; its message is ``"{section}.{detail}"``."""
        return cls(_render(section, detail), section=section, detail=detail, plural=plural, original=original)

    def in_recipe(self, section: str) -> ConfigError:
        """The same error worded for a recipe: ``recipe key SECTION.DETAIL`` (``recipe keys`` for several)."""
        if self.detail is None:
            return self
        return type(self)(
            f"recipe key{'s' if self.plural else ''} {_render(section, self.detail)}",
            section=section,
            detail=self.detail,
            plural=self.plural,
            original=self.original,
        )


def _render(section: str, detail: str) -> str:
    return f"{section}.{detail.replace('{section}', section)}"


class PatternError(ConfigError):
    """An N:M pattern is malformed, or a tensor cannot be grouped by it."""


class LayerSelectionError(ConfigError):
    """No layer of the model can be sparsified with the requested settings."""


class SparsityStateError(NMDeployError, RuntimeError):
    """An operation does not fit the model's current sparsity state (e.g. folding mid-schedule)."""


class MissingDependencyError(NMDeployError, ImportError):
    """An optional dependency (e.g. tensorrt) is not importable here."""


class EngineUnavailable(MissingDependencyError):
    """TensorRT or a GPU it can use is missing here (the CLI exits 3 and writes a target bundle).

    ``problem`` says what is missing, ``fix`` how to get it; the message is both, joined by ``;``.
    """

    exit_code = 3

    def __init__(self, problem: str, fix: str = "") -> None:
        super().__init__(f"{problem}; {fix}" if fix else problem)
        self.problem = problem
        self.fix = fix


class InputError(NMDeployError):
    """A file the user gave cannot be read as what it should be (exit code 2 on the CLI)."""

    exit_code = 2


class ExportError(NMDeployError):
    """ONNX export failed or the exported model does not match the PyTorch model."""


class QuantError(NMDeployError):
    """INT8 quantisation failed, or its result breaks TensorRT's Q/DQ rules or the N:M layout."""


class EngineBuildError(NMDeployError):
    """TensorRT refused the ONNX or the build failed."""


class OutputError(NMDeployError):
    """An output cannot be written: it already exists (without ``--force``), or its folder is
    unwritable, read-only or full. Nothing is left at the output path."""


class TrainingInterrupted(NMDeployError):
    """SIGINT/SIGTERM (or Ctrl-C) during training; the checkpoint holds the point reached.

    ``exit_code`` is 128 + the signal number: 130 for SIGINT, 143 for SIGTERM. ``stopped``
    says where training stopped and what was saved; the message adds how to resume, and a
    command line replaces that with the exact command (:meth:`resume_with`).
    """

    exit_code = 130
    resumable = True  # the same command resumes it

    def __init__(self, stopped: str, signum: int = signal.SIGINT) -> None:
        super().__init__(f"{stopped}: run the same command again to resume")
        self.stopped = stopped
        self.exit_code = 128 + int(signum)

    def resume_with(self, command: str) -> str:
        """The message naming ``command`` as the way to resume."""
        return f"{self.stopped}: resume with: {command}"


class Terminated(BaseException):
    """SIGTERM outside training, raised by the command line's handler: it unwinds like Ctrl-C's
    ``KeyboardInterrupt``, so the atomic writers remove their temporary files on the way out."""


class NotAcceleratedWarning(UserWarning):
    """The chosen N:M pattern does not imply 2:4, so sparse tensor cores cannot run it."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``exc``'s message, at most ``limit`` characters; its type's name when it has none.

    What a one-line error quotes of an exception raised by a library or by the user's own code.
    """
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (text or type(exc).__name__)[:limit]


def describe(exc: BaseException, limit: int = 200) -> str:
    """``"ValueError: no such bucket"``: an exception's type and the first line of its message (the type alone when empty)."""
    text = first_line(exc, limit)
    return type(exc).__name__ if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"
