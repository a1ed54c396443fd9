"""``neurons``, ``intervene`` and ``compare`` of neuron runs through the CLI on a tiny model:
what they write agrees with the library recomputed by hand; bad input is one message, exit 2,
nothing written."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from layer_analysis.cli import main
from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.interventions import deactivated
from layer_analysis.probe.languages import ENGLISH
from layer_analysis.probe.models import load_model
from layer_analysis.probe.neurons import LapeThresholds, lape, random_like, sentence_nll


def test_neurons_run_holds_lape_of_its_probabilities_and_the_counts(intervention_runs):
    run = intervention_runs / "neurons-base"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "neurons"
    assert manifest["neurons"]["languages"] == ["eng_Latn", "deu_Latn", "ell_Grek"]
    tensors = load_file(str(run / "neurons.safetensors"))
    masks, probs = tensors["specific"].bool(), tensors["probabilities"]
    assert masks.shape == (3, 4, 128) and probs.shape == (4, 128, 3)
    assert torch.equal(masks, lape(probs, LapeThresholds()))
    assert ((probs >= 0) & (probs <= 1)).all()
    counts = pd.read_csv(run / "neuron_counts.csv")
    assert counts.neurons.sum() == int(masks.sum())
    overlap = pd.read_csv(run / "neuron_overlap.csv")
    diagonal = overlap[overlap.language_a == overlap.language_b].set_index("language_a").shared
    assert diagonal.to_dict() == {x: int(masks[i].sum()) for i, x in
                                  enumerate(manifest["neurons"]["languages"])}


def test_deactivation_rows_equal_a_recomputation(intervention_runs, tiny_llama_dir):
    run = intervention_runs / "neurons-base"
    table = pd.read_csv(run / "deactivation.csv")
    languages = ["eng_Latn", "deu_Latn", "ell_Grek"]
    masks = load_file(str(run / "neurons.safetensors"))["specific"].bool()
    first = next(i for i in range(3) if masks[i].any())
    language = languages[first]
    held_out = load_parallel("flores-devtest").select(languages, 6)
    text = {s.language: s.sentences for s in held_out.sides.values()}
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig())
    evaluated = languages[(first + 1) % 3]
    base = sentence_nll(extractor, text[evaluated])
    with deactivated(extractor.parts, masks[first]):
        off = sentence_nll(extractor, text[evaluated])
    control = random_like(masks[first], first, exclude=masks.any(0))
    with deactivated(extractor.parts, control):
        random_off = sentence_nll(extractor, text[evaluated])
    rows = table[(table.deactivated == language) & (table.evaluated == evaluated)
                 ].set_index("control")
    assert rows.loc["language", "delta_nll"] == pytest.approx(float((off - base).mean()), abs=1e-5)
    assert rows.loc["random", "delta_nll"] == pytest.approx(float((random_off - base).mean()),
                                                            abs=1e-5)
    assert rows.loc["language", "base_ppl"] == pytest.approx(math.exp(float(base.mean())), rel=1e-5)
    for row in rows.itertuples():
        assert row.ci_low <= row.delta_nll <= row.ci_high


def test_compare_neuron_runs_counts_changes(intervention_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(intervention_runs / "neurons-base"),
                 str(intervention_runs / "neurons-x-de"), "--output", str(out),
                 "--no-static"]) == 0
    changes = pd.read_csv(out / "neuron_changes.csv")
    before = load_file(str(intervention_runs / "neurons-base" / "neurons.safetensors"))
    after = load_file(str(intervention_runs / "neurons-x-de" / "neurons.safetensors"))
    a, b = before["specific"].bool(), after["specific"].bool()
    assert changes.kept.sum() == int((a & b).sum())
    assert changes.appeared.sum() == int((b & ~a).sum())
    assert changes.vanished.sum() == int((a & ~b).sum())
    assert (out / "report.html").exists()
    assert main(["compare", str(intervention_runs / "neurons-base"),
                 str(intervention_runs / "steer-de"), "--output", str(tmp_path / "bad")]) == 2
    assert "not a finished neurons run" in capsys.readouterr().err


def test_steering_run_records_its_vector_layer_and_every_setting(intervention_runs,
                                                                 tiny_llama_dir):
    run = intervention_runs / "steer-de"
    manifest = json.loads((run / "manifest.json").read_text())["intervention"]
    curve = manifest["alignment_curve"]
    assert manifest["layer"] == manifest["best_layer"] == 1 + max(range(4),
                                                                  key=lambda i: curve[i + 1])
    fit = load_parallel("default").select(["deu_Latn", ENGLISH], 20)
    side = {s.language: s.sentences for s in fit.sides.values()}
    extractor = Extractor(load_model(str(tiny_llama_dir), device="cpu", dtype="float32"),
                          ExtractionConfig())
    layer = manifest["layer"]
    vector = (extractor.extract(side["deu_Latn"])[0, layer].mean(0)
              - extractor.extract(side[ENGLISH])[0, layer].mean(0))
    assert manifest["vector_norm"] == pytest.approx(float(vector.norm()), rel=1e-4)
    table = pd.read_csv(run / "interventions.csv")
    assert set(zip(table.control, table.strength, strict=True)) == {
        ("none", 0.0), ("vector", 1.0), ("random", 1.0)}
    assert set(table.measure) == {"share_deu", "empty", "chrf++"}
    assert (table[table.control == "none"].delta == 0).all()
    assert ((table.ci_low <= table.value + 1e-9) & (table.value <= table.ci_high + 1e-9)).all()
    generations = (run / "generations.jsonl").read_text().splitlines()
    assert len(generations) == 3 * 4


def test_map_run_measures_translation_into_english_and_xquad(intervention_runs):
    table = pd.read_csv(intervention_runs / "map-de" / "interventions.csv")
    assert set(table.control) == {"none", "map", "shuffled"}
    assert set(table.measure) == {"share_eng", "empty", "chrf++", "xquad_f1"}
    manifest = json.loads((intervention_runs / "map-de" / "manifest.json").read_text())
    assert manifest["intervention"]["ridge"] > 0


@pytest.mark.parametrize("args, message", [
    (["neurons", "--languages", "en"], "at least two different languages"),
    (["neurons", "--languages", "en,de", "--data", "default", "--eval-data", "default"],
     "repeats sentences of --data"),
    (["neurons", "--languages", "en,de", "--data", "default", "--top-rate", "1.5"],
     "--top-rate: must be in (0, 1)"),
    (["neurons", "--languages", "en,xx"], "xx"),
    (["intervene", "steer", "--language", "en"], "choose another --language"),
    (["intervene", "map", "--language", "de", "--fit-data", "flores-devtest"],
     "repeats sentences of --fit-data"),
    (["intervene", "steer", "--language", "de", "--strengths", "1,a"],
     "--strengths: expected a number, got 'a'"),
    (["intervene", "steer", "--language", "de", "--strengths", "nan"],
     "--strengths: must be a finite number"),
    (["intervene", "steer", "--language", "de", "--fit-data", "default", "--layer", "9"],
     "layers 1..4"),
])
def test_bad_input_is_one_message_and_nothing_written(args, message, tiny_llama_dir, tmp_path,
                                                      capsys, shared_data):
    out = tmp_path / "runs"
    assert main([*args, "--model", str(tiny_llama_dir), "--output", str(out), "--device", "cpu",
                 "--no-static"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not out.exists() or not any(out.rglob("manifest.json"))


def test_a_strength_that_empties_the_outputs_is_refused(tiny_llama_dir, tmp_path, capsys,
                                                        monkeypatch, shared_data):
    from layer_analysis.probe import intervene_run

    real = intervene_run.generate

    def silent_when_steered(loaded, prompts, *args, **kwargs):
        hooked = any(block._forward_hooks for block in loaded.model.model.layers)
        return [""] * len(prompts) if hooked else real(loaded, prompts, *args, **kwargs)

    monkeypatch.setattr(intervene_run, "generate", silent_when_steered)
    out = tmp_path / "runs"
    assert main(["intervene", "steer", "--language", "de", "--model", str(tiny_llama_dir),
                 "--fit-data", "default", "--fit-sentences", "10", "--eval-sentences", "3",
                 "--max-new-tokens", "4", "--strengths", "50", "--output", str(out),
                 "--device", "cpu", "--no-static"]) == 2
    assert "strength 50 gives degenerate outputs (3 of 3 empty)" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("manifest.json"))


def test_outputs_in_the_target_language_count_as_switched(tiny_llama_dir, tmp_path, monkeypatch,
                                                          shared_data):
    """The language share compares lingua's answer with the target in lingua's own codes: a
    model that answers with the German references scores a share of 1 and chrF++ 100."""
    from layer_analysis.probe import intervene_run

    references = {}

    def answer_with_references(loaded, prompts, *args, **kwargs):
        return [references[p] for p in prompts]

    monkeypatch.setattr(intervene_run, "generate", answer_with_references)
    request = intervene_run.InterventionRequest(
        kind="steer", language="de", model=str(tiny_llama_dir), fit_data="default",
        fit_sentences=10, eval_sentences=5, strengths=(1.0,), bootstrap=20, device="cpu",
        output=tmp_path, name="s", static=False)
    prepared = intervene_run.check_intervention_request(request)
    evaluator = intervene_run.Evaluator(
        load_model(str(tiny_llama_dir), device="cpu", dtype="float32"), prepared, request)
    references.update(zip(evaluator.prompts, prepared.references, strict=True))
    from contextlib import nullcontext

    outcome = evaluator.measure("no intervention", nullcontext)
    assert float(outcome.shares["share_deu"].mean()) == 1.0
    assert outcome.chrf == pytest.approx(100.0)


def test_neuron_runs_compare_by_the_content_of_their_data(intervention_runs, tmp_path, capsys):
    """The same sentences named differently compare; different sentences under one name do not."""
    import shutil

    runs = [tmp_path / "base", tmp_path / "x-de"]
    for name, copy in zip(("neurons-base", "neurons-x-de"), runs, strict=True):
        shutil.copytree(intervention_runs / name, copy)
    path = runs[1] / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["neurons"]["data"] = "/the/same/sentences/as/a/path"
    path.write_text(json.dumps(manifest))
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "c1"),
                 "--no-static"]) == 0
    manifest["neurons"]["fingerprint"] = "0" * 64
    path.write_text(json.dumps(manifest))
    assert main(["compare", *map(str, runs), "--output", str(tmp_path / "c2"),
                 "--no-static"]) == 2
    assert "data (by content)" in capsys.readouterr().err


def test_neurons_say_and_record_what_max_length_cuts(tiny_llama_dir, tmp_path, capsys):
    from layer_analysis.probe.neuron_run import NeuronRequest, execute_neurons

    request = NeuronRequest(model=str(tiny_llama_dir), device="cpu", dtype="float32",
                            output=tmp_path, name="cut", languages=["en", "de"], data="default",
                            sentences=8, eval_sentences=0, max_length=3, static=False)
    run = execute_neurons(request, ["neurons"])
    assert "truncates" in capsys.readouterr().err
    truncation = json.loads((run / "manifest.json").read_text())["neurons"]["truncation"]
    assert truncation["max_length"] == 3 and truncation["share"] > 0.05
