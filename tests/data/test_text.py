from pathlib import Path

import numpy as np
import pytest

from modelshrink.data import DataConfig, Tokenizer, load_task, read_text_csv, split_indices
from modelshrink.data.synthetic import synthetic_texts
from modelshrink.errors import DataError


def test_tokenizer_pads_truncates_and_maps_oov() -> None:
    tok = Tokenizer(vocab_size=5, max_len=4).fit(["a a a b b c", "a b"])
    assert tok.vocab == ("a", "b", "c")  # by frequency; ids 2, 3, 4
    x = tok.encode(["b a", "zzz", "c b a b a c"])
    assert x.tolist() == [
        [0, 0, 3, 2],  # pre-padded
        [0, 0, 0, 1],  # unknown word → OOV id 1
        [2, 3, 2, 4],  # pre-truncated: the last 4 tokens kept
    ]


def test_tokenizer_vocab_size_counts_pad_and_oov() -> None:
    tok = Tokenizer(vocab_size=4, max_len=3).fit(["x y z w", "x y"])
    assert len(tok.vocab) == 2
    assert tok.encode(["z"]).max() == 1  # z fell outside the 2-word vocabulary


def test_tokenizer_lowercases_and_drops_punctuation() -> None:
    tok = Tokenizer(vocab_size=10, max_len=3).fit(["Happy, HAPPY day!"])
    assert tok.vocab == ("happy", "day")


def test_tokenizer_round_trips_through_dict() -> None:
    tok = Tokenizer(vocab_size=10, max_len=5).fit(["one two three"])
    again = Tokenizer.from_dict(tok.to_dict())
    assert again == tok
    assert (again.encode(["two one"]) == tok.encode(["two one"])).all()


def test_tokenizer_fit_on_train_only(tmp_path: Path) -> None:
    texts, labels = synthetic_texts(200)
    texts = texts + ["secretword " * 3] * 10
    labels = labels + ["joy"] * 10
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in zip(texts, labels, strict=True)))
    cfg = DataConfig(task="csv", path=str(csv), vocab_size=100, max_len=8)
    data = load_task(cfg)
    train, _, _ = split_indices(labels, cfg.split, cfg.split_seed)
    train_words = {w for i in train for w in texts[i].split()}
    vocab = set(data.preprocessing["tokenizer"]["vocab"])
    assert vocab <= train_words  # no word seen only outside the training split


def test_split_is_deterministic_and_70_15_15() -> None:
    labels = ["a", "b"] * 500
    a = split_indices(labels, seed=42)
    b = split_indices(labels, seed=42)
    c = split_indices(labels, seed=7)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not (a[0] == c[0]).all()
    assert [len(s) for s in a] == [700, 150, 150]
    assert len(set(np.concatenate(a))) == 1000  # disjoint and complete


def test_stratified_split_keeps_class_shares() -> None:
    labels = ["a"] * 900 + ["b"] * 100
    _, _, test = split_indices(labels, stratify=True)
    assert sum(labels[i] == "b" for i in test) == 15


def test_label_mapping_is_sorted_names(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    texts, labels = synthetic_texts(100)
    csv.write_text("label,text,extra\n" + "\n".join(f"{lab},{t},x" for t, lab in zip(texts, labels, strict=True)))
    data = load_task(DataConfig(task="csv", path=str(csv)))
    assert data.labels == ["anger", "fear", "joy"]
    all_y = np.concatenate([data.y_train, data.y_val, data.y_test])
    assert sorted(set(all_y.tolist())) == [0, 1, 2]


def test_empty_rows_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nhello,joy\n,joy\nsad day,\nbye,anger\n")
    texts, labels = read_text_csv(csv)
    assert texts == ["hello", "bye"] and labels == ["joy", "anger"]
    assert "dropped 2 of 4 rows" in caplog.text


def test_latin1_fallback(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_bytes("text,label\ncafé crème,joy\n".encode("latin-1"))
    texts, _ = read_text_csv(csv)
    assert texts == ["café crème"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "looks binary"),
        (b"sentence,emotion\nhi,joy\n", "its columns are 'sentence', 'emotion'"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    csv = tmp_path / "d.csv"
    if content is not None:
        csv.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text_csv(csv)


def test_one_class_only() -> None:
    with pytest.raises(DataError, match="1 class .*'joy'.* at least 2"):
        split_indices(["joy"] * 50)


def test_too_few_rows() -> None:
    with pytest.raises(DataError, match="3 rows are too few.*3/0/0 rows"):
        split_indices(["a", "b", "a"])
