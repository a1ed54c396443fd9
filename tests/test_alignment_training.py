"""Alignment through training on a tiny random LLaMA: the tracker's numbers against a plain
one-sentence-at-a-time oracle and against the saved model, resume, the InfoNCE objective (its
value, where its gradient goes, that it falls), and bad input before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from layer_analysis.cli import main
from layer_analysis.probe.architecture import find_decoder
from layer_analysis.probe.data import REPO_ROOT
from layer_analysis.probe.errors import DataError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.metrics import precision_at_1
from layer_analysis.probe.models import load_model
from layer_analysis.train import loop
from layer_analysis.train.loop import TrainConfig, make_trainable, train
from layer_analysis.train.objective import AlignmentObjective, PairBatches, alignment_loss, info_nce
from layer_analysis.train.tracking import ALIGNMENT_LOG, TrackingConfig, peak_alignment

DATA = REPO_ROOT / "data" / "parallel"  # the shipped sentences: the held-out tracking set


@pytest.fixture
def shared(tmp_path, monkeypatch) -> Path:
    """A shared-data root holding English -> German and -> Greek pairs (the shipped sentences)
    and a small Alpaca file, so mixtures need nothing outside the repository."""
    root = tmp_path / "shared"
    english = (DATA / "eng_Latn.txt").read_text().splitlines()
    for code in ("deu", "ell"):
        directory = root / "translation" / f"eng-{code}"
        directory.mkdir(parents=True)
        other = (DATA / f"{code}_{'Latn' if code == 'deu' else 'Grek'}.txt").read_text()
        (directory / "train.eng").write_text("\n".join(english[:80]) + "\n")
        (directory / f"train.{code}").write_text("\n".join(other.splitlines()[:80]) + "\n")
    (root / "instruct").mkdir()
    (root / "instruct" / "alpaca_en.json").write_text(json.dumps(
        [{"instruction": "Name a fruit.", "input": "", "output": "apple"}] * 8))
    monkeypatch.setenv("LAYER_ANALYSIS_SHARED_DATA", str(root))
    return root


def settings(tmp_path: Path, model: Path, **kwargs) -> TrainConfig:
    defaults = dict(mixture="alpaca_en[:8] + translation_en-de[:40]", output=tmp_path / "out",
                    model=str(model), lr=1e-2, batch_size=4, max_steps=6, warmup=0.0, lora_r=8,
                    lora_dropout=0.1, log_every=1, save_every=100, device="cpu", progress=False,
                    tracking=TrackingConfig(every=3, data=str(DATA), sentences=24,
                                            bootstrap=50))
    return TrainConfig(**{**defaults, **kwargs})


def oracle_p_at_1(model, tokenizer, languages=("eng_Latn", "deu_Latn"), n=24) -> torch.Tensor:
    """Centered P@1 English -> German per layer, states extracted one sentence at a time."""
    from layer_analysis.probe.models import LoadedModel

    extractor = Extractor(LoadedModel(model.eval(), tokenizer, "oracle"), ExtractionConfig())
    sides = [(DATA / f"{code}.txt").read_text().splitlines()[:n] for code in languages]
    states = [torch.stack([extractor.extract([s], batch_size=1)[0, :, 0] for s in side], dim=1)
              for side in sides]
    return precision_at_1(*states)


def test_tracking_logs_what_an_oracle_and_the_saved_model_give(tmp_path, tiny_llama_dir, shared,
                                                               tokenizer):
    result = train(settings(tmp_path, tiny_llama_dir))
    out = tmp_path / "out"
    log = pd.read_csv(out / ALIGNMENT_LOG)
    layers = find_decoder(result.model).num_layers
    assert sorted(log.step.unique()) == [0, 3, 6]
    assert len(log) == 3 * layers * 2  # steps × layers × directions
    assert log.value.between(0, 1).all() and (log.ci_low <= log.value).all()
    forward = log[log.direction == "forward"]
    base = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    before = forward[forward.step == 0].sort_values("layer").value.to_numpy()
    assert before == pytest.approx(oracle_p_at_1(base.model, tokenizer).numpy(), abs=1e-6)
    saved = load_model(str(out), device="cpu", dtype="float32")  # base + the trained adapter
    after = forward[forward.step == 6].sort_values("layer").value.to_numpy()
    assert after == pytest.approx(oracle_p_at_1(saved.model, tokenizer).numpy(), abs=1e-6)
    assert not (before == after).all()  # the tracker saw the weights move
    assert (out / "alignment.html").stat().st_size > 10_000
    assert result.summary["tracking"]["languages"] == ["deu_Latn"]
    best = peak_alignment(log)
    assert list(best.language) == ["deu_Latn"] and 0 <= best.value[0] <= 1


def test_a_killed_tracked_run_resumes_without_duplicate_rows(tmp_path, tiny_llama_dir, shared,
                                                            monkeypatch):
    original = loop._checkpoint

    def interrupt(state, output, step, *args):
        original(state, output, step, *args)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_checkpoint", interrupt)
    kwargs = dict(save_every=2, max_steps=8, tracking=TrackingConfig(
        every=3, data=str(DATA), sentences=24, bootstrap=0))
    with pytest.raises(KeyboardInterrupt):
        train(settings(tmp_path, tiny_llama_dir, **kwargs))
    out = tmp_path / "out"
    (out / ALIGNMENT_LOG).open("a").write(pd.read_csv(out / ALIGNMENT_LOG).assign(step=5)
                                          .to_csv(header=False, index=False))  # after step 4
    (out / "train_log.jsonl").open("a").write(json.dumps({"step": 5, "loss": 1.0}) + "\n")
    monkeypatch.setattr(loop, "_checkpoint", original)
    train(settings(tmp_path, tiny_llama_dir, resume=True, **kwargs))
    log = pd.read_csv(out / ALIGNMENT_LOG)
    assert sorted(log.step.unique()) == [0, 3, 6, 8]  # the fake step 5 dropped
    assert not log.duplicated(["step", "layer", "direction"]).any()
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_info_nce_by_hand():
    english = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    other = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # cosines: [[1, 1/√2], [0, 1/√2]]; rows and columns as softmax over temperature 0.5
    cos = torch.tensor([[1.0, 2**-0.5], [0.0, 2**-0.5]]) / 0.5
    rows = -(cos.diag() - cos.logsumexp(1)).mean()
    cols = -(cos.diag() - cos.logsumexp(0)).mean()
    assert info_nce(english, other, 0.5).item() == pytest.approx(((rows + cols) / 2).item())
    assert info_nce(english, english, 0.01).item() < 1e-6


def pair_batches(tokenizer, batch: int = 8) -> PairBatches:
    english = (DATA / "eng_Latn.txt").read_text().splitlines()[:40]
    german = (DATA / "deu_Latn.txt").read_text().splitlines()[:40]
    return PairBatches(list(zip(english, german, strict=True)), tokenizer, 128, batch, seed=0)


def test_pair_batches_are_deterministic_and_pool_past_special_tokens(tokenizer):
    pairs = pair_batches(tokenizer)
    a, b = pairs.draw(7), pairs.draw(7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["pair_ids"], pairs.draw(8)["pair_ids"])
    ids, pool, attention = a["pair_ids"], a["pair_pool"], a["pair_attention"].bool()
    assert ids.shape[0] == 16 and not pool[:, 0].any()  # the BOS is never pooled
    assert (pool == (attention & (ids != tokenizer.bos_token_id))).all()


@pytest.mark.parametrize("full", [True, False])
def test_alignment_gradient_stops_at_the_chosen_layer_and_the_loss_falls(tiny_llama_dir,
                                                                         tokenizer, full):
    loaded = load_model(str(tiny_llama_dir), device="cpu", dtype="float32")
    config = TrainConfig(mixture="-", output=Path("-"), full=full, lora_r=8, lora_dropout=0.0)
    model, _ = make_trainable(loaded.model.train(), config)
    parts = find_decoder(model)
    layer = 2  # output of the second of the tiny model's four blocks
    batch = pair_batches(tokenizer).draw(0)
    alignment_loss(parts, (layer,), 0.1, **batch).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    reached = {n for n, g in grads.items() if g is not None and g.abs().sum() > 0}
    assert any(".layers.0." in n for n in reached) and any(".layers.1." in n for n in reached)
    assert not any(".layers.2." in n or ".layers.3." in n or "lm_head" in n
                   or n.endswith("model.norm.weight") for n in reached)  # nothing after it
    if not full:
        assert all("lora_" in n for n in grads)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = alignment_loss(parts, (layer,), 0.1, **batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_training_with_the_objective_logs_both_losses(tmp_path, tiny_llama_dir, shared):
    result = train(settings(tmp_path, tiny_llama_dir, tracking=None, alignment=AlignmentObjective(
        weight=1.0, layers=(1,), batch=8)))
    entries = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert all(e["alignment_loss"] > 0 for e in entries)
    assert result.summary["alignment_objective"] == {"layers": [1], "pairs": 40}
    plain = tmp_path / "plain"
    train(settings(plain, tiny_llama_dir, tracking=None))
    assert "alignment_loss" not in (plain / "out" / "train_log.jsonl").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--align-weight", "1"], "needs translation pairs"),
    (["--align-weight", "1", "--mixture", "translation_en-de[:40]", "--align-layers", "5"],
     "--align-layers [5] out of range: the alignment objective acts on block outputs, "
     "layers 1..4"),
    (["--track-every", "5", "--track-languages", "el"], "el"),
    (["--track-every", "5", "--track-languages", "en"], "English is the pivot"),
    (["--track-every", "5", "--track-sentences", "1"], "--track-sentences: must be at least 2"),
    (["--align-weight", "-1"], "--align-weight: must be at least 0"),
])
def test_bad_alignment_settings_fail_before_training(tmp_path, tiny_llama_dir, shared, capsys,
                                                     monkeypatch, extra, message):
    steps = []
    monkeypatch.setattr(loop, "run_steps", lambda *a, **k: steps.append(1))
    mixture = [] if "--mixture" in extra else ["--mixture", "alpaca_en[:8]"]
    assert main(["train", *mixture, *extra, "--model", str(tiny_llama_dir), "--output",
                 str(tmp_path / "o"), "--device", "cpu", "--track-data",
                 str(DATA)]) == 2
    assert message in capsys.readouterr().err
    assert steps == [] and not (tmp_path / "o").exists()


def test_tracking_languages_must_be_in_the_mixture(shared):
    from layer_analysis.train.mixture import build_mixture
    from layer_analysis.train.tracking import tracked_languages

    mixture = build_mixture("alpaca_en[:8] + translation_en-de[:10] + translation_en-el[:10]")
    assert mixture.languages == {"eng_Latn", "deu_Latn", "ell_Grek"}
    assert sorted(mixture.pairs) == ["deu_Latn", "ell_Grek"] and len(mixture.pairs["ell_Grek"]) == 10
    assert tracked_languages(TrackingConfig(), mixture.languages) == ["deu_Latn", "ell_Grek"]
    assert tracked_languages(TrackingConfig(languages=("Greek",)), mixture.languages) == ["ell_Grek"]
    with pytest.raises(DataError, match="zho_Hans: not in the training mixture"):
        tracked_languages(TrackingConfig(languages=("zh",)), mixture.languages)
