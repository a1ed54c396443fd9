"""Cross-lingual activation patching on tiny models: a self-patch changes nothing bit for bit,
the batched patching equals a plain one-prompt-at-a-time hook experiment, "every layer from l
on" agrees with single-layer patching where it must, the CIs are a bootstrap's, switch layers
by hand, the hooks are gone afterwards on every family (and through a PEFT adapter), bad input
gets one message before the model loads."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from families import FAMILIES, build_family
from test_families import without_bos

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.latent import WordList, load_words
from layer_analysis.probe.lens import LogitLens
from layer_analysis.probe.metrics import _resample_counts
from layer_analysis.probe.models import load_model
from layer_analysis.probe.patching import (
    CONDITIONS,
    MEASURES,
    Patcher,
    Setting,
    build_pairs,
    check_setting,
    patch_experiment,
    patch_table,
    switch_layers,
    switch_table,
)

SETTING = Setting("deu_Latn", "fra_Latn", "spa_Latn", "eng_Latn")
MEAN = ["deu_Latn", "spa_Latn"]
LAYERS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def pairs(loaded):
    found, skipped = build_pairs(load_words(), loaded.tokenizer, SETTING, MEAN, shots=1,
                                 limit=10, seed=0)
    assert len(found) >= 4 and len(found) + len(skipped) == 10
    return found[:5]


@pytest.fixture(scope="module")
def result(loaded, pairs):
    return patch_experiment(Patcher(LogitLens(loaded)), pairs, LAYERS, ("single", "onward"),
                            batch_size=2, seed=0)


def test_a_self_patch_changes_nothing_bit_for_bit(result):
    assert result.self_identical and result.self_max_change == 0.0
    for mode in ("single", "onward"):
        assert torch.equal(result.probs["self"][mode],
                           result.baseline.expand_as(result.probs["self"][mode]))
        for condition in ("patch", "random_concept", "random_direction"):  # the others move it
            assert not torch.equal(result.probs[condition][mode][0], result.baseline)


def _hand_probs(loaded, prompt: str, sets, replace: dict[int, torch.Tensor] | None = None):
    """A plain experiment: one prompt, HF's own forward and logits, hooks written here."""
    blocks = Patcher(LogitLens(loaded)).blocks
    captured, handles = {}, []

    def hook(layer):
        def run(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if replace and layer in replace:
                hidden = hidden.clone()
                hidden[0, -1] = replace[layer]
            captured[layer] = hidden[0, -1].clone()
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return run

    for layer in range(1, len(blocks) + 1):
        handles.append(blocks[layer - 1].register_forward_hook(hook(layer)))
    try:
        with torch.no_grad():
            logits = loaded.model(**loaded.tokenizer(prompt, return_tensors="pt")).logits
    finally:
        for handle in handles:
            handle.remove()
    p = torch.softmax(logits[0, -1].float(), -1)
    return captured, torch.stack([p[list(ids)].sum() for ids in sets])


def test_patching_equals_a_hand_written_hook_experiment(loaded, pairs, result):
    for j, pair in enumerate(pairs):
        source, _ = _hand_probs(loaded, pair.source_prompt, pair.token_sets)
        _, unpatched = _hand_probs(loaded, pair.target_prompt, pair.token_sets)
        assert torch.allclose(result.baseline[j], unpatched, atol=1e-6, rtol=1e-4)
        for i, layer in enumerate(LAYERS):
            _, patched = _hand_probs(loaded, pair.target_prompt, pair.token_sets,
                                     {layer: source[layer]})
            assert torch.allclose(result.probs["patch"]["single"][i, j], patched, atol=1e-6,
                                  rtol=1e-4), (j, layer)
            _, onward = _hand_probs(loaded, pair.target_prompt, pair.token_sets,
                                    {k: source[k] for k in LAYERS if k >= layer})
            assert torch.allclose(result.probs["patch"]["onward"][i, j], onward, atol=1e-6,
                                  rtol=1e-4)
        means = [_hand_probs(loaded, p, pair.token_sets)[0][2] for p in pair.mean_prompts]
        _, mean = _hand_probs(loaded, pair.target_prompt, pair.token_sets,
                              {2: torch.stack(means).mean(0)})
        assert torch.allclose(result.probs["mean"]["single"][1, j], mean, atol=1e-6, rtol=1e-4)


def test_every_layer_from_l_on_agrees_with_single_layer_patches_where_it_must(result):
    """At the last layer both patch the same state; and since "onward" also replaces the last
    layer's state, the one the output is read from, it gives the source's output at every l."""
    for condition in CONDITIONS:
        single, onward = (result.probs[condition][m] for m in ("single", "onward"))
        assert torch.equal(onward[-1], single[-1])
        for i in range(len(LAYERS)):
            assert torch.equal(onward[i], single[-1])
    assert not torch.equal(result.probs["patch"]["single"][0],
                           result.probs["patch"]["single"][-1])


def test_the_cis_equal_a_hand_bootstrap(result):
    table = patch_table(result, bootstrap=200, seed=3)
    assert set(table.condition) == {"none", *CONDITIONS}
    row = table[(table["mode"] == "single") & (table.condition == "patch")
                & (table.control == "random_direction") & (table.layer == 3)
                & (table.measure == "p_concept")].iloc[0]
    values = (result.probs["patch"]["single"][2, :, 1]
              - result.probs["random_direction"]["single"][2, :, 1])
    counts = _resample_counts(len(values), 200, 3)
    means = torch.tensor([float((c * values).sum()) / len(values) for c in counts])
    assert row.value == pytest.approx(float(values.mean()), abs=1e-7)
    assert row.ci_low == pytest.approx(float(means.quantile(0.025)), abs=1e-6)
    assert row.ci_high == pytest.approx(float(means.quantile(0.975)), abs=1e-6)
    assert row.pairs == len(values)


def test_switch_layers_by_hand():
    # 3 layers, 3 pairs; measures: p_target, p_concept, p_both, p_language
    probs = torch.tensor([
        [[0.9, 0.0, 0.0, 0.1], [0.1, 0.0, 0.0, 0.8], [0.9, 0.0, 0.0, 0.0]],
        [[0.1, 0.0, 0.0, 0.8], [0.8, 0.0, 0.0, 0.1], [0.9, 0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.9, 0.0], [0.0, 0.0, 0.7, 0.2], [0.9, 0.0, 0.0, 0.0]]])
    found = switch_layers(probs, [4, 6, 8])
    # pair 0: language wins at 6 and 8 -> 6; concept only at 8 -> 8
    # pair 1: language wins at 4, loses at 6, wins at 8 -> 8 ("from which on"); concept 8
    # pair 2: never -> NaN
    assert found["language"][:2].tolist() == [6.0, 8.0] and found["language"][2].isnan()
    assert found["concept"][:2].tolist() == [8.0, 8.0] and found["concept"][2].isnan()


def test_the_switch_table_counts_defined_pairs(result):
    table = switch_table(result, bootstrap=50)
    assert set(table.switch) == {"language", "concept", "concept - language"}
    assert (table.defined <= table.pairs).all()
    row = table[(table.condition == "patch") & (table.switch == "language")].iloc[0]
    layers = switch_layers(result.probs["patch"]["single"], LAYERS)["language"]
    kept = layers[~layers.isnan()]
    assert row.defined == len(kept)
    if len(kept):
        assert row.value == pytest.approx(float(kept.mean()))


# ------------------------------------------------------------------------- hooks and models


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request, tokenizer, tmp_path_factory):
    fam = request.param
    directory = tmp_path_factory.mktemp(f"patch-family-{fam.name}")
    build_family(fam, len(tokenizer)).save_pretrained(directory)
    (tokenizer if fam.bos else without_bos(tokenizer)).save_pretrained(directory)
    return load_model(str(directory), device="cpu", dtype="float32")


