"""Parallel-data loaders and their validation messages."""

from __future__ import annotations

import json

import pytest

from layer_analysis.probe.data import corpus_from_columns, load_parallel
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.languages import canonical


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_default_data_is_parallel_in_the_papers_languages():
    corpus = load_parallel("default")
    assert len(corpus.languages) >= 10
    for code in ["eng_Latn", "arb_Arab", "ell_Grek", "hin_Deva", "tur_Latn", "vie_Latn", "zho_Hans"]:
        assert code in corpus.languages
    lengths = {len(side.sentences) for side in corpus.sides.values()}
    assert len(lengths) == 1 and lengths.pop() >= 120
    english = corpus.sides["eng_Latn"].sentences
    assert len(set(english)) == len(english)


def test_language_spellings():
    assert {canonical(x) for x in ["en", "eng", "eng_Latn", "English", "ENGLISH"]} == {"eng_Latn"}
    assert canonical("cmn") == canonical("zh") == "zho_Hans"
    with pytest.raises(DataError, match="unknown language 'klingon'"):
        canonical("klingon")


def test_flores_style_directory_ignores_readmes(tmp_path):
    write(tmp_path / "eng_Latn.devtest", ["one", "two"])
    write(tmp_path / "deu_Latn.devtest", ["eins", "zwei"])
    write(tmp_path / "README.md", ["not data"])
    corpus = load_parallel(str(tmp_path))
    assert corpus.languages == ["deu_Latn", "eng_Latn"]
    assert corpus.pairs() == [("eng_Latn", "deu_Latn")]


def test_pair_files_keep_english_per_pair(tmp_path):
    write(tmp_path / "tatoeba.deu-eng.deu", ["Hallo", "Ja"])
    write(tmp_path / "tatoeba.deu-eng.eng", ["Hello", "Yes"])
    write(tmp_path / "tatoeba.fra-eng.fra", ["Bonjour"])
    write(tmp_path / "tatoeba.fra-eng.eng", ["Good morning"])
    corpus = load_parallel(str(tmp_path))
    assert set(corpus.sides) == {"deu_Latn", "fra_Latn", "eng_Latn@deu_Latn-eng_Latn",
                                 "eng_Latn@fra_Latn-eng_Latn"}
    assert sorted(corpus.pairs()) == [("eng_Latn@deu_Latn-eng_Latn", "deu_Latn"),
                                      ("eng_Latn@fra_Latn-eng_Latn", "fra_Latn")]
    assert corpus.pairs(pivot=None) == [("deu_Latn", "eng_Latn@deu_Latn-eng_Latn"),
                                        ("fra_Latn", "eng_Latn@fra_Latn-eng_Latn")]


def test_tsv_and_jsonl(tmp_path):
    tsv = write(tmp_path / "p.tsv", ["en\tfr", "a cat\tun chat", "a dog\tun chien"])
    assert load_parallel(str(tsv)).sides["fra_Latn"].sentences == ("un chat", "un chien")
    jsonl = write(tmp_path / "p.jsonl", [json.dumps({"en": "a cat", "es": "un gato"}),
                                         json.dumps({"en": "a dog", "es": "un perro"})])
    assert load_parallel(str(jsonl)).sides["spa_Latn"].sentences == ("un gato", "un perro")
    corpus = corpus_from_columns({"sentence_eng_Latn": ["x"], "sentence_deu_Latn": ["y"],
                                  "id": ["1"]}, "hub")
    assert corpus.languages == ["eng_Latn", "deu_Latn"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"eng_Latn.txt": b"one\ntwo\n", "deu_Latn.txt": b"eins\n"},
         r"eng_Latn.txt has 2 lines but .*deu_Latn.txt has 1"),
        ({"eng_Latn.txt": b"one\n\nthree\n", "deu_Latn.txt": b"a\nb\nc\n"},
         r"eng_Latn.txt, line 2: empty line"),
        ({"eng_Latn.txt": b"one\ntw\xff\n", "deu_Latn.txt": b"a\nb\n"},
         r"eng_Latn.txt, line 2: not valid UTF-8 \(byte 0xff at column 3\)"),
        ({"eng_Latn.txt": b"one\n", "xyz.txt": b"a\n"}, r"unknown language 'xyz' \(file .*xyz.txt\)"),
    ],
)
def test_bad_directories(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_parallel(str(tmp_path))


def test_bad_tsv_and_jsonl_lines(tmp_path):
    with pytest.raises(DataError, match=r"p.tsv, line 3: 1 fields, the header has 2"):
        load_parallel(str(write(tmp_path / "p.tsv", ["en\tde", "a\tb", "c"])))
    with pytest.raises(DataError, match=r"p.jsonl, line 2: not valid JSON"):
        load_parallel(str(write(tmp_path / "p.jsonl", ['{"en": "a", "de": "b"}', "{oops"])))


def test_one_language_twice_is_an_error_in_every_format(tmp_path):
    with pytest.raises(DataError, match="more than one column for eng_Latn"):
        load_parallel(str(write(tmp_path / "p.tsv", ["en\teng\tde", "a\tb\tc"])))
    with pytest.raises(DataError, match="line 1: keys en, eng, de name one language twice"):
        load_parallel(str(write(tmp_path / "p.jsonl", [json.dumps({"en": "a", "eng": "b",
                                                                   "de": "c"})])))
    with pytest.raises(DataError, match="more than one column for deu_Latn"):
        corpus_from_columns({"sentence_deu_Latn": ["x"], "de": ["y"], "en": ["z"]}, "hub")
    (tmp_path / "d").mkdir()
    for name in ("en.txt", "eng_Latn.txt"):
        (tmp_path / "d" / name).write_text("a\n")
    with pytest.raises(DataError, match="are both eng_Latn"):
        load_parallel(str(tmp_path / "d"))


def test_selection_errors():
    corpus = load_parallel("default")
    with pytest.raises(DataError, match="has no jpn_Jpan"):
        corpus.select(["en", "ja"])
    with pytest.raises(DataError, match="selection is empty"):
        corpus.select([])
    with pytest.raises(DataError, match="no data set, directory or file named"):
        load_parallel("no-such-thing")


def test_shared_flores_and_tatoeba_load(shared_data):
    flores = load_parallel("flores-devtest")
    assert len(flores.languages) == 15 and len(flores.sides["eng_Latn"].sentences) == 1012
    tatoeba = load_parallel("tatoeba")
    assert len(tatoeba.sides["swh_Latn"].sentences) == 390
    assert ("eng_Latn@swh_Latn-eng_Latn", "swh_Latn") in tatoeba.pairs()
