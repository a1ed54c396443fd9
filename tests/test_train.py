"""Training: data, loss mask, response-only head, the loop (learning, save/reload, resume) on a
tiny random LLaMA, and the CLI's errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from probe.cli import main
from probe.errors import DataError
from probe.models import load_model
from train import loop
from train.cli import recipe_spec
from train.encode import IGNORE, collate, encode
from train.loop import ResponseOnlyLM, TrainConfig, lora_targets, train
from train.mixture import build_mixture, parse_spec
from train.prompts import TRANSLATION_INSTRUCTIONS, alpaca_prompt, translation_instruction
from train.records import Record, Report, read_alpaca, translation_records


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
    assert torch.allclose(ResponseOnlyLM(model)(**batch), full, atol=1e-5)
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
    ])
    report = Report()
    records = read_alpaca(path, "bad", report)
    assert [r.origin for r in records] == ["bad:0", "bad:4"]
    assert encode(records, tokenizer, 160, report)[0].origin == "bad:0"
    assert report.kept["bad"] == 1
    assert report.rejected == {("bad", "missing instruction/output"): 2,
                               ("bad", "empty output"): 1, ("bad", "empty instruction"): 1,
                               ("bad", "over 160 tokens"): 1}
    assert report.lines() == ["bad: 1 kept (1 empty instruction, 1 empty output, 2 missing "
                              "instruction/output, 1 over 160 tokens)"]
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
    resumed = train(config(tmp_path / "b", tiny_llama_dir, memorisable, save_every=5,
                           resume=True))
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
