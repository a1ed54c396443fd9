"""Training: data, loss mask, response-only head, the loop (learning, save/reload, resume) on a
tiny random LLaMA, and the CLI's errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from layer_analysis.cli import main
from layer_analysis.probe import generation
from layer_analysis.probe.errors import DataError, ModelError, StoreError
from layer_analysis.probe.models import load_model
from layer_analysis.probe.prompts import TRANSLATION_INSTRUCTIONS, alpaca_prompt, translation_instruction
from layer_analysis.train import evaluate, loop
from layer_analysis.train.encode import IGNORE, collate, encode
from layer_analysis.train.loop import CHECKPOINTS, ResponseOnlyLM, TrainConfig, lora_targets, train
from layer_analysis.train.mixture import build_mixture, parse_spec, recipe_spec
from layer_analysis.train.records import Record, Report, read_alpaca, translation_records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


@pytest.fixture
def memorisable(tmp_path) -> Path:
    return write_jsonl(tmp_path / "tiny.jsonl", [
        {"instruction": "Say the colour of the sky.", "input": "", "output": "blue"},
        {"instruction": "Repeat the word.", "input": "river", "output": "river river"},
        {"instruction": "Count to three.", "input": "", "output": "one two three"},
        {"instruction": "Name a fruit.", "input": "", "output": "apple"},
    ] * 4)


def test_translation_instructions_rotate_for_training_and_stay_fixed_for_evaluation():
    assert len(TRANSLATION_INSTRUCTIONS) >= 10
    assert translation_instruction("eng_Latn", "ell_Grek") == \
        "Translate the following sentences from English to Greek."
    used = {translation_instruction("eng_Latn", "zho_Hans", i) for i in range(24)}
    assert len(used) == len(TRANSLATION_INSTRUCTIONS)
    assert "### Input:\nHallo" in alpaca_prompt("Translate.", "Hallo")
    assert "### Input" not in alpaca_prompt("Name a fruit.")


def test_loss_mask_covers_exactly_the_response(tokenizer):
    record = Record("Translate to German.", "The cat sleeps.", "Die Katze schläft.", "t:0")
    [example] = encode([record], tokenizer, 512, Report())
    labelled = [t for t in example.labels if t != IGNORE]
    expected = tokenizer(record.output, add_special_tokens=False).input_ids
    assert labelled == [*expected, tokenizer.eos_token_id]
    first = example.labels.index(labelled[0])
    assert all(t == IGNORE for t in example.labels[:first])
    assert example.input_ids[first:] == labelled  # labels align with the response tokens
    assert tokenizer.decode(example.input_ids[:first]).endswith("### Response:\n")
    batch = collate([example, encode([Record("Hi.", "", "Yo", "t:1")], tokenizer, 512,
                                     Report())[0]], tokenizer.pad_token_id)
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == IGNORE).all()


def test_response_only_head_gives_the_full_head_loss(tiny_llama_dir, tokenizer):
    model = load_model(str(tiny_llama_dir), device="cpu", dtype="float32").model
    records = [Record("Say it.", "", "hello there", "a:0"),
               Record("Translate.", "Guten Morgen, wie geht es?", "Good morning", "a:1")]
    batch = collate(encode(records, tokenizer, 512, Report()), tokenizer.pad_token_id)
    full = model(**batch).loss
    assert torch.allclose(ResponseOnlyLM(model)(**batch)["loss"], full, atol=1e-5)
    assert lora_targets(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                   "up_proj", "v_proj"]


def test_spec_parsing_round_trips_and_rejects_nonsense():
    spec = parse_spec(" alpaca_en[:2000] + alpaca_zh[10:20]+translation_en-zh ")
    assert str(spec) == "alpaca_en[:2000] + alpaca_zh[10:20] + translation_en-zh"
    assert parse_spec(str(spec)) == spec
    assert spec.components[1].size == 10
    for bad, message in (("alpaca_en +", "empty component"), ("alpaca_en[a:b]", "cannot read"),
                         ("alpaca_en[5:2]", "ends before"), ("", "empty component")):
        with pytest.raises(DataError, match=message):
            parse_spec(bad)
    with pytest.raises(DataError, match="unknown mixture component"):
        build_mixture("wikipedia_en[:5]")
    with pytest.raises(DataError, match="unknown language"):
        build_mixture("alpaca_klingon[:5]")


def test_recipes_as_specs():
    assert recipe_spec("coit", ["zh"], 100, 300) == \
        "alpaca_en[:100] + alpaca_zh[:100] + translation_en-zh[:300]"
    muit = recipe_spec("muit", ["Arabic", "el"], 50, 80)
    assert muit == ("alpaca_en[:50] + alpaca_ar[:50] + translation_en-ar[:80] + alpaca_el[:50]"
                    " + translation_en-el[:80]")
    with pytest.raises(DataError, match="exactly one"):
        recipe_spec("coit", ["zh", "de"], 1, 1)
    with pytest.raises(DataError, match="English is always"):
        recipe_spec("muit", ["en", "de"], 1, 1)


def test_bad_records_are_counted_by_reason(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"instruction": "Fine.", "input": None, "output": "ok"},
        {"instruction": "No output."},
        {"instruction": "Empty output.", "input": "", "output": "  "},
        {"instruction": "", "input": "", "output": "no instruction"},
        {"instruction": "Too long.", "input": "word " * 400, "output": "x"},
        ["not", "a", "record"],
        {"instruction": 5, "output": "a number is no instruction"},
    ])
    report = Report()
    records = read_alpaca(path, "bad", report)
    assert [r.origin for r in records] == ["bad:0", "bad:4"]
    assert encode(records, tokenizer, 160, report)[0].origin == "bad:0"
    assert report.kept["bad"] == 1
    assert report.rejected == {("bad", "output missing"): 1, ("bad", "not an object"): 1,
                               ("bad", "instruction not text"): 1,
                               ("bad", "empty output"): 1, ("bad", "empty instruction"): 1,
                               ("bad", "over 160 tokens"): 1}
    assert report.lines() == ["bad: 1 kept (1 empty instruction, 1 empty output, 1 instruction "
                              "not text, 1 not an object, 1 output missing, 1 over 160 tokens)"]
    pairs = translation_records(["a", "", "c"], ["x", "y", ""], "eng_Latn", "deu_Latn", "t",
                                report)
    assert len(pairs) == 1 and report.rejected[("t", "empty side")] == 2
    broken = tmp_path / "broken.json"
    broken.write_text('[{"instruction": "a", ')
    with pytest.raises(DataError, match="not valid JSON"):
        read_alpaca(broken, "x", Report())


def test_mixture_slices_and_shuffles_with_provenance(memorisable):
    mixture = build_mixture(f"{memorisable}[:4] + {memorisable}[12:]", seed=1)
    origins = sorted(r.origin.rsplit(":", 1)[1] for r in mixture.records)
    assert origins == sorted(["0", "1", "2", "3", "12", "13", "14", "15"])
    again = build_mixture(f"{memorisable}[:4] + {memorisable}[12:]", seed=1)
    assert [r.origin for r in again.records] == [r.origin for r in mixture.records]
    assert build_mixture(f"{memorisable}[:100]").notes  # asked for more than the file has


def config(tmp_path: Path, model: Path, data: Path, **kwargs) -> TrainConfig:
    defaults = dict(mixture=f"{data}", output=tmp_path / "out", model=str(model), lr=5e-3,
                    batch_size=4, max_steps=12, warmup=0.1, lora_r=8, lora_dropout=0.0,
                    log_every=1, save_every=100, device="cpu", progress=False)
    return TrainConfig(**{**defaults, **kwargs})


def log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]


# LoRA on a random tiny model learns slowly (a plain PyTorch loop shows the same); full
# fine-tuning memorises the batch.
@pytest.mark.parametrize(("full", "lr", "factor"), [(False, 1e-2, 0.92), (True, 1e-2, 0.5)])
def test_training_learns_saves_and_reloads_exactly(tmp_path, tiny_llama_dir, memorisable, full,
                                                   lr, factor):
    result = train(config(tmp_path, tiny_llama_dir, memorisable, max_steps=24, full=full, lr=lr))
    losses = [e["loss"] for e in log(tmp_path / "out")]
    assert sum(losses[-3:]) / 3 < factor * sum(losses[:3]) / 3
    assert result.summary["steps"] == 24 and result.summary["examples"] == 16
    assert (tmp_path / "out" / ("config.json" if full else "adapter_config.json")).exists()
    reloaded = load_model(str(tmp_path / "out"), device="cpu", dtype="float32")  # base + adapter
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.equal(reloaded.model(ids).logits, result.model(ids).logits)
        base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32").model
        assert not torch.allclose(base(ids).logits, result.model(ids).logits)
    rates = [e["lr"] for e in log(tmp_path / "out")]
    assert rates[:3] == pytest.approx([lr / 3, 2 * lr / 3, lr])  # 3 warm-up steps (10 % of 24)
    assert rates[-1] == pytest.approx(0.0) and all(a >= b for a, b in itertools.pairwise(rates[2:]))
    with pytest.raises(DataError, match="finished training run"):
        train(config(tmp_path, tiny_llama_dir, memorisable))


def test_resume_continues_the_schedule(tmp_path, tiny_llama_dir, memorisable, monkeypatch):
    whole = train(config(tmp_path / "a", tiny_llama_dir, memorisable, save_every=5))
    original = loop._checkpoint

    def interrupt(accelerator, output, step, *args):
        original(accelerator, output, step, *args)
        if step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_checkpoint", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5))
    monkeypatch.setattr(loop, "_checkpoint", original)
    with pytest.raises(DataError, match="pass --resume"):
        train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5))
    with pytest.raises(DataError, match="lr was"):
        train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5, lr=1e-3,
                     resume=True))
    original_text = memorisable.read_text()  # the same spec, the file's records changed
    memorisable.write_text(original_text.replace("blue", "green"))
    with pytest.raises(DataError, match="other training data"):
        train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5, resume=True))
    memorisable.write_text(original_text)
    resumed = train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5,
                           resume=True))
    saved = {p.name for p in (tmp_path / "b" / "out" / CHECKPOINTS).rglob("*") if p.is_file()}
    assert saved == {"state.safetensors", "state.json", "rng-0.safetensors", "trainer_state.json",
                     "checksums.json"}
    a, b = log(tmp_path / "a" / "out"), log(tmp_path / "b" / "out")
    assert [e["step"] for e in b] == list(range(1, 13))
    assert [e["lr"] for e in b] == pytest.approx([e["lr"] for e in a])
    assert [e["loss"] for e in b[5:]] == pytest.approx([e["loss"] for e in a[5:]], rel=1e-4)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.allclose(whole.model(ids).logits, resumed.model(ids).logits, atol=1e-5)


def test_train_cli_errors(tmp_path):
    assert main(["train", "--output", str(tmp_path / "o")]) == 2
    assert main(["train", "--recipe", "coit", "--output", str(tmp_path / "o")]) == 2
    assert main(["train", "--mixture", "alpaca_en[:", "--output", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--mixture", "no_such_component[:10]"], "no_such_component"),
    (["--mixture", "alpaca_en[:4]", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--mixture", "alpaca_en[:4]", "--lr", "-1"], "--lr: must be in (0, 1], got -1.0"),
])
def test_training_input_is_checked_before_the_model_loads(tmp_path, tiny_llama_dir, monkeypatch,
                                                         capsys, extra, message):
    loads = []
    monkeypatch.setattr(loop, "load_model", lambda *a, **k: loads.append(1))
    assert main(["train", *extra, "--model", str(tiny_llama_dir), "--output",
                 str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err and loads == []


# ------------------------------------------------------------------------------- evaluation


def squad_reference(prediction: str, gold: str) -> tuple[float, float]:
    """The SQuAD v1.1 evaluation script's normalisation, exact match and F1, as published."""
    import collections
    import re
    import string

    def normalize(s: str) -> str:
        s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
        return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())

    p, g = normalize(prediction).split(), normalize(gold).split()
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    f1_score = 0.0 if same == 0 else 2 * (same / len(p)) * (same / len(g)) / (same / len(p) + same / len(g))
    return float(normalize(prediction) == normalize(gold)), f1_score


