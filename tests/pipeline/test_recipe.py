"""Recipes: defaults are the built-in example, overrides apply, every bad key is a one-line error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nmdeploy.config import parse_yaml
from nmdeploy.errors import ConfigError, InputError
from nmdeploy.pipeline.recipe import Recipe, dump_recipe, load_recipe, recipe_from_mapping, reference_rows
from nmdeploy.train import TrainConfig

RECIPE_DOC = Path(__file__).resolve().parents[2] / "docs" / "recipe.md"


def test_defaults_are_the_built_in_example():
    recipe = load_recipe()
    assert recipe == Recipe()
    assert (recipe.model.spec, recipe.data.train, recipe.data.val) == (
        "fashion-resnet",
        "fashion-mnist:train",
        "fashion-mnist:test",
    )
    assert (recipe.sparsity.method, recipe.sparsity.pattern, recipe.quantize.method) == ("maxq", "2:4", "minmax")
    # the ramp ends at a quarter of the fine-tune (6 epochs -> 2), so the last epochs train the final mask
    assert recipe.sparsity.end_epoch is None and recipe.sparsity.with_end_for(recipe.finetune.epochs).end_epoch == 2
    # λ by pattern: 2e-3 at the built-in 2:4, 5e-3 when the pattern is overridden to 1:16
    assert recipe.sparsity.decay is None and recipe.sparsity.method_options().decay == 2e-3
    sparser = load_recipe(None, ["sparsity.pattern=1:16", "sparsity.end_epoch=2"])
    assert sparser.sparsity.method_options().decay == 5e-3


def test_a_null_end_epoch_follows_the_fine_tune():
    from nmdeploy.sparsity.config import quarter_end

    assert [quarter_end(0, e) for e in (1, 2, 3, 4, 5, 6, 12, 30)] == [0, 1, 1, 1, 1, 2, 3, 8]
    assert quarter_end(4, 12) == 4  # never before start_epoch
    short = load_recipe(None, ["finetune.epochs=2"])  # a fixed end of 2 would refuse this fine-tune
    assert short.sparsity.with_end_for(2).end_epoch == 1
    assert load_recipe(None, ["finetune.epochs=1"]).sparsity.with_end_for(1).end_epoch == 0
    fixed = load_recipe(None, ["sparsity.end_epoch=3"])
    assert fixed.sparsity.with_end_for(6) is fixed.sparsity
    with pytest.raises(ConfigError) as err:
        load_recipe(None, ["sparsity.start_epoch=6"])
    assert str(err.value) == (
        "recipe key sparsity.start_epoch = 6 must be below finetune.epochs = 6, so that the last fine-tune epoch "
        "trains the final N:M mask"
    )


def test_dump_parses_back_to_the_same_recipe(tmp_path):
    recipe = load_recipe(None, ["finetune.epochs=5", "sparsity.include=[blocks.*]", "model.input_shape=[2, 1, 28, 28]"])
    text = dump_recipe(recipe)
    (tmp_path / "r.yaml").write_text(text)
    assert load_recipe(tmp_path / "r.yaml") == recipe
    assert "pattern: '2:4'" in text and "  include: [blocks.*]\n" in text


def test_a_file_then_set_overrides(tmp_path):
    (tmp_path / "r.yaml").write_text(
        "sparsity:\n  pattern: 1:4\n  method: srste\n  decay: 1e-4\nfinetune:\n  epochs: 6\noutput: out/x\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml", ["finetune.epochs=2", "sparsity.end_epoch=1", "device=cpu"])
    # YAML 1.2 numbers: 1:4 stays a string (PyYAML alone reads base-60 124), 1e-4 is a float
    assert (
        recipe.sparsity.pattern == "1:4" and recipe.sparsity.decay == 1e-4 and isinstance(recipe.sparsity.decay, float)
    )
    assert recipe.finetune == TrainConfig(epochs=2, lr=0.02) and recipe.output == "out/x" and recipe.device == "cpu"
    assert recipe.dense == Recipe().dense  # untouched sections keep the example's values


def test_yaml_loader_stays_safe():
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        parse_yaml("a: !!python/object/apply:os.system ['true']", "recipe x")


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"sparsty": {}},
            "unknown recipe section 'sparsty'; a recipe has: model, data, task, dense, sparsity, finetune, export, quantize, engine, serve, output, device",
        ),
        (
            {"sparsity": {"lambda": 1}},
            "unknown recipe key sparsity.lambda; sparsity has: pattern, method, schedule, start_epoch, end_epoch, decay, tau, rescale, permute, include, exclude",
        ),
        ({"finetune": {"epochs": "3"}}, "recipe key finetune.epochs = '3' has the wrong type: expected an integer"),
        ({"finetune": {"epochs": True}}, "recipe key finetune.epochs = True has the wrong type: expected an integer"),
        (
            {"model": {"input_shape": [1, "x"]}},
            "recipe key model.input_shape = [1, 'x'] has the wrong type: expected a list of integers",
        ),
        (
            {"sparsity": {"include": "blocks.*"}},
            "recipe key sparsity.include = 'blocks.*' has the wrong type: expected a list of strings or null",
        ),
        ({"dense": {"lr": -1}}, "recipe key dense.lr = -1.0 is invalid: a number >= 0"),
        (
            {"finetune": {"optimizer": "lamb"}},
            "recipe key finetune.optimizer = 'lamb' is invalid: use one of sgd, adamw",
        ),
        (
            {"sparsity": {"pattern": "3:2"}},
            'recipe key sparsity.pattern: pattern "3:2" is invalid: need 0 < n < m <= 32, e.g. "2:4"',
        ),
        (
            {"sparsity": {"method": "magic"}},
            "recipe key sparsity.method: unknown sparsity method 'magic'; choose one of: ",
        ),
        (
            {"sparsity": {"end_epoch": 6}},
            "recipe key sparsity.end_epoch = 6 must be below finetune.epochs = 6, so that the last fine-tune epoch trains the final N:M mask",
        ),
        (
            {"sparsity": {"exclude": "all"}},
            "recipe key sparsity.exclude = 'all': use 'auto' or a list of globs ([] = none)",
        ),
        (
            {"model": {"input_shape": [0, 1]}},
            "recipe key model.input_shape = [0, 1]: give [batch, ...] with every size >= 1, e.g. [1, 1, 28, 28]",
        ),
        ({"quantize": {"method": "kl"}}, "recipe key quantize.method = 'kl': use one of minmax, entropy, percentile"),
        (
            {"engine": {"opt_batch": 512}},
            "recipe keys engine.min_batch/opt_batch/max_batch = 1/512/256: need 1 <= min <= opt <= max",
        ),
        ({"output": 3}, "recipe key output = 3 has the wrong type: expected a non-empty string"),
        ([1, 2], "a recipe must be a mapping of sections, got list"),
        ({"data": "x.npz"}, "recipe section 'data' must be a mapping of keys, got str"),
    ],
)
def test_bad_recipes_name_the_key(values, message):
    with pytest.raises(ConfigError) as info:
        recipe_from_mapping(values)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("finetune.epochs", "--set 'finetune.epochs' is not KEY=VALUE; e.g. --set finetune.epochs=2"),
        ("sparsiti.method=maxq", "--set 'sparsiti.method=maxq': unknown recipe section 'sparsiti'"),
        ("finetune.lr=[", "--set 'finetune.lr=[' is not valid YAML at line 1, column 2"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as info:
        load_recipe(None, [override])
    assert str(info.value).startswith(message)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(
        InputError,
        match=r"cannot read recipe .*missing.yaml \(No such file or directory\); give the path of a YAML recipe",
    ):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("model:\n  spec: x\n   checkpoint: y\n")
    with pytest.raises(
        ConfigError,
        match=r"recipe .*bad.yaml is not valid YAML at line 3, column 14: mapping values are not allowed here",
    ):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_recipe(tmp_path / "empty.yaml") == Recipe()


def test_the_recipe_reference_documents_every_key_with_its_default():
    text = RECIPE_DOC.read_text()
    section = text.split("## Every key", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z0-9_.]+)` \| `([^`]*)` \|", section, re.M)}
    expected = {key: default for key, default, *_ in reference_rows()}
    assert rows == expected


def test_the_example_recipe_file_is_the_default():
    from nmdeploy.examples.fashion_mnist import RECIPE

    assert load_recipe(RECIPE) == Recipe()
