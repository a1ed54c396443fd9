"""Mining in row blocks against dense score matrices, and against the analysis's own margin
retrieval; BUCC F1 by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.metrics import PairScorer, prepare, retrieval
from layer_analysis.probe.mining import Mined, mine, mining_f1, neighbourhoods, xsim_error


def planted(n: int, m: int, d: int = 32, noise: float = 0.6, seed: int = 0):
    """Sources; targets whose first n rows translate them (plus noise), the rest unrelated."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.cat([x + noise * torch.randn(n, d, generator=g), torch.randn(m - n, d, generator=g)])
    return x, y


def dense_margin(x, y, k=4):
    cos = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
    r_x = cos.topk(min(k, cos.shape[1]), dim=1).values.mean(1)
    r_y = cos.topk(min(k, cos.shape[0]), dim=0).values.mean(0)
    return cos / ((r_x[:, None] + r_y[None, :]) / 2), r_x, r_y


def test_blockwise_mining_equals_the_dense_matrix():
    x, y = planted(70, 90)
    scores, r_x, r_y = dense_margin(x, y)
    mined = mine(x, y, block_bytes=4 * 90 * 3 * 7)  # blocks of 7 rows
    torch.testing.assert_close(mined.r_src, r_x)
    torch.testing.assert_close(mined.r_tgt, r_y)
    assert torch.equal(mined.forward, scores.argmax(1))
    assert torch.equal(mined.backward, scores.argmax(0))
    torch.testing.assert_close(mined.forward_score, scores.max(1).values)
    torch.testing.assert_close(mined.backward_score, scores.max(0).values)
    r_src, r_tgt = neighbourhoods(F.normalize(x, dim=-1), F.normalize(y, dim=-1), 4, 4 * 90 * 3)
    torch.testing.assert_close(r_src, r_x)  # one row per block
    torch.testing.assert_close(r_tgt, r_y)


def test_xsim_is_the_analysis_s_margin_retrieval_error():
    x, y = planted(120, 120, noise=1.2)
    stats = PairScorer(prepare(x[None]), prepare(y[None]), ["margin", "raw"]).statistics()
    for name, margin in (("margin", True), ("raw", False)):
        p_at_1 = float(retrieval(stats.ranks[(name, "forward")])["p@1"].mean())
        assert xsim_error(x, y, margin=margin) == pytest.approx(1 - p_at_1)
    assert 0 < xsim_error(x, y) < 0.5  # noisy but mostly right


def test_mining_f1_by_hand():
    # sources 0..2, targets 0..2; gold (0,0), (1,1), (2,2)
    mined = Mined(forward=torch.tensor([0, 2, 2]), forward_score=torch.tensor([1.5, 1.1, 1.4]),
                  backward=torch.tensor([0, 1, 2]), backward_score=torch.tensor([1.5, 0.9, 1.4]),
                  r_src=torch.zeros(3), r_tgt=torch.zeros(3))
    score = mining_f1(mined, {(0, 0), (1, 1), (2, 2)})
    # candidates by margin: (0,0) 1.5 ok, (2,2) 1.4 ok, (1,2) 1.1 wrong, (1,1) 0.9 ok
    # cuts: 1/1 p=1 r=1/3; 2/2 p=1 r=2/3 (F1 0.8); 2/3; 3/4 p=.75 r=1 (F1 0.857)
    assert score.candidates == 4
    assert score.f1 == pytest.approx(6 / 7) and score.threshold == pytest.approx(0.9)
    assert (score.precision, score.recall) == (pytest.approx(0.75), pytest.approx(1.0))


def test_planted_bitexts_are_mined():
    x, y = planted(200, 1000, noise=0.5)
    score = mining_f1(mine(x, y), {(i, i) for i in range(200)})
    assert score.f1 > 0.95


def test_bad_vectors_are_refused():
    with pytest.raises(DataError, match="non-finite"):
        mine(torch.tensor([[float("nan"), 1.0]]), torch.ones(2, 2))
    with pytest.raises(DataError, match="widths differ"):
        mine(torch.ones(2, 3), torch.ones(2, 2))


def write_bucc(tmp_path, tiny_sentences):
    """German sources (ids d1..), English targets (ids e1..) in shuffled order plus distractors."""
    english, german = tiny_sentences
    order = list(range(len(english)))[::-1]
    (tmp_path / "de.tsv").write_text("".join(f"d{i + 1}\t{german[i]}\n" for i in range(10)))
    targets = [(f"e{k + 1}", english[i]) for k, i in enumerate(order)]  # 10 gold + distractors
    (tmp_path / "en.tsv").write_text("".join(f"{x}\t{s}\n" for x, s in targets))
    gold = [f"d{i + 1}\te{k + 1}\n" for k, i in enumerate(order) if i < 10]
    (tmp_path / "gold.tsv").write_text("".join(gold))
    return targets


