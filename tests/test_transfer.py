"""Per-layer transfer probe: hand scikit-learn pipelines, hand bootstraps, the SIB-200 reader's
messages, and the ``transfer`` command end to end on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.metrics import _resample_counts
from layer_analysis.probe.sib200 import load_sib
from layer_analysis.probe.transfer import (
    ProbeConfig,
    SourceProbes,
    chance_levels,
    macro_f1_weighted,
    score_predictions,
)

TOPICS = ("science", "travel", "sports")


def planted(layers: int = 2, n: int = 90, d: int = 6, shift: float = 0.0, seed: int = 0):
    """(layers, n, d) states whose class means differ, labels cycling over three topics."""
    rng = np.random.default_rng(seed)
    y = np.array([TOPICS[i % 3] for i in range(n)])
    means = rng.normal(size=(3, d)) * 1.5
    x = rng.normal(size=(layers, n, d)) + means[[i % 3 for i in range(n)]][None] + shift
    return x.astype(np.float32), y


def hand_probe(x, y):
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)).fit(x, y)


def test_probe_equals_a_hand_written_pipeline_raw_and_centered():
    source, y = planted(seed=1)
    target, _ = planted(seed=2, shift=3.0)
    train, test = slice(0, 60), slice(60, 90)
    config = ProbeConfig(bootstrap=200)
    probes = SourceProbes("eng_Latn", source, [0, 5], train, y[train], config, "m")
    table = pd.DataFrame(probes.score("deu_Latn", target, test, y[test]).rows)
    assert not probes.nonconverged
    for variant in ("raw", "centered"):
        for i, layer in enumerate([0, 5]):
            xs, xt = source[i], target[i]
            if variant == "centered":
                xs, xt = xs - xs.mean(0), xt - xt.mean(0)
            transfer = hand_probe(xs[train], y[train]).predict(xt[test])
            ceiling = hand_probe(xt[train], y[train]).predict(xt[test])
            rows = table[(table.variant == variant) & (table.layer == layer)].set_index(
                ["setting", "metric"]).value
            assert rows["transfer", "accuracy"] == pytest.approx(
                accuracy_score(y[test], transfer))
            assert rows["transfer", "macro_f1"] == pytest.approx(
                f1_score(y[test], transfer, average="macro"))
            assert rows["ceiling", "accuracy"] == pytest.approx(accuracy_score(y[test], ceiling))
            assert rows["ratio", "accuracy"] == pytest.approx(
                accuracy_score(y[test], transfer) / accuracy_score(y[test], ceiling))
    # a language's mean offset defeats the raw probe; centering removes it
    raw = table[(table.setting == "transfer") & (table.metric == "accuracy")]
    assert raw[raw.variant == "centered"].value.min() > raw[raw.variant == "raw"].value.max()


def test_bootstrap_cis_equal_a_hand_bootstrap():
    rng = np.random.default_rng(3)
    y = rng.choice(list(TOPICS), 50)
    p_t = np.where(rng.random(50) < 0.6, y, rng.choice(list(TOPICS), 50))
    p_c = np.where(rng.random(50) < 0.8, y, rng.choice(list(TOPICS), 50))
    config = ProbeConfig(bootstrap=300, seed=4)
    rows = {(r["setting"], r["metric"]): r
            for r in score_predictions(y, {"transfer": p_t, "ceiling": p_c}, config)}
    counts = _resample_counts(50, 300, 4).numpy().astype(int)
    index = [np.repeat(np.arange(50), c) for c in counts]  # each resample as sentence indices
    hand = {("transfer", "accuracy"): [accuracy_score(y[i], p_t[i]) for i in index],
            ("transfer", "macro_f1"): [f1_score(y[i], p_t[i], average="macro", zero_division=0)
                                       for i in index],
            ("ceiling", "macro_f1"): [f1_score(y[i], p_c[i], average="macro", zero_division=0)
                                      for i in index]}
    hand[("ratio", "accuracy")] = [accuracy_score(y[i], p_t[i]) / accuracy_score(y[i], p_c[i])
                                   for i in index]
    for key, values in hand.items():
        low, high = np.quantile(values, [0.025, 0.975])
        assert rows[key]["ci_low"] == pytest.approx(low) and rows[key]["ci_high"] == pytest.approx(high)
    assert rows[("transfer", "accuracy")]["chance"] == pytest.approx(
        max(np.mean(y == t) for t in TOPICS))


def test_weighted_macro_f1_follows_sklearn_when_a_class_is_absent():
    y = np.array(["a", "a", "b", "c", "c", "c"])
    p = np.array(["a", "b", "b", "c", "a", "c"])
    weights = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 0, 2, 1, 1], [0, 0, 3, 0, 0, 3.0]])
    expected = [f1_score(np.repeat(y, w.astype(int)), np.repeat(p, w.astype(int)),
                         average="macro", zero_division=0) for w in weights]
    np.testing.assert_allclose(macro_f1_weighted(y, p, weights), expected)
    assert chance_levels(y) == {"accuracy": 0.5, "macro_f1": pytest.approx(f1_score(
        y, np.array(["c"] * 6), average="macro", zero_division=0))}


def test_nonconvergence_is_recorded():
    x, y = planted(layers=1)
    probes = SourceProbes("eng_Latn", x, [3], slice(0, 60), y[:60], ProbeConfig(max_iter=1), "m")
    assert probes.nonconverged == [{"variant": "raw", "layer": 3, "trained_on": "eng_Latn"},
                                   {"variant": "centered", "layer": 3, "trained_on": "eng_Latn"}]


# ------------------------------------------------------------------------------ SIB-200 layout


def write_sib(root: Path, languages=("eng_Latn", "deu_Latn", "zho_Hans"), sizes=(60, 10, 30)
              ) -> Path:
    """A SIB-200-layout directory from the shipped parallel sentences, topics cycling."""
    corpus = load_parallel("default")
    start = 0
    for split, size in zip(("train", "dev", "test"), sizes, strict=True):
        for code in languages:
            sentences = corpus.sides[code].sentences
            lines = ["index_id\tcategory\ttext"] + [
                f"{i + 100}\t{TOPICS[i % 3]}\t{sentences[i]}" for i in range(start, start + size)]
            (root / code).mkdir(parents=True, exist_ok=True)
            (root / code / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        start += size
    return root


def edit_line(path: Path, line: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = new
    path.write_text("\n".join(lines), encoding="utf-8")


def test_the_reader_gives_parallel_labelled_splits(tmp_path):
    root = write_sib(tmp_path / "sib")
    corpus = load_sib(root, ["de", "English"], reference="eng_Latn")
    assert corpus.languages == ["eng_Latn", "deu_Latn"]
    assert corpus.sizes() == {"train": 60, "dev": 10, "test": 30}
    assert corpus.labels("test")[:2] == ["travel", "sports"]  # rows 70, 71
    side = corpus.parallel().sides["deu_Latn"].sentences
    assert len(side) == 100 and side[60] == load_parallel("default").sides["deu_Latn"].sentences[60]
    assert load_parallel(str(root)).languages == ["deu_Latn", "eng_Latn", "zho_Hans"]


@pytest.mark.parametrize("change, message", [
    (lambda r: edit_line(r / "deu_Latn" / "test.tsv", 4, "999\ttravel\tx"),
     r"deu_Latn/test.tsv, line 4: index_id 999 \(travel\) but .*eng_Latn/test.tsv has 172"),
    (lambda r: edit_line(r / "zho_Hans" / "train.tsv", 2, "100\tsports\tx"),
     r"zho_Hans/train.tsv, line 2: index_id 100 \(sports\) but .* has 100 \(science\)"),
    (lambda r: edit_line(r / "eng_Latn" / "dev.tsv", 3, "101\ttravel"),
     r"eng_Latn/dev.tsv, line 3: expected index_id<TAB>category<TAB>text"),
    (lambda r: edit_line(r / "eng_Latn" / "train.tsv", 1, "id\tlabel\ttext"),
     r"eng_Latn/train.tsv, line 1: header"),
    (lambda r: edit_line(r / "eng_Latn" / "train.tsv", 3, "100\ttravel\tx"),
     r"eng_Latn/train.tsv, line 3: index_id 100 repeats line 2"),
])
def test_bad_sib_files_name_file_and_line(tmp_path, change, message):
    root = write_sib(tmp_path / "sib")
    change(root)
    with pytest.raises(DataError, match=message):
        load_sib(root, "all", reference="eng_Latn")


def transfer_args(model: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return ["transfer", "--model", str(model), "--data", str(root), "--output", str(out),
            "--device", "cpu", "--dtype", "float32", "--no-progress", "--bootstrap", "100",
            *extra]


@pytest.mark.parametrize("setup, extra, message", [
    (None, ["--languages", "en,fr"], r"has no fra_Latn \(no fra_Latn/train.tsv\)"),
    (None, ["--languages", "en", "--source", "en"], "the transfer source eng_Latn is the only"),
    (None, ["--source", "fr"], "has no fra_Latn"),
    (None, ["--languages", "klingon"], "unknown language 'klingon'"),
    (lambda r: [edit_line(r / c / "test.tsv", 2, "130\tpolitics\tx")
                for c in ("eng_Latn", "deu_Latn", "zho_Hans")],
     [], r"eng_Latn/test.tsv, line 2: category 'politics' never occurs in .*train.tsv"),
    (lambda r: edit_line(r / "deu_Latn" / "dev.tsv", 11, "109\tsports\tx"), [],
     r"deu_Latn/dev.tsv, line 11: index_id 109 \(sports\) but"),
])
def test_bad_input_is_one_message_before_the_model_loads(tmp_path, capsys, setup, extra,
                                                         message):
    from layer_analysis.cli import main

    root = write_sib(tmp_path / "sib")
    if setup:
        setup(root)
    args = transfer_args(tmp_path / "no-such-model", root, tmp_path / "runs", *extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("layer-analysis: error:") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.csv"))


def test_transfer_command_end_to_end(tiny_llama_dir, tmp_path, capsys):
    from layer_analysis.cli import main
    from layer_analysis.probe.extract import ExtractionConfig, Extractor
    from layer_analysis.probe.models import load_model

    root = write_sib(tmp_path / "sib")
    out = tmp_path / "runs"
    args = transfer_args(tiny_llama_dir, root, out, "--languages", "de,zh,en", "--name", "t",
                         "--layers", "1,3", "--group-size", "2")
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best transfer layer (raw)" in printed and "best transfer layer (centered)" in printed
    run = out / "t"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "transfer" and manifest["data"]["source"] == "eng_Latn"
    assert manifest["data"]["languages"] == ["eng_Latn", "deu_Latn", "zho_Hans"]
    assert len(manifest["activations"]) == 2  # two groups, two store keys
    assert isinstance(manifest["nonconverged"], list)
    table = pd.read_csv(run / "transfer.csv")
    assert set(table.layer) == {1, 3} and set(table.variant) == {"raw", "centered"}
    assert len(table) == 3 * 2 * 2 * 3 * 2  # targets x layers x variants x settings x metrics
    own = table[(table.target == "eng_Latn") & (table.setting == "ratio")]
    assert (own.value == 1.0).all()  # the source's transfer is its ceiling
    assert ((table.ci_low <= table.value + 1e-9) | table.ci_low.isna()).all()
    # the table's accuracy is the stored predictions' accuracy
    predictions = pd.read_parquet(run / "predictions.parquet")
    one = predictions[(predictions.layer == 3) & (predictions.variant == "centered")
                      & (predictions.target == "zho_Hans") & (predictions.setting == "transfer")]
    assert len(one) == 30
    row = table[(table.layer == 3) & (table.variant == "centered") & (table.target == "zho_Hans")
                & (table.setting == "transfer") & (table.metric == "accuracy")]
    assert row.value.item() == pytest.approx((one.label == one.prediction).mean())
    # and equals a hand pipeline on the states the extractor gives
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig(layers=(3,)))
    sib = load_sib(root, ["en", "zh"], reference="eng_Latn")
    en = extractor.extract(list(sib.parallel().sides["eng_Latn"].sentences))[0, 0].numpy()
    zh = extractor.extract(list(sib.parallel().sides["zho_Hans"].sentences))[0, 0].numpy()
    y = np.array(sib.labels("train")), np.array(sib.labels("test"))
    predicted = hand_probe(en[:60] - en.mean(0), y[0]).predict((zh - zh.mean(0))[70:])
    assert row.value.item() == pytest.approx(accuracy_score(y[1], predicted), abs=1 / 30 + 1e-9)
    # the alignment of the test sentences: run's analysis, also in the second group (zh)
    from layer_analysis.probe.correlate import read_alignment

    aligned = pd.read_csv(run / "alignment.csv")
    assert set(aligned.target[aligned.source == "eng_Latn"]) == {"deu_Latn", "zho_Hans"}
    p1 = aligned[(aligned.source == "eng_Latn") & (aligned.target == "zho_Hans") & (aligned.layer == 3)
                 & (aligned.metric == "p@1") & (aligned.normalisation == "centered")]
    en_test, zh_test = en[70:] - en[70:].mean(0), zh[70:] - zh[70:].mean(0)
    cosine = (en_test / np.linalg.norm(en_test, axis=1, keepdims=True)) @ (
        zh_test / np.linalg.norm(zh_test, axis=1, keepdims=True)).T
    assert p1.value.item() == pytest.approx((cosine.argmax(1) == np.arange(30)).mean())
    assert set(read_alignment(run).values) == {"deu_Latn", "zho_Hans"}
    tokenization = pd.read_csv(run / "tokenization.csv")
    assert list(tokenization.language) == ["eng_Latn", "deu_Latn", "zho_Hans"]
    assert tokenization.set_index("language").fertility["eng_Latn"] == 1.0
    assert "targets_layer_" in (run / "report.html").read_text()
    # a rerun loads the states from the store; unnamed runs are named by their settings
    assert main([*args, "--overwrite"]) == 0
    unnamed = [a for a in args if a not in ("--name", "t")]
    assert main(unnamed) == 0 and main([*unnamed, "--limit", "20"]) == 0
    assert len([p for p in out.iterdir() if p.name not in ("t", "store")]) == 2


def test_sib200_shared_data_reads_parallel(shared_data):
    if not (shared_data / "sib200").is_dir():
        pytest.skip("../shared/data/sib200 is absent")
    corpus = load_sib("sib200", ["en", "de", "ace_Arab"], reference="eng_Latn")
    assert corpus.sizes() == {"train": 701, "dev": 99, "test": 204}
    assert len(set(corpus.labels("train"))) == 7
    assert len(load_parallel("sib200").languages) == 205


def test_run_reads_a_sib_layout_with_languages_all(tiny_llama_dir, tmp_path, capsys):
    from layer_analysis.cli import main

    root = write_sib(tmp_path / "sib")
    args = ["run", "--model", str(tiny_llama_dir), "--data", str(root), "--languages", "all",
            "--limit", "12", "--device", "cpu", "--bootstrap", "20", "--projection", "none",
            "--output", str(tmp_path / "runs"), "--name", "r", "--no-static", "--no-progress"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    assert manifest["data"]["languages"] == ["deu_Latn", "eng_Latn", "zho_Hans"]
    assert manifest["data"]["sides"] == {"deu_Latn": 12, "eng_Latn": 12, "zho_Hans": 12}
    assert (tmp_path / "runs" / "r" / "mexa_export" / "strict" / "zho_Hans.json").exists()


def sort_test_by_topic(root: Path) -> None:
    """SIB-200's own test split is sorted by category: do the same, in every language."""
    for directory in root.iterdir():
        lines = (directory / "test.tsv").read_text(encoding="utf-8").splitlines()
        body = sorted(lines[1:], key=lambda line: (TOPICS.index(line.split("\t")[1]),
                                                   line.split("\t")[0]))
        (directory / "test.tsv").write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")