PROMPTS = ['Deutsch: "Haus" - Français: "', 'Español: "perro" - English: "dog"\nEspañol: "sol']


def _logits(loaded):
    with torch.no_grad():
        inputs = loaded.tokenizer(PROMPTS[1], return_tensors="pt")
        return loaded.model(**inputs).logits


def test_hooks_are_gone_afterwards_on_every_family(family):
    patcher = Patcher(LogitLens(family))
    before = _logits(family)
    encoded = patcher.encode(PROMPTS)
    sets = [[[5], [6, 7]]] * 2
    own, base = patcher.run(encoded, 2, capture=[2], token_sets=sets)
    same = patcher.run(encoded, 2, token_sets=sets, patches={2: own[2]})[1]
    moved = patcher.run(encoded, 2, token_sets=sets, patches={2: own[2].flip(0)})[1]
    stopped, _ = patcher.run(encoded, 2, capture=[1, 2])  # stops after layer 2
    assert torch.equal(same, base) and not torch.equal(moved, base)
    # the capture pass runs the whole prompt; the reading pass, the last token on the prefix's
    # cache where the model takes positions: the same states up to rounding
    assert torch.allclose(stopped[2], own[2], atol=1e-5, rtol=1e-4)
    uncached = Patcher(LogitLens(family), reuse_prefix=False)
    plain_own, plain_base = uncached.run(encoded, 2, capture=[2], token_sets=sets)
    assert torch.equal(stopped[2], plain_own[2])
    assert torch.allclose(base, plain_base, atol=1e-6, rtol=1e-4)
    assert torch.equal(_logits(family), before)
    assert all(not b._forward_hooks for b in patcher.blocks)