def test_scorers_match_sacrebleu_and_the_squad_script():
    import sacrebleu

    hypotheses = ["The cat sat on the mat.", "Es regnet heute.", "völlig anders"]
    references = ["The cat is sitting on the mat.", "Es regnet heute.", "ganz und gar anders"]
    assert generation.chrf_pp(hypotheses, references) == pytest.approx(
        sacrebleu.corpus_chrf(hypotheses, [references], word_order=2).score)
    assert generation.chrf_pp(["Es regnet heute."], ["Es regnet heute."]) == pytest.approx(100)
    assert generation.chrf_pp(["xyz"], ["abc"]) == pytest.approx(0)
    assert generation.spbleu(hypotheses, references) is None or 0 < generation.spbleu(
        hypotheses, references) < 100  # None where the FLORES-200 tokenizer cannot be fetched
    cases = [("The Eiffel Tower!", ["eiffel tower"], 1.0, 1.0, 1.0),
             ("in the year 1889", ["1889"], 0.0, 0.5, 1.0),
             ("Paris", ["London", "paris."], 1.0, 1.0, 1.0),
             ("a b c d", ["c d e"], 0.0, 2 / 3, 0.0),  # "a" is an article: b c d vs c d e
             ("nothing", ["1889"], 0.0, 0.0, 0.0)]
    for prediction, answers, em, f1, contains in cases:
        assert generation.exact_match(prediction, answers) == em
        assert generation.f1(prediction, answers) == pytest.approx(f1)
        assert generation.contains_answer(prediction, answers) == contains
        reference = [squad_reference(prediction, a) for a in answers]
        assert (em, pytest.approx(f1)) == (max(r[0] for r in reference), max(r[1] for r in reference))