def test_limit_samples_every_split_and_keeps_its_line_numbers(tmp_path):
    from layer_analysis.probe.sib200 import check_categories, limit_splits, sample_rows

    root = write_sib(tmp_path / "sib")
    sort_test_by_topic(root)
    full = load_sib(root, "all", reference="eng_Latn")
    corpus = limit_splits(full, 12)
    assert corpus.sizes() == {"train": 12, "dev": 10, "test": 12}
    test_labels = full.labels("test")
    keep = sample_rows(test_labels, 12)
    assert keep == sorted(keep) and len(set(keep)) == 12 and keep != list(range(12))
    assert corpus.labels("test") == [test_labels[i] for i in keep]
    assert len(set(corpus.labels("test"))) == 3  # not the first rows: one topic
    test = corpus.splits["deu_Latn"]["test"]
    assert test.ids == corpus.splits["zho_Hans"]["test"].ids  # the same rows in every language
    lines = test.path.read_text(encoding="utf-8").splitlines()
    assert all(lines[test.line(i) - 1].startswith(f"{test.ids[i]}\t") for i in range(12))
    check_categories(corpus, "eng_Latn")
    with pytest.raises(DataError, match=r"eng_Latn/test.tsv: the test rows used hold one "
                                        r"category only"):
        check_categories(limit_splits(full, 1), "eng_Latn")