def test_hooks_work_through_a_peft_adapter_and_are_removed(loaded):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(loaded.model), LoraConfig(r=4, target_modules=["q_proj"]))
    wrapped = type(loaded)(model, loaded.tokenizer, "peft")
    patcher = Patcher(LogitLens(wrapped))
    before = _logits(wrapped)
    encoded = patcher.encode(PROMPTS)
    sets = [[[5], [6, 7]]] * 2
    own, base = patcher.run(encoded, 2, capture=[3], token_sets=sets)
    assert torch.equal(patcher.run(encoded, 2, token_sets=sets, patches={3: own[3]})[1], base)
    assert not torch.equal(
        patcher.run(encoded, 2, token_sets=sets, patches={3: own[3].flip(0)})[1], base)
    assert torch.equal(_logits(wrapped), before)


# ------------------------------------------------------------------------------- bad input


def test_bad_settings_get_one_message():
    words = load_words()
    with pytest.raises(DataError, match="no Japanese"):
        check_setting(Setting("jpn_Jpan", "fra_Latn", "spa_Latn", "eng_Latn"), words, MEAN)
    with pytest.raises(DataError, match="at least 2 different source languages"):
        check_setting(SETTING, words, ["deu_Latn"])
    with pytest.raises(DataError, match="at least 2 different"):
        check_setting(SETTING, words, ["deu_Latn", "deu_Latn"])
    with pytest.raises(DataError, match="same language"):
        check_setting(Setting("deu_Latn", "fra_Latn", "deu_Latn", "fra_Latn"), words, MEAN)
    with pytest.raises(DataError, match="into itself"):
        check_setting(Setting("deu_Latn", "deu_Latn", "spa_Latn", "eng_Latn"), words, MEAN)
    with pytest.raises(DataError, match="output language"):
        check_setting(SETTING, words, ["deu_Latn", "fra_Latn"])