@pytest.fixture(scope="module")
def tiny_sentences():
    from layer_analysis.probe.data import load_parallel

    corpus = load_parallel("default").select(["eng_Latn", "deu_Latn"], 16)
    side = {s.language: list(s.sentences) for s in corpus.sides.values()}
    return side["eng_Latn"], side["deu_Latn"]


def test_mine_command_scores_what_mining_the_states_gives(tiny_llama_dir, tiny_sentences,
                                                           tmp_path):
    import json

    import pandas as pd

    from layer_analysis.cli import main
    from layer_analysis.probe.extract import ExtractionConfig, Extractor
    from layer_analysis.probe.models import load_model

    targets = write_bucc(tmp_path, tiny_sentences)
    args = ["mine", str(tmp_path / "de.tsv"), str(tmp_path / "en.tsv"), "--source-language",
            "de", "--target-language", "en", "--gold", str(tmp_path / "gold.tsv"), "--model",
            str(tiny_llama_dir), "--layer", "3", "--output", str(tmp_path / "runs"), "--name",
            "m", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    run = tmp_path / "runs" / "m"
    scores = json.loads((run / "scores.json").read_text())
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig(layers=(3,)))
    german = tiny_sentences[1][:10]
    source = extractor.extract(german)[0, 0]
    target = extractor.extract([s for _, s in targets])[0, 0]
    mined = mine(source, target)
    order = list(range(16))[::-1]
    gold = {(i, k) for k, i in enumerate(order) if i < 10}
    expected = mining_f1(mined, gold)
    assert scores["f1"] == pytest.approx(expected.f1) and scores["gold_pairs"] == 10
    assert scores["xsim_error"] == pytest.approx(
        sum(int(mined.forward[i]) != j for i, j in gold) / 10)
    table = pd.read_csv(run / "mined.tsv", sep="\t", dtype=str)
    assert len(table) == expected.candidates and set(table.source_id) <= {f"d{i}" for i in
                                                                         range(1, 11)}
    assert json.loads((run / "manifest.json").read_text())["kind"] == "mining"


def test_mine_bad_gold_and_layer_are_one_message(tiny_llama_dir, tiny_sentences, tmp_path,
                                                 capsys):
    from layer_analysis.cli import main

    write_bucc(tmp_path, tiny_sentences)
    (tmp_path / "bad.tsv").write_text("d1\te99\n")
    base = ["mine", str(tmp_path / "de.tsv"), str(tmp_path / "en.tsv"), "--source-language", "de",
            "--target-language", "en", "--model", str(tiny_llama_dir), "--output",
            str(tmp_path / "runs"), "--device", "cpu", "--no-progress"]
    assert main([*base, "--gold", str(tmp_path / "bad.tsv")]) == 2
    err = capsys.readouterr().err  # the gold file and line, and the file the id is missing from
    assert f"{tmp_path / 'bad.tsv'}, line 1: target id 'e99' is not in {tmp_path / 'en.tsv'}" in err
    assert main([*base, "--layer", "9"]) == 2
    assert "layers [9] out of range: this model has layers 0..4" in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("mined.tsv"))


def test_mine_says_and_records_what_max_length_cuts(tiny_llama_dir, tiny_sentences, tmp_path,
                                                    capsys):
    import json

    from layer_analysis.cli import main

    write_bucc(tmp_path, tiny_sentences)
    assert main(["mine", str(tmp_path / "de.tsv"), str(tmp_path / "en.tsv"), "--source-language",
                 "de", "--target-language", "en", "--model", str(tiny_llama_dir), "--layer", "3",
                 "--max-length", "3", "--output", str(tmp_path / "runs"), "--name",
                 "cut", "--device", "cpu", "--no-progress", "--k", "1000"]) == 0
    err = capsys.readouterr().err
    assert "truncates" in err and "neighbours for the margin (--k)" in err  # caps are said
    manifest = json.loads((tmp_path / "runs" / "cut" / "manifest.json").read_text())
    truncation = manifest["extraction"]["truncation"]
    assert truncation["max_length"] == 3 and truncation["share"] > 0.05
    assert manifest["mining"]["k"] < 1000  # the k used, not the k asked for