def test_a_small_sample_is_stratified_by_category():
    """Each category keeps its share (at least one row while the limit allows), so a small
    train sample covers the test sample's categories (a plain random 40 of SIB-200's 701
    could miss one, and the run then refused)."""
    from collections import Counter

    from layer_analysis.probe.sib200 import sample_rows

    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5
    for limit in (4, 7, 10, 40, 99):
        keep = sample_rows(labels, limit, seed=3)
        assert len(keep) == len(set(keep)) == limit and keep == sorted(keep)
        counts = Counter(labels[i] for i in keep)
        assert set(counts) == {"a", "b", "c", "d"}  # every category, even the rare one
        assert all(abs(counts[c] - limit * labels.count(c) / 100) <= 1.5 for c in counts)
    assert len(sample_rows(labels, 2)) == 2  # fewer rows than categories: still the limit
    assert sample_rows(labels, 100) == list(range(100))


def fake_transfer_run(directory: Path, correct: dict[int, list[bool]]) -> Path:
    """A transfer run directory holding predictions only: per layer, which of the test
    sentences the probe got right."""
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps(
        {"kind": "transfer", "model": {"name": directory.name.upper()}}))
    pd.DataFrame(columns=["layer"]).to_csv(directory / "transfer.csv", index=False)
    rows = [{"layer": layer, "variant": "centered", "target": "deu_Latn", "setting": "transfer",
             "row": i, "label": "a", "prediction": "a" if ok else "b"}
            for layer, oks in correct.items() for i, ok in enumerate(oks)]
    pd.DataFrame(rows).to_parquet(directory / "predictions.parquet", index=False)
    return directory