@pytest.mark.parametrize(("prediction", "answers", "language", "squad", "mlqa"), [
    # (prediction, gold, language, (EM, F1) of SQuAD v1.1, (EM, F1) of MLQA), by hand
    ("北京市", ["北京"], "zh", (0.0, 0.0), (0.0, 0.8)),  # characters: 2 of 3 predicted, 2 of 2
    ("北京。", ["北京"], "zh", (0.0, 0.0), (1.0, 1.0)),  # "。" is punctuation, not ASCII
    ("1889年", ["1889"], "zh", (0.0, 0.0), (0.0, 2 / 3)),  # 1889 | 年 vs 1889
    ("die Stadt", ["Stadt"], "de", (0.0, 2 / 3), (1.0, 1.0)),  # a German article
    ("«Αθήνα»", ["Αθήνα"], "el", (0.0, 0.0), (1.0, 1.0)),  # guillemets; no Greek articles
    ("The Eiffel Tower!", ["eiffel tower"], "en", (1.0, 1.0), (1.0, 1.0)),
    ("a b c d", ["c d e"], "en", (0.0, 2 / 3), (0.0, 2 / 3)),
])
def test_xquad_scores_as_squad_and_as_mlqa(prediction, answers, language, squad, mlqa):
    assert (generation.exact_match(prediction, answers),
            generation.f1(prediction, answers)) == pytest.approx(squad)
    assert (generation.exact_match(prediction, answers, language),
            generation.f1(prediction, answers, language)) == pytest.approx(mlqa)


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    side = loaded.tokenizer.padding_side
    prompts = [alpaca_prompt("Translate.", s) for s in
               ("Hello.", "A much longer sentence about rivers and mountains.", "Yes", "Why not?")]
    batched = generation.generate(loaded, prompts, max_new_tokens=6, batch_size=4)
    single = [generation.generate(loaded, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and any(batched)
    whole = generation.generate(loaded, prompts, max_new_tokens=6, batch_size=4, one_line=False)
    assert batched == [w.strip().split("\n")[0].strip() for w in whole]  # stopping keeps line 1
    assert loaded.tokenizer.padding_side == side  # generation pads on the left, then restores


def test_evaluate_cli_writes_scores_and_predictions(tmp_path, tiny_llama_dir, shared_data):
    out = tmp_path / "eval" / "scores.json"
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--languages", "de,zh", "--limit", "3",
                 "--max-new-tokens", "4", "--device", "cpu", "--output", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert [s["target"] for s in scores] == ["deu_Latn", "zho_Hans"]
    assert all(s["sentences"] == 3 and 0 <= s["chrf++"] <= 100 for s in scores)
    assert all(s["model"]["name"] == str(tiny_llama_dir) for s in scores)  # who was evaluated
    predictions = out.with_suffix(".predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 6 and json.loads(predictions[0])["reference"]
    xquad = tmp_path / "xquad.json"
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--task", "xquad", "--languages",
                 "el", "--limit", "2", "--max-new-tokens", "3", "--device", "cpu", "--output",
                 str(xquad)]) == 0
    [s] = json.loads(xquad.read_text())
    assert s["questions"] == 2 and s["language"] == "el"
    assert all(0 <= s[k] <= 100 for k in ("em", "f1", "em_mlqa", "f1_mlqa", "contains"))
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--task", "xquad", "--languages",
                 "ja", "--device", "cpu"]) == 2  # XQuAD has no Japanese


