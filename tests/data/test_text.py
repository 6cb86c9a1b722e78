"""Text files: records read and checked line by line, tokenised per batch with the model folder's tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from nmdeploy.data import open_data
from nmdeploy.data.config import DataConfig
from nmdeploy.data.loader import read_chunks, read_items
from nmdeploy.errors import InputError

pytest.importorskip("transformers")

from tests.hf_models import write_jsonl  # noqa: E402


@pytest.fixture
def config(hf_text) -> DataConfig:
    return DataConfig(tokenizer=str(hf_text["model"]), max_length=8)


def test_a_batch_is_padded_to_its_longest_text_and_cut_at_max_length(tmp_path, config):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"text": "red"}, {"text": "red apple"}, {"text": " ".join(["sky"] * 20)}],
    )
    data = open_data(str(path), "train", config)
    assert data.names == ("input_ids", "attention_mask", "token_type_ids") and len(data) == 3
    short = data.read_batch([0, 1])
    assert short.inputs["input_ids"].shape == (2, 4)  # [CLS] red apple [SEP]
    assert short.inputs["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert short.inputs["input_ids"][0, 3] == 0  # [PAD]
    long = data.read_batch([2])
    assert long.inputs["input_ids"].shape == (1, 8)  # truncated to max_length
    assert short.labels is None


def test_csv_with_pairs_and_labels(tmp_path, config):
    path = tmp_path / "t.csv"
    path.write_text('text,text_pair,label\nred apple,blue sky,0\n"green, leaf",grass,2\n')
    data = open_data(str(path), "train", config)
    assert data.known_labels().tolist() == [0, 2]
    batch = data.read_batch([0])
    assert batch.inputs["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1]]  # [CLS] red apple [SEP] blue sky [SEP]


def test_batches_read_together_are_padded_to_the_longest_of_all(hf_text, config):
    data = open_data(str(hf_text["train"]), "train", config)
    chunks = list(read_chunks(data, 4))
    assert len({c.inputs["input_ids"].shape[1] for c in chunks}) > 1  # each batch its own length
    whole = read_items(data, np.arange(len(data)), 0)
    assert whole.inputs["input_ids"].shape == (240, 8)
    for start, chunk in zip(range(0, 240, 4), chunks):
        width = chunk.inputs["input_ids"].shape[1]
        np.testing.assert_array_equal(whole.inputs["input_ids"][start : start + 4, :width], chunk.inputs["input_ids"])
        assert not whole.inputs["attention_mask"][start : start + 4, width:].any()


def test_a_plugin_may_return_texts(monkeypatch, tmp_path, config):
    (tmp_path / "mytexts.py").write_text(
        "def load(split):\n    return {'text': ['red apple', 'blue'], 'label': [0, 1]}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = open_data("mytexts:load", "train", config)
    assert len(data) == 2 and data.known_labels().tolist() == [0, 1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("t.csv", "sentence\nred\n", "t.csv has no 'text' column (its header is sentence)"),
        ("t.jsonl", '{"text": "red"}\nnot json\n', "t.jsonl line 2 is not JSON"),
        ("t.jsonl", '{"text": "red"}\n{"text": 3}\n', "t.jsonl line 2 has no 'text' string"),
        ("t.jsonl", '{"text": "a", "label": 0}\n{"text": "b", "label": 1.5}\n', "t.jsonl line 2 has label 1.5, not an"),
        ("t.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', "t.jsonl line 2: some records have a label"),
        ("t.jsonl", "\n", "t.jsonl holds no texts"),
    ],
)
def test_bad_text_files_are_one_line(tmp_path, monkeypatch, config, name, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as info:
        open_data(name, "train", config)
    assert str(info.value).startswith(message)


def test_text_needs_a_tokenizer(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "red"}])
    with pytest.raises(InputError, match="is text and needs a tokenizer: use an hf:PATH model, or set data.tokenizer"):
        open_data(str(path), "train", DataConfig())


def test_max_length_must_be_positive():
    from nmdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="data.max_length = 0 is invalid: use 1 or more tokens"):
        DataConfig(max_length=0)


def test_a_stream_of_records_is_tokenised_per_batch(monkeypatch, tmp_path, config, hf_text):
    from nmdeploy.data.loader import head, read_chunks
    from nmdeploy.data.source import Stream
    from nmdeploy.data.streams import read_stream

    (tmp_path / "mystream.py").write_text(
        "import torch\n"
        "class Records(torch.utils.data.IterableDataset):\n"
        "    def __iter__(self):\n"
        "        for i in range(10):\n"
        "            yield {'text': ' '.join(['red'] * (i + 1)), 'label': i % 3}\n"
        "def load(split):\n    return Records()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    data = open_data("mystream:load", "train", config)
    assert isinstance(data, Stream) and data.names == ("input_ids", "attention_mask", "token_type_ids")
    chunks = list(read_chunks(data, 4))
    assert [c.inputs["input_ids"].shape for c in chunks] == [(4, 6), (4, 8), (2, 8)]  # each batch its longest
    assert [c.labels.tolist() for c in chunks] == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0]]
    whole = read_stream(data, None)
    assert (
        whole.inputs["input_ids"].shape == (10, 8) and whole.inputs["attention_mask"][0].tolist() == [1] * 3 + [0] * 5
    )
    assert head(data, 3, "data").inputs["input_ids"].shape[0] == 3