def test_transfer_compare_pairs_sentences(tmp_path, capsys):
    from layer_analysis.cli import main
    from layer_analysis.probe.transfer_run import paired_transfer

    base = [True] * 10 + [False] * 30
    a = fake_transfer_run(tmp_path / "a", {1: base, 2: base})
    b = fake_transfer_run(tmp_path / "b", {1: base, 2: [True] * 30 + [False] * 10})
    table = paired_transfer(a, b, samples=200, permutations=200).set_index("layer")
    assert table.difference[1] == 0 and table.difference[2] == pytest.approx(0.5)
    assert table.p_value[2] < 0.01 and table.p_value[1] == 1.0
    assert table.ci_low[2] > 0.3 and table.n[2] == 40
    c = fake_transfer_run(tmp_path / "c", {1: base})
    with pytest.raises(DataError, match="differ in their targets, layers or test sentences"):
        paired_transfer(a, c)
    assert main(["transfer-compare", str(a), str(b), "--output", str(tmp_path / "p.csv")]) == 0
    assert "1 of 2 transfer curves' layers moved" in capsys.readouterr().out
    written = pd.read_csv(tmp_path / "p.csv")
    assert len(written) == 2 and set(written.model) == {"B"} and set(written.reference) == {"A"}
    import layer_analysis as la

    pd.testing.assert_frame_equal(la.transfer_compare(a, b).reset_index(drop=True), written,
                                  check_dtype=False)
    assert main(["transfer-compare", str(a), str(b), "--output", str(tmp_path / "p.csv")]) == 0