def test_evaluate_checks_every_language_first_and_keeps_finished_ones(tmp_path, tiny_llama_dir,
                                                                     shared_data, monkeypatch,
                                                                     capsys):
    from layer_analysis.probe import models

    loads = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(1))
    out = tmp_path / "scores.json"
    for languages, message in (("zh,xx", "unknown language"), ("zh,zh", "twice"),
                               ("zh,pt", "has no por_Latn")):
        assert main(["evaluate", "--model", str(tiny_llama_dir), "--languages", languages,
                     "--device", "cpu", "--output", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert loads == [] and not out.exists()  # refused before any model was loaded
    monkeypatch.undo()

    real = evaluate.evaluate_translation

    def fail_on_greek(loaded, language, *args, **kwargs):
        if language == "el":
            raise evaluate.DataError("generation failed for el")
        return real(loaded, language, *args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_translation", fail_on_greek)
    assert main(["evaluate", "--model", str(tiny_llama_dir), "--languages", "de,el", "--limit",
                 "2", "--max-new-tokens", "2", "--device", "cpu", "--output", str(out)]) == 2
    assert [s["target"] for s in json.loads(out.read_text())] == ["deu_Latn"]


# ------------------------------------------------------------------------------ multi-process


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_saves_once(tmp_path, tiny_llama_dir, memorisable):
    """The accelerate/torchrun path: two CPU processes (gloo), one adapter, one log."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", "-m", "layer_analysis", "train", "--mixture", str(memorisable), "--model",
               str(tiny_llama_dir), "--output", str(out), "--batch-size", "2", "--max-steps", "3",
               "--log-every", "1", "--save-every", "2", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "training.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert [e["step"] for e in log(out)] == [1, 2, 3]  # written by the main process only
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert {p.name for p in (out / "checkpoints" / "step-3").iterdir()} == {
        "state.safetensors", "state.json", "rng-0.safetensors", "rng-1.safetensors",
        "trainer_state.json", "checksums.json"}  # no pickles
    assert done.stdout.count("trainable parameters") == 1
    reloaded = load_model(str(out), device="cpu", dtype="float32")
    assert reloaded.name.endswith("+ddp")


@pytest.mark.slow
def test_two_processes_stop_alike_when_training_diverges(tmp_path, tiny_llama_dir, memorisable):
    """The divergence verdict is reduced over the processes: both stop at one step, none
    hangs, nothing final is written."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    # the command line refuses --lr above 1, so the library is asked for an absurd rate
    script = tmp_path / "diverge.py"
    script.write_text(
        "import sys\n"
        "from layer_analysis.probe.errors import ProbeError\n"
        "from pathlib import Path\n"
        "from layer_analysis.train.loop import TrainConfig, train\n"
        f"config = TrainConfig(mixture={str(memorisable)!r}, output=Path({str(out)!r}), "
        f"model={str(tiny_llama_dir)!r}, batch_size=2, max_steps=6, lr=1e30, warmup=0, "
        "log_every=1, save_every=1, device='cpu', progress=False)\n"
        "try:\n    train(config)\n"
        "except ProbeError as exc:\n    print(f'error: {exc}', file=sys.stderr); sys.exit(2)\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and "training diverged at step 2" in done.stderr
    assert not (out / "training.json").exists() and not (out / "adapter_config.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]


def test_shipped_launch_configs_are_valid_accelerate_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    launch = Path(__file__).resolve().parents[1] / "train" / "launch"
    ddp = load_config_from_file(str(launch / "ddp.yaml"))
    fsdp = load_config_from_file(str(launch / "fsdp.yaml"))
    assert (ddp.distributed_type.value, fsdp.distributed_type.value) == ("MULTI_GPU", "FSDP")
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_hub_component_reads_alpaca_rows_or_fails_clearly(monkeypatch):
    from layer_analysis.train import mixture

    rows = [{"instruction": "Name a colour.", "input": "", "output": "red"},
            {"instruction": "Count.", "input": None, "output": ""},
            {"instruction": "Add.", "input": "1 2", "output": "3"}]
    asked = []
    monkeypatch.setattr(mixture, "hub_table",
                        lambda name, split, config: asked.append((name, split, config)) or rows)
    built = build_mixture("hf:tatsu-lab/alpaca@train[:3]")
    assert asked == [("tatsu-lab/alpaca", "train", None)]
    assert sorted(r.origin for r in built.records) == ["hf:tatsu-lab/alpaca@train:0",
                                                       "hf:tatsu-lab/alpaca@train:2"]
    assert built.report.rejected == {("hf:tatsu-lab/alpaca@train", "empty output"): 1}
    monkeypatch.undo()
    with pytest.raises(DataError, match="dataset"):  # offline here: one clear error
        build_mixture("hf:no-such-owner/no-such-alpaca@train[:3]")


def test_language_identifier_on_known_sentences(monkeypatch):
    from layer_analysis.probe.errors import DataError as Error
    from layer_analysis.probe.langid import check_identifiable, identify, off_target

    texts = ["Der Hund schläft auf dem Sofa, weil es draußen regnet.",
             "Le chien dort sur le canapé parce qu'il pleut dehors.",
             "狗在沙发上睡觉，因为外面在下雨。",
             "Ο σκύλος κοιμάται στον καναπέ επειδή βρέχει έξω.",
             "الكلب ينام على الأريكة لأن الجو ممطر في الخارج.",
             "कुत्ता सोफे पर सो रहा है क्योंकि बाहर बारिश हो रही है।",
             ""]
    assert identify(texts) == ["deu", "fra", "zho", "ell", "ara", "hin", None]
    rate = off_target([*texts[:3], "The dog sleeps on the sofa because it is raining outside."],
                      "de")
    assert rate["off_target_rate"] == 0.75 and rate["unidentified"] == 0
    assert off_target(["", "Der Hund schläft."], "deu_Latn")["unidentified"] == 1
    from layer_analysis.probe import langid
    from layer_analysis.probe.languages import _LANGUAGES

    for language in _LANGUAGES:  # every language the suite names (Standard Arabic: lingua's ara)
        check_identifiable(language)
    monkeypatch.setitem(langid.MACRO, "deu", "xxx")
    with pytest.raises(Error, match="does not know German"):
        check_identifiable("de")


def test_training_parts_alone(tiny_llama_dir, tmp_path):
    """The loop's parts, each on its own: output checks, what trains, resume settings, logging."""
    config = TrainConfig(mixture="x", output=tmp_path / "out", model=str(tiny_llama_dir))
    assert loop.check_output(config) == loop.NEW  # nothing there: fine
    resume = TrainConfig(**{**config.__dict__, "resume": True})
    with pytest.raises(DataError, match="no checkpoint to resume"):
        loop.check_output(resume)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train_log.jsonl").write_text("")  # stopped before its first checkpoint
    assert loop.check_output(config) == loop.NEW
    with pytest.raises(DataError, match="no checkpoint to resume"):
        loop.check_output(resume)
    (tmp_path / "out" / "training.json").write_text('{"config": {}, "model": "m", "steps": 1}')
    with pytest.raises(DataError, match="finished training run"):
        loop.check_output(config)
    assert loop.check_output(resume) == loop.FINISHED  # nothing to do, said by train
    for bad in ({"lr": float("inf")}, {"lr": float("nan")}, {"epochs": float("inf")},
                {"lora_dropout": 1.5}, {"weight_decay": float("nan")}):
        with pytest.raises(DataError, match="need"):
            TrainConfig(**{**config.__dict__, **bad})
    model = load_model(str(tiny_llama_dir), device="cpu", dtype="float32").model
    total = sum(p.numel() for p in model.parameters())
    lora, what = loop.make_trainable(model, config)
    assert what.startswith("LoRA r=") and 0 < sum(
        p.numel() for p in lora.parameters() if p.requires_grad) < total / 4
    full_model = load_model(str(tiny_llama_dir), device="cpu", dtype="float32").model
    full, what = loop.make_trainable(full_model, TrainConfig(**{**config.__dict__, "full": True}))
    assert what == "all parameters" and full is full_model
    settings = loop.resume_settings(config)
    assert "lr" in settings and not {"output", "resume", "log_every", "device"} & set(settings)
    import time

    window = loop.LogWindow(loss=6.0, micro=3, tokens=300, start=time.perf_counter() - 10)
    entry = window.entry(step=4, epoch=0.5, lr=1e-4, world=1, grad_accum=1,
                         device=torch.device("cpu"))
    assert entry["loss"] == 2.0 and entry["step"] == 4
    assert 25 < entry["tokens_per_s"] <= 30 and 3 < entry["seconds_per_step"] <= 3.5


# ------------------------------------------------------------------------------- robustness


class NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward (a finite loss, non-finite gradients)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def poison(monkeypatch, from_call: int, change) -> None:
    """From the ``from_call``-th micro-batch on (= optimizer step here), ``change`` the losses."""
    original, calls = loop.ResponseOnlyLM.forward, itertools.count(1)

    def forward(self, **batch):
        losses = original(self, **batch)
        return change(losses) if next(calls) >= from_call else losses

    monkeypatch.setattr(loop.ResponseOnlyLM, "forward", forward)


def interrupt_after(monkeypatch, at: int) -> None:
    """Kill the run (KeyboardInterrupt) right after its checkpoint at step ``at``."""
    original = loop._checkpoint

    def checkpoint(state, output, step, *args):
        original(state, output, step, *args)
        if step == at:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_checkpoint", checkpoint)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize(("change", "message"), [
    (lambda x: {**x, "loss": x["loss"] * float("nan")}, "loss is nan"),
    (lambda x: {**x, "loss": NanGradient.apply(x["loss"])}, "the gradient of .*lora_A.* is not finite"),
])
def test_divergence_stops_at_its_step_and_keeps_the_last_finite_checkpoint(
        tmp_path, tiny_llama_dir, memorisable, monkeypatch, change, message):
    poison(monkeypatch, 7, change)
    with pytest.raises(ModelError, match=f"training diverged at step 7: {message}"):
        train(config(tmp_path, tiny_llama_dir, memorisable, save_every=3, max_steps=8))
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / CHECKPOINTS).iterdir()) == ["step-3", "step-6"]
    assert [e["step"] for e in log(out)] == [1, 2, 3, 4, 5, 6]
    assert not (out / "training.json").exists() and not (out / "adapter_config.json").exists()
    assert not list(out.glob("adapter_model*"))


def test_a_huge_learning_rate_is_refused_with_its_step(tmp_path, tiny_llama_dir, memorisable,
                                                      capsys):
    out = tmp_path / "out"
    assert main(["train", "--mixture", str(memorisable), "--model", str(tiny_llama_dir),
                 "--output", str(out), "--lr", "1e30"]) == 2  # the command line: above 1
    assert "argument --lr: must be in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ModelError, match="training diverged at step"):  # the library: diverges
        train(config(tmp_path, tiny_llama_dir, memorisable, lr=1e30, max_steps=6))
    assert not (out / "training.json").exists() and not (out / "adapter_config.json").exists()


def test_a_loss_that_rises_far_above_its_start_is_said(tmp_path, tiny_llama_dir, memorisable,
                                                      monkeypatch, capsys):
    poison(monkeypatch, 4, lambda x: {**x, "loss": x["loss"] * 30, "lm": x["lm"] * 30})
    result = train(config(tmp_path, tiny_llama_dir, memorisable, max_steps=6))
    err = capsys.readouterr().err
    assert "note: the training loss rose to" in err and "at step 4" in err
    assert err.count("training loss rose") == 1  # said once
    [warning] = result.summary["warnings"]
    assert "at step 4" in warning


@pytest.mark.parametrize("damage", ["truncate", "flip", "no checksums"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_good_one(
        tmp_path, tiny_llama_dir, memorisable, monkeypatch, capsys, damage):
    kwargs = dict(save_every=3, max_steps=8)
    interrupt_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, tiny_llama_dir, memorisable, **kwargs))
    monkeypatch.undo()
    latest = tmp_path / "out" / CHECKPOINTS / "step-6"
    if damage == "truncate":
        state = latest / "state.safetensors"
        state.write_bytes(state.read_bytes()[:-100])
    elif damage == "flip":  # one bit of the RNG state: the file still loads
        state = latest / "rng-0.safetensors"
        data = bytearray(state.read_bytes())
        data[-1] ^= 1
        state.write_bytes(bytes(data))
    else:
        (latest / loop.CHECKSUMS).unlink()
    result = train(config(tmp_path, tiny_llama_dir, memorisable, resume=True, **kwargs))
    err = capsys.readouterr().err
    assert "step-6 is damaged" in err and "resuming from step 3" in err
    assert any("step-6 is damaged" in note for note in result.summary["notes"])  # recorded
    assert [e["step"] for e in log(tmp_path / "out")] == list(range(1, 9))
    assert result.summary["steps"] == 8
    assert (tmp_path / "out" / CHECKPOINTS / "damaged-step-6").is_dir()  # kept, set aside


def test_no_good_checkpoint_starts_again_with_a_notice(tmp_path, tiny_llama_dir, memorisable,
                                                       monkeypatch, capsys):
    kwargs = dict(save_every=3, max_steps=8)
    interrupt_after(monkeypatch, 6)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, tiny_llama_dir, memorisable, **kwargs))
    monkeypatch.undo()
    for checkpoint in (tmp_path / "out" / CHECKPOINTS).glob("step-*"):
        (checkpoint / loop.CHECKSUMS).unlink()
    result = train(config(tmp_path, tiny_llama_dir, memorisable, resume=True, **kwargs))
    assert "no usable checkpoint" in capsys.readouterr().err
    assert [e["step"] for e in log(tmp_path / "out")] == list(range(1, 9))
    assert result.summary["steps"] == 8


