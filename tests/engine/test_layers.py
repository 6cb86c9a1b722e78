"""The layer report: build-log sparsity lines and inspector JSON (10.x and 11.x) joined with verify.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmdeploy.engine.layers import SparsityLog, format_rows, join_layers, parse_build_log, parse_inspector

SAMPLES = Path(__file__).with_name("samples")
VERIFY = {
    "pattern": "2:4",
    "layers": [
        {
            "node": "node_Conv_138",
            "weight": "stem.0.weight",
            "shape": [16, 1, 3, 3],
            "required": False,
            "ok": True,
        },
        {
            "node": "node_Conv_140",
            "weight": "blocks.0.conv1.weight",
            "shape": [16, 16, 3, 3],
            "required": True,
            "ok": True,
            "likely_to_pay": "no",
            "pay_reason": "16 channels is below 256: TensorRT usually keeps the dense kernel",
        },
        {
            "node": "node_Conv_152",
            "weight": "blocks.2.conv2.weight",
            "shape": [256, 256, 3, 3],
            "required": True,
            "ok": True,
            "likely_to_pay": "yes",
            "pay_reason": "256 in, 256 out: at least 256 channels each way",
        },
        {
            "node": "node_Conv_154",
            "weight": "blocks.2.shortcut.0.weight",
            "shape": [256, 128, 1, 1],
            "required": True,
            "ok": True,
        },
        {
            "node": "node_linear",
            "weight": "fc.weight",
            "shape": [10, 256],
            "required": True,
            "ok": False,
            "violations": 3,
        },
    ],
}
STATUSES = [
    "dense weights",
    "2:4 verified, eligible, not picked (dense faster, as the rule expected)",
    "2:4 verified, eligible, sparse kernel picked",
    "2:4 verified, not found in the engine (fused away or inside a Myelin region)",
    "NOT 2:4 (3 bad group(s))",
]


@pytest.mark.parametrize("name", ["build_trtexec.log", "build_api.log"])
def test_build_log_sparsity_lines(name):
    log = parse_build_log((SAMPLES / name).read_text().splitlines())
    assert log == SparsityLog(("node_Conv_140 + node_relu_1", "node_Conv_152"), ("node_Conv_152",))
    assert parse_build_log(["[I] [TRT] Engine built"]) == SparsityLog(None, None)
    assert parse_build_log(["(Sparsity) Layers eligible for sparse math: "]) == SparsityLog((), None)


@pytest.mark.parametrize(
    "schema, precisions", [("10x", ["FP32", "INT8", "INT8", "FP32"]), ("11x", ["FP32", "INT8", "FP16", "FP32"])]
)
def test_inspector_schemas(schema, precisions):
    found, layers = parse_inspector((SAMPLES / f"engine_info_{schema}.json").read_text())
    assert found == {"10x": "10.x", "11x": "11.x"}[schema]
    assert [layer.name for layer in layers] == [
        "node_Conv_138 + node_relu",
        "node_Conv_140 + node_relu_1",
        "node_Conv_152",
        "node_linear",
    ]
    assert [layer.precision for layer in layers] == precisions
    assert layers[1].onnx_nodes == ("node_DequantizeLinear_7", "node_Conv_140", "node_relu_1")
    assert [layer.has_sparse_weights for layer in layers] == [False, True, True, False]
    assert "sparse_conv" in layers[2].tactic and layers[2].layer_type == "CaskConvolution"


def test_names_only_verbosity_and_a_bare_layer_list():
    schema, layers = parse_inspector(
        '{"Layers": ["node_Conv_140 + node_relu_1", "node_linear"], "Bindings": ["x", "y"]}'
    )
    assert (
        schema == "10.x"
        and layers[0].onnx_nodes == ("node_Conv_140", "node_relu_1")
        and layers[0].has_sparse_weights is None
    )
    assert parse_inspector('[{"Name": "a"}]')[0] == "unknown"  # trtexec --exportLayerInfo may write a bare list


@pytest.mark.parametrize("schema", ["10x", "11x"])
def test_join_with_verify_reads_side_by_side(schema):
    _, layers = parse_inspector((SAMPLES / f"engine_info_{schema}.json").read_text())
    log = parse_build_log((SAMPLES / "build_api.log").read_text().splitlines())
    rows = join_layers(VERIFY, layers, log)
    assert [row.status for row in rows] == STATUSES
    assert [row.engine_layer for row in rows] == [
        "node_Conv_138 + node_relu",
        "node_Conv_140 + node_relu_1",
        "node_Conv_152",
        None,
        "node_linear",
    ]
    assert [(row.eligible, row.picked) for row in rows] == [
        (False, False),
        (True, False),
        (True, True),
        (None, None),
        (False, False),
    ]
    assert [row.likely_to_pay for row in rows] == ["", "no", "yes", "", ""]  # from verify.json; older ones lack it
    table = format_rows(rows)
    assert table.splitlines()[0].split() == ["weight", "engine", "layer", "precision", "likely", "to", "pay", "status"]
    assert "blocks.0.conv1.weight" in table and table.splitlines()[2].endswith(
        "no             2:4 verified, eligible, not picked (dense faster, as the rule expected)"
    )
    assert table.splitlines()[-1] == "likely-to-pay rule vs TensorRT's pick: 2 of 2 layer(s) agree"


def test_the_rule_is_scored_against_what_tensorrt_picked():
    from nmdeploy.engine.layers import LayerRow, rule_agreement

    def row(weight, likely, picked):
        return LayerRow("n", weight, (), True, "l", "INT8", "", True, picked, "", likely, "")

    rows = [
        row("a", "yes", True),
        row("b", "yes", False),
        row("c", "no", False),
        row("d", "maybe", True),
        row("e", "no", None),
    ]
    assert rule_agreement(rows) == (2, 3, ["b"])  # maybe and an unknown pick are not scored
    assert (
        format_rows(rows).splitlines()[-1] == "likely-to-pay rule vs TensorRT's pick: 2 of 3 layer(s) agree; wrong on b"
    )


def test_without_the_log_eligibility_comes_from_the_inspector():
    _, layers = parse_inspector((SAMPLES / "engine_info_10x.json").read_text())
    rows = join_layers(VERIFY, layers, SparsityLog(None, None))
    assert (
        rows[1].status == "2:4 verified, eligible, kernel choice unknown"
        and rows[1].eligible is True
        and rows[1].picked is None
    )
    _, bare = parse_inspector('{"Layers": ["node_Conv_140 + node_relu_1"]}')
    assert (
        join_layers(VERIFY, bare, SparsityLog(None, None))[1].status
        == "2:4 verified, eligibility unknown (the build log had no sparsity lines)"
    )
    assert join_layers(VERIFY, bare, SparsityLog((), ()))[1].status == "2:4 verified, not eligible"