def test_transfer_compare_never_overwrites_what_it_did_not_write(tmp_path, capsys):
    """--output replaces only an earlier comparison's table: a run's manifest, a directory or
    data are refused before anything is written; runs of other samples are refused."""
    from layer_analysis.cli import main

    a = fake_transfer_run(tmp_path / "a", {1: [True, False]})
    b = fake_transfer_run(tmp_path / "b", {1: [False, True]})
    manifest = (a / "manifest.json").read_text()
    for output, message in ((a / "manifest.json", "no earlier transfer-compare table"),
                            (a, "is a directory"),
                            (a / "manifest.json" / "p.csv", "is a file, not a directory")):
        assert main(["transfer-compare", str(a), str(b), "--output", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert (a / "manifest.json").read_text() == manifest
    other = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps({**other, "data": {"limit": 50}}))
    assert main(["transfer-compare", str(a), str(b), "--output", str(tmp_path / "p.csv")]) == 2
    assert "differ in their data (limit)" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_la_transfer_equals_the_command_and_loads_back(tiny_llama_dir, tmp_path):
    import layer_analysis as la
    from layer_analysis.cli import main

    root = write_sib(tmp_path / "sib")
    out = tmp_path / "runs"
    assert main(transfer_args(tiny_llama_dir, root, out, "--languages", "de,en", "--name", "cli",
                              "--layers", "1,3")) == 0
    run = la.transfer(model=str(tiny_llama_dir), data=str(root), languages="de,en",
                      layers="1,3", bootstrap=100, device="cpu", output=out, name="api",
                      progress=False)
    cli = la.load(out / "cli")
    assert run.kind == cli.kind == "transfer" and "summary" in run.tables
    pd.testing.assert_frame_equal(run.table, cli.table)
    assert {"transfer_curves"} <= set(run.figures())


def test_transfer_says_which_languages_max_length_cuts(tiny_llama_dir, tmp_path, capsys):
    from layer_analysis.cli import main

    root = write_sib(tmp_path / "sib")
    out = tmp_path / "runs"
    assert main(transfer_args(tiny_llama_dir, root, out, "--languages", "en,zh", "--name", "t",
                              "--layers", "2", "--no-ceiling", "--max-length", "6")) == 0
    err = capsys.readouterr().err
    assert "--max-length 6 truncates sentences of 2 language(s)" in err
    manifest = json.loads((out / "t" / "manifest.json").read_text())
    cut = manifest["extraction"]["truncation"]
    assert set(cut) == {"eng_Latn", "zho_Hans"} and cut["eng_Latn"]["max_length"] == 6
    assert any("truncates" in w for w in manifest["warnings"])
    assert main(transfer_args(tiny_llama_dir, root, out, "--languages", "en,zh", "--name", "u",
                              "--layers", "2", "--no-ceiling")) == 0
    assert "truncates" not in capsys.readouterr().err
    assert json.loads((out / "u" / "manifest.json").read_text())["extraction"]["truncation"] == {}
