"""End to end on the real packaged models (slow: the first run converts the GGUF files)."""

from __future__ import annotations

import csv

import pytest
import torch

from probe.cli import main
from probe.extract import ExtractionConfig, Extractor
from probe.models import load_model

pytestmark = pytest.mark.slow


def test_default_model_run_finds_mid_layer_alignment(tmp_path, capsys):
    args = ["run", "--languages", "en,de,zh,ar", "--limit", "48", "--output", str(tmp_path),
            "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gemma3-270m on default" in out and "19 layers" in out
    summary = next(tmp_path.glob("store/*/p_at_1_centered.csv"))
    rows = list(csv.reader(summary.open()))[1:]
    mean_p1 = [sum(map(float, row[1:])) / 3 for row in rows]
    peak = max(range(len(mean_p1)), key=mean_p1.__getitem__)
    assert 6 <= peak <= 17, mean_p1  # aligned in the middle, not at the embeddings or the top
    assert mean_p1[peak] > 0.8 and mean_p1[1] < 0.5
    assert main(args) == 0
    assert "loaded from cache" in capsys.readouterr().out


def test_llama_architecture_default_matches_hidden_states():
    loaded = load_model("smollm2-135m", device="cpu", dtype="float32")
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    sentences = ["The museum will be closed until spring.", "Le musée sera fermé."]
    extractor = Extractor(loaded, ExtractionConfig(poolings=("mean",)))
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