def test_resume_drops_a_partial_log_line_and_adds_up_time_and_tokens(
        tmp_path, tiny_llama_dir, memorisable, monkeypatch, tokenizer):
    from layer_analysis.train.tracking import read_train_log

    kwargs = dict(save_every=3, max_steps=8)
    interrupt_after(monkeypatch, 6)
    ticks = itertools.count(0, 1000.0)  # a clock that moves 1000 s at each reading
    monkeypatch.setattr(loop, "clock", lambda: next(ticks))
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, tiny_llama_dir, memorisable, **kwargs))
    monkeypatch.undo()
    out = tmp_path / "out"
    with (out / "train_log.jsonl").open("a") as handle:
        handle.write('{"step": 7, "epo')  # killed while writing
    assert [e["step"] for e in read_train_log(out / "train_log.jsonl")] == list(range(1, 7))
    before = json.loads((out / CHECKPOINTS / "step-6" / loop.STATE).read_text())
    assert before["seconds"] >= 1000
    result = train(config(tmp_path, tiny_llama_dir, memorisable, resume=True, **kwargs))
    assert [e["step"] for e in log(out)] == list(range(1, 9))
    assert result.summary["seconds"] >= before["seconds"]
    examples = encode(build_mixture(str(memorisable)).records, tokenizer, 256, Report())
    assert result.summary["tokens"] == 2 * sum(len(e.input_ids) for e in examples)  # 2 epochs


