"""A short training run on the synthetic task: every method must learn from scratch."""

from __future__ import annotations

import pytest

from tests.sparsity.demo import run_demo


@pytest.mark.parametrize("method", ["maxq", "srste", "ste", "asp", "dense"])
def test_every_method_learns_the_synthetic_task(method):
    result = run_demo(method, "2:4", epochs=4, dense_epochs=0, seed=0)
    assert result.dense_accuracy < 0.2  # untrained: about chance (10 classes)
    assert result.sparse_accuracy > 0.85
    assert result.exact_nm
    sparse_rows = [r for r in result.report if r.eligible]
    assert [r.name for r in sparse_rows] == ["conv1.0", "conv2.0", "head.1"]
    if method != "dense":
        assert all(r.sparsity == 0.5 for r in sparse_rows)


def test_maxq_keeps_accuracy_after_dense_training():
    result = run_demo("maxq", "2:4", epochs=4, dense_epochs=3, seed=0)
    assert result.sparse_accuracy >= result.dense_accuracy - 0.02
