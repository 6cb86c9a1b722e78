"""Nothing unsafe is loaded: checkpoints, recipes, data files and specs never run code the user did not name as code."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nmdeploy.data import load_data
from nmdeploy.errors import ConfigError, InputError
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.pipeline.recipe import load_recipe
from nmdeploy.sparsity import sparsify
from nmdeploy.train.checkpoint import load_training_state

PACKAGE = Path(__file__).resolve().parents[2] / "nmdeploy"


class _Payload:
    """Unpickling this would create the marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    torch.save(content, path)  # plain pickle under the hood: exactly what weights_only refuses
    return path


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = _pickled(tmp_path, "evil.pt", {"model": {"w": torch.zeros(1)}, "extra": _Payload(marker)})
    with pytest.raises(
        InputError,
        match=r"evil.pt holds Python objects besides tensors and was refused \(loading them could run code\); save plain tensors",
    ):
        load_checkpoint(build_model("fashion-resnet"), path)
    with pytest.raises(InputError, match=r"evil.pt is not a readable nmdeploy training checkpoint \(UnpicklingError\)"):
        load_training_state(path)
    assert not marker.exists()


def test_a_recipe_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"output: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml is not valid YAML at line 1, column 9: "):
        load_recipe(recipe)
    assert not marker.exists()


def test_an_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([_Payload(tmp_path / "ran")], dtype=object))
    with pytest.raises(InputError, match="evil.npz"):
        load_data(str(path))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("spec", ["os", "subprocess.run", "json"])
def test_a_spec_without_module_colon_callable_imports_nothing(spec):
    with pytest.raises(InputError, match=f"data spec {spec!r} is neither a file"):
        load_data(spec)
    with pytest.raises(
        InputError, match=f"model spec {spec!r} is not 'package.module:callable', hf:PATH nor a built-in"
    ):
        build_model(spec)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("pattern", 24, "pattern = 24, expected str"),
        ("layers", "blocks.0.conv1", "layers = 'blocks.0.conv1', expected list"),
        ("start_epoch", True, "start_epoch = True, expected int"),
        ("method", None, "method = None, expected str"),
    ],
)
def test_a_checkpoints_sparsity_metadata_is_validated_before_use(tmp_path, key, value, expected):
    model = build_model("fashion-resnet")
    sp = sparsify(model, "2:4", "srste")
    settings = sp.state_dict() | {key: value}
    path = _pickled(tmp_path, "bad.pt", {"model": model.state_dict(), "sparsity": settings})
    with pytest.raises(InputError, match=f"bad.pt: its 'sparsity' entry has {expected}; save "):
        load_checkpoint(build_model("fashion-resnet"), path)


def test_a_checkpoints_sparsity_metadata_must_fit_the_model(tmp_path):
    model = build_model("fashion-resnet")
    sp = sparsify(model, "2:4", "srste")
    settings = sp.state_dict() | {"method": "nosuch"}
    path = _pickled(tmp_path, "bad.pt", {"model": model.state_dict(), "sparsity": settings})
    with pytest.raises(
        InputError,
        match=r"bad.pt: its 'sparsity' entry does not fit this model \(unknown sparsity method 'nosuch'; choose one of: maxq",
    ):
        load_checkpoint(build_model("fashion-resnet"), path)


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_the_source_loads_only_safely():
    """An audit that fails when someone adds an unsafe loader: every torch.load has weights_only=True, and so on."""
    found = {"torch.load": 0, "np.load": 0, "yaml.load": 0}
    for file in PACKAGE.rglob("*.py"):
        tree = ast.parse(file.read_text())
        where = file.relative_to(PACKAGE.parent)
        for call in _calls(tree, "torch.load"):
            found["torch.load"] += 1
            assert any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in call.keywords), (
                f"{where}:{call.lineno}"
            )
        for call in _calls(tree, "np.load"):
            found["np.load"] += 1
            assert any(k.arg == "allow_pickle" and ast.unparse(k.value) == "False" for k in call.keywords), (
                f"{where}:{call.lineno}"
            )
        for call in _calls(tree, "yaml.load"):
            found["yaml.load"] += 1
            assert ast.unparse(call).endswith("Loader=yaml_loader())"), (
                f"{where}:{call.lineno}"
            )  # a SafeLoader subclass
        for name in ("pickle.load", "pickle.loads", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"):
            assert not list(_calls(tree, name)), f"{where} calls {name}"
    assert found == {"torch.load": 2, "np.load": 1, "yaml.load": 1}  # the audit saw the loaders it is about