def test_resuming_a_finished_run_changes_nothing_and_says_so(tmp_path, tiny_llama_dir,
                                                            memorisable, capsys):
    out = tmp_path / "out"
    args = ["train", "--mixture", str(memorisable), "--model", str(tiny_llama_dir), "--output",
            str(out), "--max-steps", "3", "--batch-size", "4", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    captured = capsys.readouterr()
    assert "finished" in captured.err and "nothing to resume" in captured.err
    assert "3 steps" in captured.out
    assert snapshot(out) == before
    assert strict_json(out / "training.json")["steps"] == 3
    assert "not applied" not in captured.err
    assert main([*args, "--max-steps", "5", "--lr", "0.01", "--resume"]) == 0
    err = capsys.readouterr().err  # other settings on a finished run: named, not applied
    assert "not applied: max_steps 5 (it was trained with 3)" in err and "lr 0.01" in err
    assert snapshot(out) == before


def test_one_writer_per_training_directory_of_its_own_kind(tmp_path, tiny_llama_dir, memorisable,
                                                           monkeypatch):
    from layer_analysis.probe.errors import StoreError
    from layer_analysis.probe.files import writer_lock
    from layer_analysis.train.sweep import SweepConfig, run_sweep

    loads = []
    monkeypatch.setattr(loop, "load_model", lambda *a, **k: loads.append(1))
    out = tmp_path / "out"
    with writer_lock(out), pytest.raises(StoreError, match="another layer-analysis process"):
        train(config(tmp_path, tiny_llama_dir, memorisable))
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        train(config(tmp_path, tiny_llama_dir, memorisable, output=tmp_path / "file"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"kind": "lens"}))
    with pytest.raises(DataError, match="kind: lens"):
        train(config(tmp_path, tiny_llama_dir, memorisable, output=run))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes\.txt"):
        train(config(tmp_path, tiny_llama_dir, memorisable, output=other))
    assert loads == [] and (other / "notes.txt").read_text() == "mine"
    sweep = SweepConfig(["de"], [0], tmp_path / "sweep", TrainConfig(mixture="-", output=out))
    with writer_lock(tmp_path / "sweep"), pytest.raises(StoreError, match="another"):
        run_sweep(sweep)
    assert not (tmp_path / "sweep" / "sweep.json").exists()
    with pytest.raises(DataError, match=r"not a sweep's \(notes\.txt\)"):
        run_sweep(SweepConfig(["de"], [0], other, TrainConfig(mixture="-", output=out)))
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]  # no lock file left


