"""The logit lens's word probes: the shipped word list, token sets in context, the tidy curves,
the ``lens`` command and its errors (the lens == the model's own head: tests/test_families.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from layer_analysis.cli import main
from layer_analysis.probe import lens_run
from layer_analysis.probe.errors import DataError, ModelError
from layer_analysis.probe.latent import (
    WORDS,
    build_probes,
    first_token,
    load_words,
    prompt_for,
    starting_tokens,
    word_probe_table,
)
from layer_analysis.probe.lens import LogitLens
from layer_analysis.probe.models import load_model

SMALL = """eng_Latn\tdeu_Latn\tfra_Latn
water\tWasser\teau
fire\tFeuer\tfeu
house\tHaus\tmaison
tree\tBaum\tarbre
dog\tHund\tchien
book\tBuch\tlivre
hand\tHand\tmain
table\tTisch\ttable
"""


@pytest.fixture
def small_words(tmp_path):
    path = tmp_path / "words.tsv"
    path.write_text(SMALL, encoding="utf-8")
    return path


def test_shipped_word_list_covers_every_shipped_language():
    words = load_words(WORDS)
    assert len(words.words) >= 100
    assert len(words.languages) == 11 and words.languages[0] == "eng_Latn"
    for concept, entry in words.words.items():
        assert all(entry[x] for x in words.languages), concept  # a word in every language
    for language in words.languages:  # no two concepts share a word in one language
        column = [entry[language] for entry in words.words.values()]
        assert len(set(column)) == len(column), language


@pytest.mark.parametrize(("text", "message"), [
    ("deu_Latn\tfra_Latn\nWasser\teau\n", "needs an English column"),
    ("eng_Latn\tdeu_Latn\nwater\tWasser\nwater\tWasser\n", "line 3: concept 'water' listed twice"),
    ("eng_Latn\tdeu_Latn\nwater\tWasser\textra\n", "line 2: 3 columns"),
    ("eng_Latn\tdeu_Latn\teng\nwater\tWasser\twater\n", "appears twice"),
    ("eng_Latn\n", "no concepts"),
])
def test_bad_word_lists_name_the_line(tmp_path, text, message):
    path = tmp_path / "words.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_words(path)


def test_prompts_and_token_sets(tokenizer, small_words):
    words = load_words(small_words)
    prompt = prompt_for("translation", words, "water", ["fire", "house"], "fra_Latn", "deu_Latn")
    assert prompt == ('Français: "feu" - Deutsch: "Feuer"\nFrançais: "maison" - Deutsch: "Haus"\n'
                      'Français: "eau" - Deutsch: "')
    repeat = prompt_for("repetition", words, "water", ["fire"], "fra_Latn", "deu_Latn")
    assert repeat.endswith('Deutsch: "Wasser" - Deutsch: "')
    in_context = first_token(tokenizer, prompt, "Wasser")
    whole = tokenizer(prompt + "Wasser")["input_ids"]
    assert in_context == whole[len(tokenizer(prompt)["input_ids"])]
    ids = starting_tokens(tokenizer, prompt, "Wasser")
    assert ids[0] == in_context and len(set(ids)) == len(ids)
    assert all(tokenizer.decode([i]).strip() for i in ids)  # no whitespace-only token
    assert "Wasser".startswith(tokenizer.decode([ids[0]]))


def test_words_that_start_like_english_are_left_out_with_the_reason(tokenizer, small_words):
    words = load_words(small_words)
    probes, skipped = build_probes(words, tokenizer, "translation", "deu_Latn", "fra_Latn",
                                   shots=2)
    left_out = {s["concept"]: s["reason"] for s in skipped}
    assert "table" in left_out and "same token" in left_out["table"]  # 'table' in both
    assert len(probes) + len(skipped) == 8
    for probe in probes:
        assert not set(probe.target_tokens) & set(probe.english_tokens)
    with pytest.raises(DataError, match="English is the reference"):
        build_probes(words, tokenizer, "translation", "deu_Latn", "eng_Latn")
    with pytest.raises(DataError, match="no Chinese column"):
        build_probes(words, tokenizer, "translation", "deu_Latn", "zho_Hans")
    with pytest.raises(DataError, match="too few"):
        build_probes(words, tokenizer, "translation", "deu_Latn", "fra_Latn", shots=4, limit=5)


def test_word_probe_curves_are_means_with_cis(tiny_llama_dir, small_words):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lens = LogitLens(loaded)
    words = load_words(small_words)
    probes, _ = build_probes(words, loaded.tokenizer, "translation", "fra_Latn", "deu_Latn", 2)
    table, top = word_probe_table(lens, probes, bootstrap=50)
    assert set(table.measure) == {"p_target", "p_english", "entropy"}
    assert len(table) == 3 * lens.extractor.parts.num_layers
    assert (table.ci_low <= table.value + 1e-6).all() and (table.value <= table.ci_high + 1e-6).all()
    probs = table[table.measure != "entropy"]
    assert ((probs.value >= 0) & (probs.value <= 1)).all()
    # the last layer's answer probability equals the model's own, prompt by prompt, on average
    own = []
    for probe in probes:
        inputs = loaded.tokenizer(probe.prompt, return_tensors="pt")
        with torch.no_grad():
            p = torch.softmax(loaded.model(**inputs).logits[0, -1], -1)
        own.append(float(p[list(probe.target_tokens)].sum()))
    last = table[(table.measure == "p_target") & (table.layer == table.layer.max())]
    assert abs(float(last.value.iloc[0]) - sum(own) / len(own)) < 1e-5
    assert list(top.layer) == lens.layers and ((top.share > 0) & (top.share <= 1)).all()


def test_a_prompt_too_long_for_the_lens_is_an_error(tiny_llama_dir):
    lens = LogitLens(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"), max_length=16)
    with pytest.raises(DataError, match="reach the lens's limit of 16 tokens"):
        lens.last_token_states(["short", "a much longer prompt " * 10])


def test_a_model_without_a_head_is_refused(tiny_llama_dir, monkeypatch):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    monkeypatch.setattr(type(loaded.model), "get_output_embeddings", lambda self: None)
    with pytest.raises(ModelError, match="no LM head"):
        LogitLens(loaded)


def test_lens_command_writes_a_run(tiny_llama_dir, small_words, tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["lens", "--model", str(tiny_llama_dir), "--words", str(small_words),
                 "--languages", "de,fr", "--source", "en", "--task", "translation", "repetition",
                 "--shots", "2", "--bootstrap", "20", "--no-static", "--output", str(out),
                 "--name", "lens", "--sentences", "4", "--positions", "2", "--sentence-data",
                 "default", "--table-data", "default", "--tuned-steps", "2",
                 "--tuned-sentences", "4"])
    assert code == 0, capsys.readouterr().err
    run = out / "lens"
    table = pd.read_csv(run / "lens.csv")
    assert set(table.task) == {"translation", "repetition", "sentences"}
    assert set(table[table.task == "sentences"].concepts) == {8}  # 4 sentences x 2 positions
    assert set(table.target) == {"deu_Latn", "fra_Latn"}
    assert set(table[table.task == "translation"].source) == {"eng_Latn"}
    words = pd.read_csv(run / "lens_words.csv")
    assert {"target_tokens", "english_tokens", "used", "reason"} <= set(words.columns)
    assert "table" in set(words[~words.used].concept)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "lens" and manifest["lens"]["left_out"] >= 1
    assert manifest["lens"]["sentences"]["truncation"]["sentences"] == 0
    assert (run / "report.html").exists() and (run / "lens_top.csv").exists()
    assert manifest["lens"]["sentences"]["token_languages_from"] == "default"
    assert set(table["lens"]) == {"logit", "tuned"}  # every probe through both lenses
    assert len(table[table["lens"] == "tuned"]) == len(table[table["lens"] == "logit"])
    kl = pd.read_csv(run / "tuned_lens_kl.csv")
    assert set(kl.lens) == {"logit", "tuned"} and set(kl.language) == {"deu_Latn", "fra_Latn"}
    assert (run / "tuned_lens.safetensors").exists() and manifest["lens"]["tuned_lens"]["steps"] == 2
    assert "eng_Latn" in set(pd.read_csv(run / "token_languages.csv").language.dropna())
    assert "translation → German" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--languages", "de,xx"], "unknown language"),
    (["--languages", "en"], "English is the reference"),
    (["--languages", "zh"], "no Chinese column"),
    (["--languages", "de,de"], "twice"),
    (["--concepts", "3"], "too few concepts"),
    (["--name", "../up"], "plain name"),
    (["--languages", "de", "--sentence-data", "nonexistent"], "nonexistent"),
    (["--languages", "de", "--positions", "0"], "--positions"),
    (["--languages", "de", "--tuned-steps", "5", "--limit", "0"], "evaluated on the running"),
])
def test_lens_bad_input_fails_before_the_model_loads(small_words, tmp_path, monkeypatch, capsys,
                                                     args, message):
    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    code = main(["lens", "--model", "unused", "--words", str(small_words), "--languages", "de",
                 "--output", str(tmp_path / "runs"), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_where_the_run_goes_is_checked_first(small_words, tmp_path, monkeypatch, capsys):
    """The lens asks RunSettings' checks (name, overwrite, an --output that is a file) before
    it reads anything or loads a model, so a bad --output fails before the computation."""
    def check_name(self, kind):
        raise DataError(f"output {self.output} refused")

    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(lens_run, "load_words", lambda *a, **k: pytest.fail("words read"))
    monkeypatch.setattr(lens_run.LensRequest, "check_name", check_name)
    assert main(["lens", "--words", str(small_words), "--output", str(tmp_path / "f")]) == 2
    assert f"output {tmp_path / 'f'} refused" in capsys.readouterr().err


def test_an_output_that_is_a_file_fails_before_the_model_loads(small_words, tmp_path,
                                                               monkeypatch, capsys):
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main(["lens", "--words", str(small_words), "--languages", "de", "--output",
                 str(tmp_path / "file")]) == 2
    assert "file" in capsys.readouterr().err


def test_a_missing_word_is_named(tmp_path, monkeypatch, capsys):
    path = tmp_path / "words.tsv"
    path.write_text(SMALL.replace("Haus", ""), encoding="utf-8")
    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    code = main(["lens", "--words", str(path), "--languages", "de", "--output",
                 str(tmp_path / "runs")])
    assert code == 2 and "no German word for 'house'" in capsys.readouterr().err


def test_token_language_table_on_a_hand_made_corpus(tokenizer):
    from layer_analysis.probe.data import corpus_from_columns
    from layer_analysis.probe.token_languages import build_token_languages

    corpus = corpus_from_columns({  # ' the', ' des', ' la' are single tokens of the test BPE
        "eng_Latn": ["a the the cat", "a the dog", "a the"],
        "deu_Latn": ["a des des Hund", "a des Katze", "a des"],
        "fra_Latn": ["a la chat", "a la la chien", "a la"]}, "hand-made")
    table = build_token_languages(tokenizer, corpus, min_count=2)
    ids = {w: tokenizer(w, add_special_tokens=False)["input_ids"] for w in (" the", " des", " la")}
    assert all(len(v) == 1 for v in ids.values())  # so the words below are whole tokens
    the, des, la = ids[" the"][0], ids[" des"][0], ids[" la"][0]
    assert table.language_of.get(the) == "eng_Latn" and table.language_of.get(des) == "deu_Latn"
    assert table.language_of.get(la) == "fra_Latn"
    a = tokenizer("a", add_special_tokens=False)["input_ids"][0]
    assert a not in table.language_of  # in every language alike: shared
    row = table.table.set_index("token_id").loc[the]
    assert row.language == "eng_Latn" and row.share == 1.0 and row["count"] == 4
    index = table.index(len(tokenizer))
    assert index[the] == 0 and index[des] == 1 and index[la] == 2 and index[a] == 3
    with pytest.raises(DataError, match="two or more"):
        build_token_languages(tokenizer, corpus.select(["en"]))


def test_position_states_are_the_sentence_s_own_states_at_those_positions(tiny_llama_dir):
    """The running-text probe's states at sampled positions (padded batches) equal HF's hidden
    states of each sentence alone at those positions, for every layer."""
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lens = LogitLens(loaded)
    sentences = ["The bakery opens at seven every morning.", "Die Bäckerei öffnet um sieben."]
    states, owners = lens.position_states(sentences, positions=3, seed=1, batch_size=2)
    assert owners == [0, 0, 0, 1, 1, 1]
    generator = torch.Generator().manual_seed(1)
    column = 0
    for sentence in sentences:
        inputs = loaded.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            hidden = loaded.model(**inputs, output_hidden_states=True).hidden_states
        real = list(range(1, inputs["input_ids"].shape[1]))  # after the BOS
        picked = torch.randperm(len(real), generator=generator)[:3].sort().values
        for k in picked.tolist():
            for layer in range(len(hidden) - 1):  # HF's last one is after the final norm
                assert torch.allclose(states[layer, column], hidden[layer][0, real[k]], atol=1e-5)
            column += 1


def test_running_text_shares_add_up(tiny_llama_dir):
    from layer_analysis.probe.data import load_parallel
    from layer_analysis.probe.latent import sentence_latent
    from layer_analysis.probe.token_languages import build_token_languages

    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lens = LogitLens(loaded)
    corpus = load_parallel("default")
    table = build_token_languages(loaded.tokenizer, corpus)
    text = corpus.select(["de", "fr"], 6)
    result = sentence_latent(lens, text, table, positions=2, top_k=5, bootstrap=20)
    assert set(result.target) == {"deu_Latn", "fra_Latn"}  # English text is not read
    wide = result.pivot_table(index=["target", "layer"], columns="measure", values="value")
    total = wide[["p_target", "p_english", "p_other", "p_shared"]].sum(axis=1)
    assert ((total - 1).abs() < 1e-5).all()
    assert (wide[["p_target", "p_english", "p_other", "p_shared"]] >= -1e-6).all().all()
    assert set(result.concepts) == {12}  # 6 sentences x 2 positions


def test_running_text_cut_by_max_length_is_said(tiny_llama_dir, capsys):
    from layer_analysis.probe.data import load_parallel

    lens = LogitLens(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"), max_length=4)
    record = lens_run.text_truncation(lens, load_parallel("default").select(["de", "fr"], 3))
    assert record["sentences"] == 6 and record["share"] == 1.0
    assert "--max-length 4 truncates 6 of 6 sentences" in capsys.readouterr().err


def test_tuned_lens_starts_as_the_logit_lens_learns_and_resumes(tiny_llama_dir, tmp_path):
    from layer_analysis.probe.data import load_parallel
    from layer_analysis.probe.tuned_lens import TunedLens, TuningConfig, kl_to_final, train_tuned_lens

    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    lens = LogitLens(loaded)
    sentences = [s for side in load_parallel("default").select(["en", "de", "zh"], 12).sides.values()
                 for s in side.sentences]
    states, _ = lens.position_states(sentences, positions=4)
    identity = TunedLens.identity(lens.layers[:-1], states.shape[-1])
    logit = kl_to_final(lens, states)
    assert torch.equal(kl_to_final(lens, states, identity), logit)  # identity == logit lens
    plain, through = lens.read_states(states, top_k=3), lens.read_states(states, top_k=3,
                                                                          translator=identity)
    assert torch.equal(plain.top_probs, through.top_probs) and torch.equal(plain.top, through.top)
    assert float(logit[-1].abs().max()) < 1e-5  # the last layer is the final distribution
    config = TuningConfig(steps=6, batch_size=32, lr=1e-2, save_every=2)
    whole = train_tuned_lens(lens, states, config, tmp_path / "a.safetensors", {"m": 1})
    tuned = kl_to_final(lens, states, whole)
    assert float(tuned[:-1].mean()) < float(logit[:-1].mean())  # it learned something
    # interrupted after 2 steps, then resumed to 6: the same translators as in one go
    part = tmp_path / "b.safetensors"
    train_tuned_lens(lens, states, TuningConfig(**{**config.__dict__, "steps": 2}), part, {"m": 1})
    steps = []
    resumed = train_tuned_lens(lens, states, config, part, {"m": 1},
                               lambda step, loss: steps.append(step))
    assert steps == [3, 4, 5, 6]  # it went on from the checkpoint
    assert torch.allclose(resumed.weight, whole.weight, atol=1e-6)
    other = train_tuned_lens(lens, states, config, part, {"m": 2},  # another model: from scratch
                             lambda step, loss: steps.append(step))
    assert steps[4:] == [1, 2, 3, 4, 5, 6] and torch.allclose(other.weight, whole.weight, atol=1e-6)
    assert all(p.requires_grad for p in loaded.model.parameters())  # the model is left as it was


@pytest.fixture(scope="module")
def tuning(tiny_llama_dir):
    """A logit lens of the tiny model and position states of 36 sentences to tune it on."""
    from layer_analysis.probe.data import load_parallel

    lens = LogitLens(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"))
    sentences = [s for side in load_parallel("default").select(["en", "de", "zh"], 12).sides.values()
                 for s in side.sentences]
    return lens, lens.position_states(sentences, positions=4)[0]


def test_tuned_lens_batches_are_drawn_as_they_are_needed(tuning, tmp_path, monkeypatch):
    from layer_analysis.probe import tuned_lens

    generator = torch.Generator().manual_seed(3)  # the batches as they were drawn all at once
    eager = [torch.randperm(50, generator=generator)[:8] for _ in range(5)]
    lazy = tuned_lens.batch_rows(50, 8, seed=3)
    assert all(torch.equal(next(lazy), rows) for rows in eager)
    assert all(torch.equal(a, b) for a, b in zip(tuned_lens.batch_rows(50, 8, 3, start=2),
                                                 eager[2:], strict=False))
    lens, states = tuning
    draws = []
    randperm = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: draws.append(1) or randperm(*a, **k))

    class Enough(Exception):
        pass

    def stop_after_two(step, loss):
        if step == 2:
            raise Enough

    config = tuned_lens.TuningConfig(steps=200_000, batch_size=32, save_every=1000)
    with pytest.raises(Enough):  # nothing is built for the 200,000 steps that never run
        tuned_lens.train_tuned_lens(lens, states, config, tmp_path / "t.safetensors", {"m": 1},
                                    stop_after_two)
    assert len(draws) == 2


def test_a_longer_tuned_lens_checkpoint_is_not_reused_for_fewer_steps(tuning, tmp_path, capsys):
    from layer_analysis.probe.store import load_tensors
    from layer_analysis.probe.tuned_lens import TuningConfig, train_tuned_lens

    lens, states = tuning
    long, short = (TuningConfig(steps=n, batch_size=32, lr=1e-2, save_every=2) for n in (6, 2))
    fresh = train_tuned_lens(lens, states, short, tmp_path / "fresh.safetensors", {"m": 1})
    checkpoint = tmp_path / "run.safetensors"
    assert train_tuned_lens(lens, states, long, checkpoint, {"m": 1}).steps == 6
    capsys.readouterr()
    steps = []
    again = train_tuned_lens(lens, states, short, checkpoint, {"m": 1},
                             lambda step, loss: steps.append(step))
    assert steps == [1, 2] and again.steps == 2  # trained anew, not the 6-step lens
    assert torch.allclose(again.weight, fresh.weight, atol=1e-6)
    assert "holds a tuned lens of 6 steps, more than the 2 asked for" in capsys.readouterr().err
    assert load_tensors(checkpoint)[1]["step"] == "2"  # the checkpoint says what it holds


def test_compare_draws_lens_runs_of_two_models_side_by_side(tiny_llama_dir, small_words,
                                                           tmp_path, capsys):
    import shutil

    other = tmp_path / "other-model"
    shutil.copytree(tiny_llama_dir, other)  # the same weights under another model name
    out = tmp_path / "runs"
    for name, model in (("one", tiny_llama_dir), ("two", other), ("three", other)):
        assert main(["lens", "--model", str(model), "--words", str(small_words), "--languages",
                     "de", "--source", "en", "--shots", "2", "--bootstrap", "20", "--sentences",
                     "0", "--no-static", "--output", str(out), "--name", name]) == 0
    assert main(["compare", str(out / "one"), str(out / "two"), "--output", str(out / "cmp"),
                 "--no-static"]) == 0
    table = pd.read_csv(out / "cmp" / "lens.csv")
    assert table.model.nunique() == 2
    assert "other-model: English" in (out / "cmp" / "report.html").read_text()
    assert main(["compare", str(out / "two"), str(out / "three"), "--output", str(out / "c2"),
                 "--no-static"]) == 2
    assert "share a model name" in capsys.readouterr().err


def test_cloze_blanks_whole_words_and_writes_no_language_name(tokenizer, small_words):
    from layer_analysis.probe.latent import cloze_sentences

    words = load_words(small_words)
    sentences = ["Das Wasserglas ist leer.", "Das Wasser ist kalt.", "Der Hund bellt; der Hund schläft.",
                 "Ein Baum.", "Feuer!", "Ein Haus.", "Das Buch."]
    blanks = cloze_sentences(words, sentences, "deu_Latn")
    assert blanks["water"] == "Das ___ ist kalt."  # not inside 'Wasserglas'
    assert blanks["dog"] == "Der ___ bellt; der Hund schläft."  # the first occurrence only
    assert "hand" not in blanks and "table" not in blanks
    zh = cloze_sentences(load_words(WORDS), ["今天下雨。", "我喝水。"], "zho_Hans")
    assert zh["water"] == "我喝___。" and zh["rain"] == "今天下___。"  # no spaces: substrings
    probes, skipped = build_probes(words, tokenizer, "cloze", "deu_Latn", "deu_Latn", shots=2,
                                   blanks=blanks)
    assert {s["concept"] for s in skipped} >= {"hand", "table"}
    prompt = next(p for p in probes if p.concept == "water").prompt
    assert prompt.endswith('"Das ___ ist kalt." → "') and "Deutsch" not in prompt
    assert prompt.count("\n") == 2 and '" → "' in prompt.split("\n")[0]


def test_lens_cloze_from_a_data_directory(tiny_llama_dir, small_words, tmp_path, capsys):
    data = tmp_path / "cloze"
    data.mkdir()
    german = ["Das Wasser ist kalt.", "Das Feuer brennt.", "Ein Haus steht.", "Ein Baum wächst.",
              "Der Hund bellt.", "Das Buch liegt."]
    (data / "deu_Latn.txt").write_text("\n".join(german) + "\n", encoding="utf-8")
    (data / "eng_Latn.txt").write_text("\n".join(f"line {i}" for i in range(6)) + "\n",
                                       encoding="utf-8")
    out = tmp_path / "runs"
    assert main(["lens", "--model", str(tiny_llama_dir), "--words", str(small_words),
                 "--languages", "de", "--task", "cloze", "--cloze-data", str(data), "--shots", "2",
                 "--bootstrap", "20", "--sentences", "0", "--no-static", "--output", str(out),
                 "--name", "cloze"]) == 0
    table = pd.read_csv(out / "cloze" / "lens.csv")
    assert set(table.task) == {"cloze"} and set(table.concepts) == {6}
    assert main(["lens", "--model", "unused", "--words", str(small_words), "--languages", "de",
                 "--task", "cloze", "--cloze-data", str(data), "--shots", "5", "--output",
                 str(out)]) == 2
    assert "too few for 5-shot cloze" in capsys.readouterr().err


def test_too_long_prompts_fail_before_any_pass(tiny_llama_dir, small_words, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["lens", "--model", str(tiny_llama_dir), "--words", str(small_words),
                 "--languages", "de", "--source", "en", "--shots", "2", "--max-length", "12",
                 "--sentences", "0", "--no-static", "--output", str(out)]) == 2
    assert "has" in (err := capsys.readouterr().err) and "the limit is 12" in err
    assert not out.exists()
