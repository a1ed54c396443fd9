"""End to end on the real packaged models (slow: the first run converts the GGUF files)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from layer_analysis.cli import main
from layer_analysis.probe.data import load_parallel
from layer_analysis.probe.extract import SINK_RATIO, ExtractionConfig, Extractor
from layer_analysis.probe.models import load_model

pytestmark = pytest.mark.slow


def test_default_model_run_finds_mid_layer_alignment(tmp_path, capsys):
    args = ["run", "--languages", "en,de,zh,ar", "--limit", "48", "--output", str(tmp_path),
            "--name", "e2e", "--no-progress", "--bootstrap", "200"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m on default" in out and "19 layers" in out
    table = pd.read_parquet(tmp_path / "e2e" / "results.parquet")
    p1 = table[(table.metric == "p@1") & (table.normalisation == "centered")]
    mean_p1 = p1.groupby("layer").value.mean()
    peak = int(mean_p1.idxmax())
    assert 6 <= peak <= 17, mean_p1  # aligned in the middle, not at the embeddings or the top
    assert mean_p1[peak] > 0.8 and mean_p1[1] < 0.5
    assert (p1.value > p1.null_high).all() or mean_p1[peak] > 10 * p1.null.max()
    for suffix in ("png", "pdf"):  # the static export ran through Chromium
        assert (tmp_path / "e2e" / "figures" / f"heatmap_p@1.{suffix}").stat().st_size > 1000
    assert main(args) == 2  # the name is taken
    assert main([*args, "--overwrite"]) == 0
    assert "loaded from cache" in capsys.readouterr().out


def plain_sink_free_mean(states: torch.Tensor, ratio: float) -> torch.Tensor:
    """Mean of one sentence's (T, d) token states without the first token (SmolLM2 adds no BOS)
    and without any token over ``ratio`` x the median norm of the rest, token by token."""
    norms = [float(states[t].norm()) for t in range(1, states.shape[0])]
    median = sorted(norms)[(len(norms) - 1) // 2]
    kept = [t for t, n in zip(range(1, states.shape[0]), norms, strict=True) if n <= ratio * median]
    return torch.stack([states[t] for t in kept]).mean(0)


def test_engine_p_at_1_equals_a_plain_one_sentence_loop(tmp_path):
    """Centered P@1 per layer from the CLI's table equals a naive reimplementation, sink rule
    included, on the real LLaMA-architecture model whose first token is its attention sink."""
    languages = ["en", "de", "zh"]
    args = ["run", "--model", "smollm2-135m", "--languages", ",".join(languages), "--limit", "40",
            "--output", str(tmp_path), "--name", "smol", "--no-progress", "--projection", "none",
            "--no-static", "--bootstrap", "100", "--normalisations", "centered"]
    assert main(args) == 0
    table = pd.read_parquet(tmp_path / "smol" / "results.parquet")
    engine = table[(table.metric == "p@1") & (table.source == "eng_Latn")]

    loaded = load_model("smollm2-135m", device="cpu", dtype="float32")
    corpus = load_parallel("default").select(languages, 40)
    special = set(loaded.tokenizer.all_special_ids)
    pooled, first_token_ratio = {}, []
    for key, side in corpus.sides.items():  # one sentence per forward, as MEXA does
        per_sentence = []
        for sentence in side.sentences:
            ids = loaded.tokenizer(sentence, return_tensors="pt")
            assert int(ids.input_ids[0, 0]) not in special  # no BOS: the first token is the sink
            with torch.no_grad():
                hidden = loaded.model(**ids, output_hidden_states=True).hidden_states
            norms = hidden[15][0].norm(dim=-1)
            first_token_ratio.append(float(norms[0] / norms[1:].median()))
            # our last layer is before the final norm: compare the layers before it
            layers = [plain_sink_free_mean(h[0], SINK_RATIO) for h in hidden[:-1]]
            per_sentence.append(torch.stack(layers))
        pooled[key] = torch.stack(per_sentence, dim=1)  # (layers, n, d)
    assert min(first_token_ratio) > 50  # the lens must see the sink it leaves out
    for target in ("deu_Latn", "zho_Hans"):
        src, tgt = pooled["eng_Latn"], pooled[target]
        src = src - src.mean(1, keepdim=True)
        tgt = tgt - tgt.mean(1, keepdim=True)
        src = src / src.norm(dim=-1, keepdim=True)
        tgt = tgt / tgt.norm(dim=-1, keepdim=True)
        naive = ((src @ tgt.transpose(1, 2)).argmax(-1) == torch.arange(40)).float().mean(-1)
        ours = engine[engine.target == target].sort_values("layer").value.to_numpy()
        assert ours[: len(naive)].tolist() == pytest.approx(naive.tolist(), abs=1e-9), target


def test_llama_architecture_default_matches_hidden_states():
    loaded = load_model("smollm2-135m", device="cpu", dtype="float32")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    sentences = ["The museum will be closed until spring.", "Le musée sera fermé."]
    extractor = Extractor(loaded, ExtractionConfig(poolings=("mean",), sinks="keep"))
    pooled = extractor.extract(sentences, batch_size=2)
    masks = extractor.encode(sentences).pool_masks
    for i, sentence in enumerate(sentences):
        inputs = loaded.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            hidden = loaded.model(**inputs, output_hidden_states=True).hidden_states
        keep = torch.tensor(masks[i])
        for layer in range(len(hidden) - 1):
            ref = hidden[layer][0][keep].mean(0)
            assert float((pooled[0, layer, i] - ref).norm() / ref.norm()) < 1e-5
