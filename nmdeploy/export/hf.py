"""``hf:PATH`` model specs: a local ``transformers`` folder as a model nmdeploy can train and export.

The model keeps its own class and module names (``bert.encoder.layer.0.attention.self.query``),
so sparsity globs and checkpoints read like the Hugging Face model. Only ``forward`` changes:
the loaded model's class is swapped for a subclass whose ``forward`` takes plain tensors,
positionally, named as the tokenizer or image processor names them (``input_ids``,
``attention_mask``, ``token_type_ids``; ``pixel_values``), and returns one tensor. Those
argument names become the ONNX input names, which is what Triton configs and ONNX Runtime
callers bind by.

Tasks (``model.hf_task``; default from ``config.json``'s ``architectures``):

* ``sequence-classification`` and ``image-classification``: the logits ``[batch, labels]``;
* ``feature-extraction``: one embedding per input. For text, the pooling of a
  sentence-transformers folder (``1_Pooling/config.json``: mean or CLS token, and L2
  normalisation when ``modules.json`` lists it); else the mean of the last hidden states
  over the attention mask. For images, the model's pooled output, flattened.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from nmdeploy._hf import HF_TASKS, folder_task, import_transformers, read_config, resolve_folder
from nmdeploy.errors import InputError

__all__ = ["TEXT_INPUTS", "load_hf_model", "model_inputs", "sample_inputs"]

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the argument order of every text model here
_AUTO = {
    "feature-extraction": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "image-classification": "AutoModelForImageClassification",
}


def _pooling(folder: Path) -> tuple[str, bool]:
    """(``mean`` | ``cls``, normalise) from a sentence-transformers folder; mean, unnormalised otherwise."""
    mode, normalize = "mean", False
    pooling = folder / "1_Pooling" / "config.json"
    if pooling.is_file():
        settings = json.loads(pooling.read_text(encoding="utf-8"))
        if settings.get("pooling_mode_cls_token"):
            mode = "cls"
    modules = folder / "modules.json"
    if modules.is_file():
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in json.loads(modules.read_text()))
    return mode, normalize


def _text_inputs(base: type) -> tuple[str, ...]:
    parameters = inspect.signature(base.forward).parameters
    return tuple(name for name in TEXT_INPUTS if name in parameters)


def _make_forward(base: type, task: str, image: bool, pooling: tuple[str, bool]) -> Any:
    """The ``forward`` of the wrapped class: plain tensors in, one tensor out."""
    if image:

        def forward(self: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
            out = base.forward(self, pixel_values=pixel_values, return_dict=True)
            if task != "feature-extraction":
                return out.logits
            pooled = getattr(out, "pooler_output", None)
            return (pooled if pooled is not None else out.last_hidden_state.mean(1)).flatten(1)

        return forward

    names = _text_inputs(base)
    mode, normalize = pooling

    def forward(
        self: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = base.forward(self, **{k: v for k, v in given.items() if v is not None and k in names}, return_dict=True)
        if task != "feature-extraction":
            return out.logits
        hidden = out.last_hidden_state
        if mode == "cls":
            pooled = hidden[:, 0]
        else:
            mask = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).unsqueeze(-1)
            mask = mask.to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    return forward


def sample_inputs(model: nn.Module, shape: tuple[int, ...] | None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A random sample batch for an ``hf:`` model: token ids (every token attended) of ``shape``
    ``[batch, tokens]`` (default 1x16), or images ``[batch, C, H, W]`` (default: the config's size)."""
    generator = torch.Generator().manual_seed(seed)
    names = model_inputs(model) or ()
    if names == ("pixel_values",):
        shape = shape or (1, *model.nm_image_shape)
        return (torch.randn(shape, generator=generator),)
    shape = shape or (1, 16)
    if len(shape) != 2:
        raise InputError(f"--input-shape {'x'.join(map(str, shape))}: a text model takes [batch, tokens], e.g. 1x128")
    vocab = int(getattr(model.config, "vocab_size", 1000))
    ids = torch.randint(min(1000, vocab - 1), vocab, shape, generator=generator)  # past the special tokens
    given = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return tuple(given[name] for name in names)


def model_inputs(model: nn.Module) -> tuple[str, ...] | None:
    """The input names an ``hf:`` model takes, in argument order (None for any other model)."""
    return getattr(model, "nm_inputs", None)


def load_hf_model(
    spec: str, task: str | None = None, key: str = "model.spec", overrides: dict[str, Any] | None = None
) -> nn.Module:
    """The model in the ``hf:PATH`` folder, for ``task`` (None: from its config), weights loaded offline;
    ``overrides`` replace ``config.json`` values (``model.hf_config``)."""
    folder = resolve_folder(spec, key)
    if task is not None and task not in HF_TASKS:
        raise InputError(f"model.hf_task = {task!r} is not one of {', '.join(HF_TASKS)}")
    task = task or folder_task(folder)
    config = read_config(folder)
    transformers = import_transformers()
    auto = getattr(transformers, _AUTO[task])
    try:
        unknown = sorted(set(overrides or {}) - set(config))
        if unknown and not hasattr(transformers.AutoConfig.for_model(config.get("model_type", "")), unknown[0]):
            raise InputError(
                f"model.hf_config sets {unknown[0]!r}, which {folder / 'config.json'} does not have; "
                "check the key (e.g. hidden_dropout_prob)"
            )
        model = auto.from_pretrained(str(folder), local_files_only=True, **(overrides or {}))
    except ValueError:  # "Unrecognized configuration class ... for this kind of AutoModel"
        kind = config.get("model_type", "?")
        raise InputError(
            f"model.hf_task = {task!r} cannot be served by {spec}: transformers has no {_AUTO[task]} for model_type "
            f"{kind!r}; set model.hf_task to what the model is ({', '.join(HF_TASKS)})"
        ) from None
    except Exception as exc:
        raise InputError(
            f"{key} = {spec!r} does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    base = type(model)
    image = "pixel_values" in inspect.signature(base.forward).parameters
    if not image and "input_ids" not in inspect.signature(base.forward).parameters:
        raise InputError(f"{spec}: {base.__name__} takes neither input_ids nor pixel_values; nmdeploy cannot feed it")
    wrapped = type(
        f"NM{base.__name__}",
        (base,),
        {
            "forward": _make_forward(base, task, image, _pooling(folder)),
            "nm_inputs": ("pixel_values",) if image else _text_inputs(base),
            "nm_outputs": ("logits",)
            if task != "feature-extraction"
            else ("pooler_output",)
            if image
            else ("sentence_embedding",),
            "nm_task": task,
            "nm_folder": str(folder),
            "nm_image_shape": _image_shape(config) if image else None,
            "__module__": __name__,
        },
    )
    model.__class__ = wrapped
    model.config.use_cache = False  # no past-key-values outputs in the exported graph
    return model.eval()


def _image_shape(config: dict[str, Any]) -> tuple[int, int, int]:
    size = config.get("image_size", 224)
    size = size if isinstance(size, int) else 224
    return (int(config.get("num_channels", 3)), size, size)
