"""Strict readers: no format guessed, one message naming the file and line, line breaks only,
conflicting duplicates refused, special files and oversized files refused before reading."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from layer_analysis.probe import readers
from layer_analysis.probe.data import load_parallel, read_lines
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.mining_run import read_gold, read_sentences
from layer_analysis.train.records import Report, read_alpaca
from layer_analysis.train.sweep import read_points


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------ BUCC and gold pairs


def test_bucc_with_one_malformed_line_is_an_error_not_plain_text(tmp_path):
    # today: the file silently became plain text, its ids inside the sentences
    path = write(tmp_path / "de.tsv", "d1\tHallo Welt\nd2 Guten Tag\nd3\tTschüss\n")
    with pytest.raises(DataError, match=r"de\.tsv, line 2: .*BUCC"):
        read_sentences(path)
    good = write(tmp_path / "ok.tsv", "d1\tHallo Welt\n d2 \tGuten Tag\n")
    assert read_sentences(good) == (["d1", "d2"], ["Hallo Welt", "Guten Tag"])


def test_plain_file_with_a_tab_later_and_explicit_formats(tmp_path):
    path = write(tmp_path / "x.txt", "Hello world\nd2\tGood day\n")
    with pytest.raises(DataError, match=r"x\.txt, line 2: .*tab"):
        read_sentences(path)
    assert read_sentences(path, "plain") == (["1", "2"], ["Hello world", "d2\tGood day"])
    with pytest.raises(DataError, match=r"x\.txt, line 1: .*ID<TAB>sentence"):
        read_sentences(path, "bucc")
    assert read_sentences(write(tmp_path / "p.txt", "a\nb\n")) == (["1", "2"], ["a", "b"])
    with pytest.raises(DataError, match="format"):
        read_sentences(path, "csv")


def test_bucc_duplicate_and_empty_ids_name_their_lines(tmp_path):
    path = write(tmp_path / "de.tsv", "d1\ta\nd2\tb\nd1\tc\n")
    with pytest.raises(DataError, match=r"de\.tsv, line 3: id 'd1' repeats line 1"):
        read_sentences(path)
    with pytest.raises(DataError, match=r"line 2: .*ID<TAB>sentence"):
        read_sentences(write(tmp_path / "e.tsv", "d1\ta\n\tb\n"))


def test_gold_errors_name_the_gold_file_and_line(tmp_path):
    source = write(tmp_path / "de.tsv", "d1\tHallo\nd2\tTag\n")
    target = write(tmp_path / "en.tsv", "e1\tHello\ne2\tDay\n")
    s_ids, _ = read_sentences(source)
    t_ids, _ = read_sentences(target)
    gold = write(tmp_path / "gold.tsv", "d1\te1\nd1\te1\nd2\te2\n")
    assert read_gold(gold, s_ids, t_ids, source, target) == {(0, 0), (1, 1)}  # repeats harmless
    unknown = write(tmp_path / "g2.tsv", "d1\te1\nd2\te9\n")
    with pytest.raises(DataError, match=r"g2\.tsv, line 2: target id 'e9' is not in .*en\.tsv"):
        read_gold(unknown, s_ids, t_ids, source, target)
    swapped = write(tmp_path / "g3.tsv", "e1\td1\n")
    with pytest.raises(DataError, match=r"g3\.tsv, line 1: source id 'e1' is not in .*de\.tsv"):
        read_gold(swapped, s_ids, t_ids, source, target)
    with pytest.raises(DataError, match=r"g4\.tsv, line 1: expected SOURCE_ID<TAB>TARGET_ID"):
        read_gold(write(tmp_path / "g4.tsv", "d1 e1\n"), s_ids, t_ids, source, target)
    conflict = write(tmp_path / "g5.tsv", "d1\te1\nd2\te2\nd1\te2\n")  # d1: e1 and e2
    with pytest.raises(DataError, match=r"g5\.tsv, line 3: source id 'd1' is paired with 'e2' "
                                        r"here and with 'e1' on line 1"):
        read_gold(conflict, s_ids, t_ids, source, target)


def test_a_malformed_sentence_file_is_blamed_not_the_gold_file(tmp_path):
    # today: the source silently became plain (ids 1, 2) and the error blamed gold.tsv, line 1
    from layer_analysis.probe.mining_run import MiningRequest, execute_mining

    request = MiningRequest(
        model=str(tmp_path / "no-model"), output=tmp_path / "runs",
        source=write(tmp_path / "de.tsv", "d1\tHallo\nd2 Tag\n"),
        target=write(tmp_path / "en.tsv", "e1\tHello\ne2\tDay\n"),
        gold=write(tmp_path / "gold.tsv", "d1\te1\nd2\te2\n"),
        source_language="de", target_language="en")
    with pytest.raises(DataError, match=r"de\.tsv, line 2: expected BUCC's ID<TAB>sentence"):
        execute_mining(request, ["mine"])
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- line breaks and JSONL


SEPARATORS = ["\u2028", "\u2029", "\x85"]


@pytest.mark.parametrize("separator", SEPARATORS)
def test_jsonl_with_unicode_separators_inside_strings_reads(tmp_path, separator):
    # today: read_alpaca split on them (str.splitlines) and called the file invalid JSON
    record = {"instruction": f"a{separator}b", "output": f"c{separator}d"}
    path = write(tmp_path / "a.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    [read] = read_alpaca(path, "x", Report())
    assert read.instruction == f"a{separator}b" and read.output == f"c{separator}d"
    pair = write(tmp_path / "p.jsonl", json.dumps({"en": f"x{separator}y", "de": "z"},
                                                  ensure_ascii=False) + "\n")
    assert load_parallel(str(pair)).sides["eng_Latn"].sentences == (f"x{separator}y",)


def test_text_lines_split_on_line_breaks_only(tmp_path):
    path = write(tmp_path / "t.txt", "a\x0bb\r\nc\x0cd\u2028e\nf\x85g\n")
    assert read_lines(path) == ["a\x0bb", "c\x0cd\u2028e", "f\x85g"]


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(DataError, match=r"a\.jsonl, line 2: not valid JSON"):
        read_alpaca(path, "x", Report())
    raw = write(tmp_path / "c.jsonl", '{"instruction": "a\x0bb", "output": "c"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl, line 1: not valid JSON \(Invalid control"):
        read_alpaca(raw, "x", Report())
    twice = write(tmp_path / "p.jsonl", '{"en": "a", "de": "b"}\n{"en": "c", "de": "d", "en": "e"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl, line 2: key 'en' appears twice"):
        load_parallel(str(twice))  # json.loads alone keeps the last 'en' silently
    with pytest.raises(DataError, match=r"e\.json: key 'output' appears twice"):
        read_alpaca(write(tmp_path / "e.json", '[{"instruction": "a", "output": "b", '
                          '"output": "c"}]'), "x", Report())
    array = write(tmp_path / "d.json", '[{"instruction": "a",\n "output": }]')
    with pytest.raises(DataError, match=r"d\.json, line 2: not valid JSON"):
        read_alpaca(array, "x", Report())


# ---------------------------------------------------------------------------- score tables


def sweep_csv(tmp_path: Path, rows: list[str], name: str = "sweep.csv") -> Path:
    return write(tmp_path / name, "language,pairs,similarity,chrf++\n" + "\n".join(rows) + "\n")


def test_fit_law_table_with_conflicting_similarity_is_an_error(tmp_path):
    # today: one of the two values was used silently
    path = sweep_csv(tmp_path, ["el,0,0.3,10", "el,100,0.4,12", "hi,0,0.6,20"])
    with pytest.raises(DataError, match=r"sweep\.csv, line 3: similarity of ell_Grek is 0\.4, "
                                        r"line 2 says 0\.3"):
        read_points(path, "chrf++")


def test_fit_law_table_with_a_non_numeric_or_non_finite_score_is_one_message(tmp_path):
    # today: a traceback inside the fit
    path = sweep_csv(tmp_path, ["el,0,0.3,10", "hi,0,0.6,x"])
    with pytest.raises(DataError, match=r"sweep\.csv, line 3: chrf\+\+ is 'x', not a number"):
        read_points(path, "chrf++")
    path = sweep_csv(tmp_path, ["el,0,0.3,10", "hi,0,inf,20"])
    with pytest.raises(DataError, match=r"line 3: similarity is 'inf', not a finite number"):
        read_points(path, "chrf++")
    path = sweep_csv(tmp_path, ["el,-5,0.3,10"])
    with pytest.raises(DataError, match=r"line 2: pairs is '-5', not a whole number"):
        read_points(path, "chrf++")


def test_fit_law_table_duplicate_points(tmp_path):
    path = sweep_csv(tmp_path, ["el,0,0.3,10", "el,100,0.3,12", "el,100,0.3,13"])
    with pytest.raises(DataError, match=r"line 4: ell_Grek at 100 pairs has chrf\+\+ 13\.0, "
                                        r"line 3 says 12\.0"):
        read_points(path, "chrf++")
    same = sweep_csv(tmp_path, ["el,0,0.3,10", "el,100,0.3,12", "el,100,0.3,12"], "same.csv")
    assert len(read_points(same, "chrf++")) == 2  # an exact repeat counts once
    # a sweep capped by the data: two requested sizes that trained on the same pairs
    capped = write(tmp_path / "capped.csv", "language,pairs,requested,similarity,chrf++\n"
                   "el,0,0,0.3,10\nel,90,100,0.3,12\nel,90,200,0.3,12.5\n")
    assert list(read_points(capped, "chrf++")["chrf++"]) == [10, 12, 12.5]


def test_fit_law_table_reads_a_good_table_and_keeps_missing_scores_out(tmp_path):
    path = sweep_csv(tmp_path, ["el,0,0.3,10", "el,100,0.3,", "hi,0,0.6,20", "zh,0,,5"])
    points = read_points(path, "chrf++")
    assert list(points.language) == ["ell_Grek", "hin_Deva"]
    assert list(points.pairs) == [0, 0] and list(points["chrf++"]) == [10.0, 20.0]
    with pytest.raises(DataError, match=r"lacks the column\(s\) xquad_f1"):
        read_points(path, "xquad_f1")
    empty = sweep_csv(tmp_path, ["el,0,0.3,", "hi,0,,20"], "empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv: no row has both a chrf\+\+ score and a sim"):
        read_points(empty, "chrf++")


# ------------------------------------------------------------------- special files and sizes


def in_thread(function, *args):
    """The exception ``function(*args)`` raises, from a thread given 10 s (a hang fails)."""
    outcome: list = []

    def target():
        try:
            function(*args)
            outcome.append(None)
        except Exception as exc:  # handed back to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome, f"{function.__name__}{args} did not return (hung or read without end)"
    return outcome[0]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_dev_zero_is_refused_before_reading():
    error = in_thread(read_sentences, Path("/dev/zero"))
    assert isinstance(error, DataError) and "/dev/zero is a character device" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "sentences.txt"
    os.mkfifo(fifo)
    for function in (read_lines, read_sentences, readers.read_jsonl):
        error = in_thread(function, fifo)
        assert isinstance(error, DataError) and "is a FIFO (named pipe)" in str(error)
    directory = tmp_path / "fifo-data"
    directory.mkdir()
    write(directory / "en.txt", "a\n")
    os.mkfifo(directory / "de.txt")
    error = in_thread(load_parallel, str(directory))
    assert isinstance(error, DataError) and "de.txt is a FIFO" in str(error)


def test_directories_sockets_and_missing_files_are_refused(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        read_lines(tmp_path)
    with pytest.raises(DataError, match="no such file"):
        read_sentences(tmp_path / "nope.txt")
    with socket.socket(socket.AF_UNIX) as server:
        path = tmp_path / "s"
        try:
            server.bind(str(path))
        except OSError:
            pytest.skip("no unix sockets here")
        with pytest.raises(DataError, match="is a socket"):
            read_lines(path)


def test_a_file_over_the_size_cap_is_refused_naming_cap_and_size(tmp_path, monkeypatch):
    path = write(tmp_path / "big.txt", "a sentence\n" * 20)
    monkeypatch.setattr(readers, "MAX_TEXT_BYTES", 100)
    with pytest.raises(DataError, match=r"big\.txt is 220 bytes, over the 100 bytes cap"):
        read_lines(path)
    with pytest.raises(DataError, match="over the 100 bytes cap"):
        read_points(path, "chrf++")
    monkeypatch.setattr(readers, "MAX_TEXT_BYTES", 1000)
    assert len(read_lines(path)) == 20


def test_data_sources_and_word_lists_refuse_special_files(tmp_path):
    from layer_analysis.probe.latent import load_words

    if Path("/dev/zero").exists():  # today: 'unsupported file type', as if a misnamed file
        error = in_thread(load_parallel, "/dev/zero")
        assert isinstance(error, DataError) and "is a character device" in str(error)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pairs.tsv")
        error = in_thread(load_parallel, str(tmp_path / "pairs.tsv"))
        assert isinstance(error, DataError) and "pairs.tsv is a FIFO" in str(error)
        os.mkfifo(tmp_path / "words.tsv")  # lens --words: today it waited for a writer
        error = in_thread(load_words, tmp_path / "words.tsv")
        assert isinstance(error, DataError) and "words.tsv is a FIFO" in str(error)
    words = write(tmp_path / "w.tsv", "eng_Latn\tdeu_Latn\nwa\u2028ter\tWasser\n")
    assert list(load_words(words).words) == ["wa\u2028ter"]