def test_colliding_first_token_sets_are_listed_and_left_out(tokenizer):
    # a tiny byte-level BPE: many words share their first token ("house"/"Haus" and so on)
    words = WordList(["eng_Latn", "deu_Latn", "fra_Latn"], {
        c: {"eng_Latn": c, "deu_Latn": d, "fra_Latn": f} for c, d, f in [
            ("cat", "Katze", "chat"), ("tomcat", "Kater", "matou"), ("house", "Haus", "maison"),
            ("dog", "Hund", "chien"), ("sun", "Sonne", "soleil"), ("tree", "Baum", "arbre")]})
    setting = Setting("eng_Latn", "fra_Latn", "eng_Latn", "deu_Latn")
    found, skipped = build_pairs(words, tokenizer, setting, ["eng_Latn", "deu_Latn"], shots=1)
    assert len(found) + len(skipped) == 6 and skipped
    assert any("collide" in row["reason"] for row in skipped)
    for pair in found:
        ids = [set(s) for s in pair.token_sets]
        assert all(not (ids[a] & ids[b]) for a in range(4) for b in range(a + 1, 4))
    for row in skipped:
        assert row["reason"].startswith("first-token sets collide") or "merges" in row["reason"]
    assert len(MEASURES) == 4


def test_a_layer_outside_the_blocks_is_refused(loaded, pairs):
    patcher = Patcher(LogitLens(loaded))
    for layer in (0, 5):
        with pytest.raises(DataError, match="out of range"):
            patch_experiment(patcher, pairs, [layer])


# ------------------------------------------------------------------------------- the command

FAST = ["--pair", "de", "fr", "es", "en", "--mean-languages", "de,es", "--concepts", "8",
        "--shots", "1", "--bootstrap", "50", "--batch-size", "4", "--no-static"]


def test_patch_command_writes_a_run_manifest_last(tiny_llama_dir, tmp_path, capsys):
    import json

    from layer_analysis.cli import main
    from layer_analysis.probe.patch_run import (
        compare_patch_runs,
        is_patch_run,
        read_patch_run,
    )

    runs = tmp_path / "runs"
    code = main(["patch", "--model", str(tiny_llama_dir), *FAST, "--layers", "2-4",
                 "--output", str(runs), "--name", "p"])
    assert code == 0, capsys.readouterr().err
    run = runs / "p"
    assert "switch layers" in capsys.readouterr().out and is_patch_run(run)
    manifest, table, switch = read_patch_run(run)
    names = [p.name for p in sorted(run.iterdir(), key=lambda p: p.stat().st_mtime_ns)
             if not p.name.startswith(".")]
    assert names[-1] == "manifest.json"
    assert {"patching.csv", "patch_switch.csv", "patch_pairs.csv", "report.html"} <= set(names)
    assert manifest["patch"]["layers"] == [2, 3, 4]
    assert all(c["self_patch_identical"] for c in manifest["patch"]["checks"].values())
    assert sorted(set(table.layer)) == [2, 3, 4] and set(table.measure) == set(MEASURES)
    assert {"value", "ci_low", "ci_high", "control", "condition", "mode"} <= set(table.columns)
    diff = table[(table.condition == "patch") & (table.control == "self")]
    assert len(diff) == 3 * 4 and (diff.ci_low <= diff.value + 1e-9).all()
    assert set(switch.switch) == {"language", "concept", "concept - language"}
    # a second model's run compares with the first
    code = main(["patch", "--model", str(tiny_llama_dir), *FAST, "--layers", "2-4",
                 "--output", str(runs), "--name", "q", "--seed", "0"])
    assert code == 0
    second = runs / "q"
    manifest_q = json.loads((second / "manifest.json").read_text())
    manifest_q["model"]["name"] = "other"
    (second / "manifest.json").write_text(json.dumps(manifest_q))
    assert main(["compare", str(run), str(second), "--output", str(tmp_path / "cmp"),
                 "--no-static"]) == 0
    assert (tmp_path / "cmp" / "report.html").exists()
    assert (tmp_path / "cmp" / "manifest.json").exists()
    compared = read_patch_run(run)[1]
    assert len(pd.read_csv(tmp_path / "cmp" / "patching.csv")) == 2 * len(compared)
    with pytest.raises(DataError, match="differs"):
        manifest_q["patch"]["layers"] = [2, 3]
        (second / "manifest.json").write_text(json.dumps(manifest_q))
        compare_patch_runs([run, second], tmp_path / "cmp2", static=False)


