"""Calibration sets: the draw's maths, byte-reproducible files, manifests, definitions."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmdeploy.data import ArrayData
from nmdeploy.errors import ConfigError, InputError
from nmdeploy.quant.calibset import (
    draw_indices,
    load_calibration_set,
    make_calibration_set,
    read_definition,
    write_calibration_set,
)


@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=200),
    fraction=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_balanced_draw_is_distinct_reproducible_and_as_even_as_the_classes_allow(labels, fraction, seed):
    labels = np.array(labels)
    count = max(1, int(len(labels) * fraction))
    index = draw_indices(count, len(labels), labels, seed)
    assert index.shape == (count,) and len(set(index.tolist())) == count
    assert index.min() >= 0 and index.max() < len(labels)
    assert np.array_equal(index, draw_indices(count, len(labels), labels, seed))
    classes, available = np.unique(labels, return_counts=True)
    quota = np.full(len(classes), count // len(classes))
    quota[: count % len(classes)] += 1
    got = np.array([np.sum(labels[index] == c) for c in classes])
    # every class gets its quota or all it has; what a short class leaves is filled from the others
    assert np.all(got >= np.minimum(quota, available))
    if np.all(available >= quota):
        assert np.array_equal(got, quota)


@given(total=st.integers(1, 300), seed=st.integers(0, 1000), data=st.data())
def test_unlabelled_draw_is_uniform_without_replacement(total, seed, data):
    count = data.draw(st.integers(1, total))
    index = draw_indices(count, total, None, seed)
    assert sorted(set(index.tolist())) == sorted(index.tolist()) and len(index) == count


def test_draw_rejects_bad_counts():
    with pytest.raises(
        ConfigError, match=r"^calibration count 0 is invalid: give a positive number of samples, e.g. -n 512$"
    ):
        draw_indices(0, 10, None, 0)
    with pytest.raises(InputError, match="asked for 11 calibration samples but the source has only 10; lower -n"):
        draw_indices(11, 10, None, 0)


def _source(n: int = 60) -> ArrayData:
    rng = np.random.default_rng(1)
    return ArrayData(
        {"x": rng.standard_normal((n, 3, 4, 4), dtype=np.float32)}, np.arange(n) % 3, "toy", "train", "none"
    )


def test_set_is_reproducible_from_its_seed_byte_for_byte(tmp_path):
    paths = []
    for folder in ("a", "b"):
        subset, fields = make_calibration_set(_source(), 30, seed=7)
        manifest = write_calibration_set(tmp_path / folder / "c.npz", subset, fields)
        paths.append(tmp_path / folder / "c.npz")
    blobs = [p.read_bytes() for p in paths]
    assert blobs[0] == blobs[1]
    assert hashlib.sha256(blobs[0]).hexdigest() == manifest.sha256
    assert manifest.per_class == {"0": 10, "1": 10, "2": 10}
    other, fields = make_calibration_set(_source(), 30, seed=8)
    assert not np.array_equal(other.inputs["x"], subset.inputs["x"])
    data, loaded = load_calibration_set(paths[0])
    assert loaded == manifest
    assert np.array_equal(data.inputs["x"], subset.inputs["x"]) and np.array_equal(data.labels, subset.labels)
    assert json.loads(paths[0].with_suffix(".json").read_text())["schema"] == "nmdeploy.calibration/1"
    with np.load(paths[0]) as npz:  # an ordinary .npz for numpy users
        assert sorted(npz.files) == ["x", "y"]


def test_a_set_that_no_longer_matches_its_manifest_is_refused(tmp_path):
    subset, fields = make_calibration_set(_source(), 12, seed=0)
    write_calibration_set(tmp_path / "c.npz", subset, fields)
    other, fields2 = make_calibration_set(_source(), 12, seed=1)
    from nmdeploy.quant.calibset import _npz_bytes

    (tmp_path / "c.npz").write_bytes(_npz_bytes({"x": other.inputs["x"], "y": other.labels}))
    with pytest.raises(InputError, match=r"c.npz does not match its manifest \(sha256 .*\); rebuild it"):
        load_calibration_set(tmp_path / "c.npz")


def test_write_needs_npz_suffix_and_leaves_no_temp_files(tmp_path):
    subset, fields = make_calibration_set(_source(), 6, seed=0)
    with pytest.raises(ConfigError, match="should end in .npz"):
        write_calibration_set(tmp_path / "c.bin", subset, fields)
    write_calibration_set(tmp_path / "c.npz", subset, fields)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.npz"]


def test_definitions(tmp_path):
    good = tmp_path / "set.yaml"
    good.write_text("data: fashion-mnist:train\ncount: 64\nseed: 3\n")
    d = read_definition(good)
    assert (d.data, d.count, d.seed, d.output) == ("fashion-mnist:train", 64, 3, str(tmp_path / "set.npz"))
    (tmp_path / "bad.yaml").write_text("data: x.npz\ncuont: 3\n")
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) 'cuont' in .*bad.yaml; allowed: data, count, seed, output"
    ):
        read_definition(tmp_path / "bad.yaml")
    (tmp_path / "type.yaml").write_text("data: x.npz\ncount: many\n")
    with pytest.raises(ConfigError, match="count should be int, got 'many'"):
        read_definition(tmp_path / "type.yaml")


def test_committed_fashion_mnist_set_matches_its_manifest_and_definition():
    from nmdeploy.examples.fashion_mnist import CALIBRATION, CALIBRATION_SET

    definition = read_definition(CALIBRATION)
    assert definition.output == str(CALIBRATION_SET)  # the definition names the set shipped beside it
    data, manifest = load_calibration_set(definition.output)
    assert manifest is not None and (manifest.source, manifest.split, manifest.seed, manifest.count) == (
        "fashion-mnist",
        "train",
        0,
        512,
    )
    assert data.inputs["x"].shape == (512, 1, 28, 28) and data.inputs["x"].dtype == np.float32
    assert np.bincount(data.labels).tolist() == [52, 52, 51, 51, 51, 51, 51, 51, 51, 51]


def test_at_most_gives_a_small_source_whole_and_exact_counts_stay_strict():
    source = _source(60)
    subset, fields = make_calibration_set(source, 512, seed=0, at_most=True)  # a build's default on small data
    assert (len(subset), fields["count"]) == (60, 60)
    assert fields["per_class"] == {"0": 20, "1": 20, "2": 20}
    assert sorted(subset.inputs["x"][:, 0, 0, 0].tolist()) == sorted(source.inputs["x"][:, 0, 0, 0].tolist())
    assert len(make_calibration_set(source, 30, seed=0, at_most=True)[0]) == 30  # at most: never more
    with pytest.raises(InputError, match="asked for 61 calibration samples but the source has only 60; lower -n"):
        make_calibration_set(source, 61, seed=0)


def test_at_most_reads_a_short_stream_to_its_end():
    import torch

    from nmdeploy.data import Stream

    class Counting(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(7):
                yield {"ids": np.full(3, i, np.int64)}, i % 2

    stream = Stream(Counting(), "count", "train", ("ids",))
    subset, _ = make_calibration_set(stream, 512, at_most=True)
    assert subset.inputs["ids"][:, 0].tolist() == list(range(7))
    with pytest.raises(InputError, match="asked for 8 calibration samples but the stream 'count' has only 7; lower -n"):
        make_calibration_set(stream, 8)
