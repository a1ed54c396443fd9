"""Tokenization controls by hand on a word-level tokenizer; the confound notice; the MEXA
export read back; both written by every ``run``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from layer_analysis.probe.data import ParallelCorpus, Side
from layer_analysis.probe.errors import DataError, StoreError
from layer_analysis.probe.mexa_export import export_mexa, layer_scores, read_mexa
from layer_analysis.probe.tokenization import confound, script_of, tokenization_table


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "le": 3, "chat": 4, "<0x41>": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_tokenization_statistics_by_hand():
    corpus = ParallelCorpus("toy", {
        "eng_Latn": Side("eng_Latn", "eng_Latn", "all", ("the cat", "the cat")),
        "fra_Latn": Side("fra_Latn", "fra_Latn", "all", ("le chat <0x41>", "le cat xyz"))})
    table = tokenization_table(word_tokenizer(), "toy", corpus).set_index("language")
    fr, en = table.loc["fra_Latn"], table.loc["eng_Latn"]
    assert (fr.tokens, en.tokens) == (6, 4)
    assert fr.fertility == pytest.approx(6 / 4) and en.fertility == 1.0
    assert fr.tokens_per_sentence == 3.0
    assert fr.chars_per_token == pytest.approx((14 + 10) / 6)
    assert fr.byte_fallback_share == pytest.approx(2 / 6)  # <0x41> and the unknown 'xyz'
    assert en.byte_fallback_share == 0.0
    assert fr.type_overlap_english == pytest.approx(1 / 5)  # {le, chat, <0x41>, cat, [UNK]}
    assert (fr.script, script_of("zho_Hans@x"), script_of("xx")) == ("Latn", "Hans", "unknown")


def test_byte_level_pieces_of_split_characters_count_as_fallback(tokenizer):
    corpus = ParallelCorpus("toy", {
        "eng_Latn": Side("eng_Latn", "eng_Latn", "all", ("the house",)),
        "zho_Hans": Side("zho_Hans", "zho_Hans", "all", ("龘",))})  # unseen: bytes only
    row = tokenization_table(tokenizer, "tiny", corpus).set_index("language").loc["zho_Hans"]
    assert row.tokens == 3 and row.byte_fallback_share == 1.0


def test_confound_says_so_only_when_fertility_tracks_alignment():
    languages = ["a_x", "b_x", "c_x", "d_x"]
    tokenization = pd.DataFrame({"language": ["eng_Latn", *languages],
                                 "fertility": [1.0, 1.1, 1.5, 2.0, 3.0]})
    falling = dict(zip(languages, [0.9, 0.7, 0.5, 0.2], strict=True))
    assert "Spearman -1.00" in confound(falling, tokenization)
    assert confound(dict(zip(languages, [0.5, 0.9, 0.2, 0.7], strict=True)), tokenization) is None
    assert confound({"a_x": 0.1, "b_x": 0.2}, tokenization) is None  # fewer than 3


def toy_table() -> pd.DataFrame:
    rows = []
    for layer in (0, 1, 2):
        for lang, base in (("deu_Latn", 0.5), ("ace_Arab", 0.2)):
            for a, b, shift in (("eng_Latn", lang, 0.0), (lang, "eng_Latn", 0.1)):
                rows.append({"layer": layer, "source": a, "target": b, "metric": "p@1",
                             "normalisation": "centered", "value": base + layer / 10 + shift})
            rows.append({"layer": layer, "source": "eng_Latn", "target": lang, "metric": "mexa",
                         "normalisation": "raw", "value": base / 2 + layer / 100})
    return pd.DataFrame(rows)


def test_mexa_export_reads_back_to_the_same_numbers(tmp_path):
    table = toy_table()
    out = export_mexa(tmp_path, table, "mean")
    assert sorted(p.name for p in (out / "strict").iterdir()) == ["ace_Arab.json", "deu_Latn.json"]
    raw = json.loads((out / "centered_p1" / "deu_Latn.json").read_text())
    assert list(raw) == ["0", "1", "2"]  # MEXA's own keys: layer numbers as strings
    assert raw["1"] == pytest.approx(0.5 + 0.1 + 0.05)  # both directions averaged
    strict = read_mexa(out / "strict")
    assert strict["ace_Arab"] == pytest.approx({0: 0.1, 1: 0.11, 2: 0.12})
    assert read_mexa(out / "centered_p1") == layer_scores(table, "p@1", "centered")
    assert "pooling: mean" in (out / "about.txt").read_text()
    assert export_mexa(tmp_path, table, "mean") == out  # an earlier export is replaced
    precious = tmp_path / "runs"
    (precious / "a-run").mkdir(parents=True)
    (precious / "a-run" / "manifest.json").write_text("{}")
    for target in (precious, precious / "a-run" / "manifest.json"):
        with pytest.raises(StoreError, match="no earlier MEXA export; it is not replaced"):
            export_mexa(tmp_path, table, "mean", target)
    assert (precious / "a-run" / "manifest.json").read_text() == "{}"
    (out / "strict" / "deu_Latn.json").write_text('{"0": NaN}')
    with pytest.raises(DataError, match=r"deu_Latn\.json: non-finite"):
        read_mexa(out / "strict")


def test_every_run_writes_tokenization_and_the_mexa_export(tiny_llama_dir, tmp_path):
    from layer_analysis.probe.analysis import AnalysisConfig
    from layer_analysis.probe.pipeline import RunRequest, execute

    outcome = execute(RunRequest(model=str(tiny_llama_dir), languages=["en", "de", "zh"],
                                 limit=12, device="cpu", output=tmp_path, name="r",
                                 analysis=AnalysisConfig(bootstrap=20, null_permutations=5),
                                 projection="none", static=False, progress_bars=False), ["t"])
    run = outcome.results.directory
    tokenization = pd.read_csv(run / "tokenization.csv")
    assert sorted(tokenization.language) == ["deu_Latn", "eng_Latn", "zho_Hans"]
    assert (tokenization.sentences == 12).all()
    table = outcome.results.table
    assert read_mexa(run / "mexa_export" / "centered_p1") == layer_scores(table, "p@1",
                                                                          "centered")
    zh = table[(table.metric == "mexa") & (table.normalisation == "raw")
               & (table.target == "zho_Hans") & (table.layer == 2)].value.item()
    assert read_mexa(run / "mexa_export" / "strict")["zho_Hans"][2] == pytest.approx(zh)