@pytest.mark.parametrize("args, message", [
    (["--pair", "ja", "fr", "es", "en"], "no Japanese"),
    (["--pair", "de", "fr", "es", "en", "--mean-languages", "de"], "at least 2 different"),
    (["--pair", "de", "fr", "de", "fr"], "same language"),
    (["--pair", "de", "fr", "es", "en", "--layers", "0"], "out of range"),
    (["--pair", "de", "fr", "es", "en", "--concepts", "6"], "6 concepts are too few"),
    (["--pair", "de", "fr", "es", "en", "--layers", "3-9"], "layers [5, 6, 7, 8, 9] out of range"),
])
def test_patch_bad_input_fails_before_the_model_loads(tiny_llama_dir, tmp_path, monkeypatch,
                                                      capsys, args, message):
    from layer_analysis.cli import main

    monkeypatch.setattr("layer_analysis.probe.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    code = main(["patch", "--model", str(tiny_llama_dir), *args, "--output",
                 str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("error:") == 1
    assert not (tmp_path / "runs").exists()


def test_dashboard_page_draws_patch_runs(tiny_llama_dir, tmp_path, monkeypatch):
    from test_app import app, charts, goto

    from layer_analysis.probe.patch_run import PatchRequest, execute_patch

    at = goto(app(tmp_path / "empty", monkeypatch), "patching")
    assert "No patch runs" in at.info[0].value
    execute_patch(PatchRequest(model=str(tiny_llama_dir), settings=[("de", "fr", "es", "en")],
                               mean_languages=["de", "es"], layers=(3, 4), limit=8, shots=1,
                               bootstrap=20, static=False, output=tmp_path / "runs", name="p"),
                  ["test"])
    at = goto(app(tmp_path / "runs", monkeypatch), "patching")
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert titles[0].startswith("Patching the source's last-token latent")
    assert titles[1].startswith("P(C in B′) by what is patched in")
    assert titles[-1].startswith("Mean latent minus single-language latent")
    assert any("switch" in m.value for m in at.markdown)


def test_la_patch_takes_the_command_s_options_and_gives_its_tables(tiny_llama_dir, tmp_path):
    import inspect

    import layer_analysis as la
    from layer_analysis.cli import build_parser, main

    parser = next(a for a in build_parser()._actions if a.dest == "command").choices["patch"]
    parameters = inspect.signature(la.patch).parameters
    for action in parser._actions:
        if action.dest == "help":
            continue
        negated = {"no_static": "static", "no_progress": "progress"}
        name = negated.get(action.dest, action.dest)
        default = (not action.default) if action.dest in negated else action.default
        assert name in parameters and parameters[name].default == default, name
    common = dict(model=str(tiny_llama_dir), pair=[("de", "fr", "es", "en")],
                  mean_languages="de,es", layers=[3, 4], concepts=8, shots=1, bootstrap=20,
                  static=False, output=tmp_path, progress=False)
    result = la.patch(**common, name="api")
    assert main(["patch", "--model", str(tiny_llama_dir), "--pair", "de", "fr", "es", "en",
                 "--mean-languages", "de,es", "--layers", "3,4", "--concepts", "8", "--shots", "1",
                 "--bootstrap", "20", "--no-static", "--output", str(tmp_path),
                 "--name", "cli"]) == 0
    cli = la.load(tmp_path / "cli")
    assert result.kind == cli.kind == "patch" and set(result.tables) == {"patching", "switch",
                                                                        "pairs"}
    pd.testing.assert_frame_equal(result.table, cli.table)
    pd.testing.assert_frame_equal(result.tables["switch"], cli.tables["switch"])
    assert set(result.figures()) >= {"patch_1", "controls_1", "mean_vs_single"}