def test_train_writes_only_into_a_training_run_of_its_own(tmp_path, tiny_llama_dir,
                                                         memorisable, monkeypatch, capsys):
    """--output must be absent, empty or a training run this loop wrote: files it did not write
    (alone, beside an empty checkpoints/ or a run of its own), logs, checkpoints or a
    training.json that are not its, and a link, are refused before the model loads, naming the
    directory; nothing there changes, no lock file is left. Its own unfinished run (final files
    beside its checkpoints included) resumes."""
    monkeypatch.setattr(loop, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    hostile = {
        "beside an empty checkpoints/": {"checkpoints/": None, "precious.txt": "precious",
                                         "README.md": "# My README",
                                         "adapter_config.json": '{"mine": 1}'},
        "foreign logs": {"train_log.jsonl": '{"mine": 1}\n', "alignment_log.csv": "a,b\n1,2\n",
                         "README.md": "# My README"},
        "a foreign summary": {"training.json": '{"mine": 1}'},
        "a foreign checkpoint": {"checkpoints/step-1/weights.bin": "w"},
        "notes beside a log of its own": {"train_log.jsonl": "", "notes.txt": "mine"},
    }
    for case, files in hostile.items():
        out = tmp_path / case.replace(" ", "-")
        for name, text in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            if text is not None:
                (out / name).write_text(text)
        before = snapshot(out)
        args = ["train", "--mixture", str(memorisable), "--model", str(tiny_llama_dir),
                "--output", str(out), "--max-steps", "1", "--device", "cpu", "--no-progress"]
        for extra in ([], ["--resume"]):
            assert main([*args, *extra]) == 2, case
            err = capsys.readouterr().err
            assert f"{out} holds files that are not a training run's" in err, (case, err)
        assert snapshot(out) == before and not (out / ".writer.lock").exists(), case
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(StoreError, match="is a symbolic link"):
        train(config(tmp_path, tiny_llama_dir, memorisable, output=tmp_path / "link"))
    assert not any(target.iterdir())
    # its own unfinished run: checkpoints of its, its logs, final files of a kill at the end
    out = tmp_path / "mine"
    (out / CHECKPOINTS / "step-2").mkdir(parents=True)
    (out / CHECKPOINTS / "step-2" / loop.STATE).write_text('{"step": 2, "settings": {}}')
    (out / "train_log.jsonl").write_text('{"step": 1, "epoch": 0.5, "loss": 2.0, "lr": 0.1}\n'
                                         '{"step": 2, "ep')
    (out / "README.md").write_text("model card")
    resume = config(tmp_path, tiny_llama_dir, memorisable, output=out, resume=True)
    assert loop.check_output(resume) == loop.UNFINISHED
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(DataError, match=r"not a training run's of this tool \(thesis\.tex\)"):
        loop.check_output(resume)


def test_log_readers_leave_out_a_partial_last_line_and_name_a_bad_one(tmp_path):
    import pandas as pd

    from layer_analysis.train.tracking import (
        COLUMNS,
        read_alignment_log,
        read_tracked,
        read_train_log,
    )

    row = dict.fromkeys(COLUMNS, 1)
    (tmp_path / "alignment_log.csv").write_text(
        pd.DataFrame([row, {**row, "step": 2}]).to_csv(index=False) + "3,1,1,")
    assert read_alignment_log(tmp_path / "alignment_log.csv").step.tolist() == [1, 2]
    (tmp_path / "train_log.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    alignment, losses = read_tracked(tmp_path)
    assert len(alignment) == 2 and losses.step.tolist() == [1]
    (tmp_path / "train_log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(DataError, match=r"train_log\.jsonl, line 2: not a training log entry"):
        read_train_log(tmp_path / "train_log.jsonl")


def test_an_unknown_evaluation_task_is_refused_not_read_as_xquad():
    from layer_analysis.train.evaluate import check_languages

    with pytest.raises(DataError, match="unknown evaluation task 'qa'"):
        check_languages("qa", ["de"])


def test_evaluate_never_overwrites_what_is_not_its_scores(tmp_path, tiny_llama_dir, monkeypatch,
                                                         capsys):
    """A hostile --output: a run's manifest, training data, a directory, a path below a file,
    English as a translation target — each refused before the model loads."""
    from layer_analysis.train import evaluate

    monkeypatch.setattr("layer_analysis.probe.models.load_model",
                        lambda *a, **k: pytest.fail("model loaded"))
    (tmp_path / "manifest.json").write_text('{"kind": "lens"}')
    (tmp_path / "data.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    (tmp_path / "afile").write_text("x")
    base = ["evaluate", "--model", str(tiny_llama_dir), "--languages", "de", "--data", "default",
            "--limit", "2", "--device", "cpu", "--output"]
    for output, message in ((tmp_path / "manifest.json", "no earlier evaluation's scores"),
                            (tmp_path / "data.jsonl", "no earlier evaluation's scores"),
                            (tmp_path, "is a directory"),
                            (tmp_path / "afile" / "s.json", "is a file, not a directory")):
        assert main([*base, str(output)]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "manifest.json").read_text() == '{"kind": "lens"}'
    earlier = tmp_path / "scores.json"
    earlier.write_text('[{"task": "translation", "target": "deu_Latn", "chrf++": 1.0}]')
    evaluate.check_scores_output(earlier)  # an earlier scores file may be replaced
    (tmp_path / "scores.predictions.jsonl").write_text('{"earlier": 1}')
    evaluate.check_scores_output(earlier)  # with the predictions that belong to it
    precious = tmp_path / "new.predictions.jsonl"  # no new.json: not an evaluation's
    precious.write_text('{"my": "precious"}')
    assert main([*base, str(tmp_path / "new.json")]) == 2
    assert "new.predictions.jsonl exists without the scores file" in capsys.readouterr().err
    assert precious.read_text() == '{"my": "precious"}' and not (tmp_path / "new.json").exists()
    (tmp_path / "dir.predictions.jsonl").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        evaluate.check_scores_output(tmp_path / "dir.json")
    with pytest.raises(DataError, match="English is no target"):
        evaluate.check_languages("translation", ["en"], "default")
