"""The hook engine against HF's own hidden states, padding, batching, BOS and templates."""

from __future__ import annotations

import pytest
import torch

from probe.errors import DataError, ModelError
from probe.extract import ExtractionConfig, Extractor
from probe.models import load_model

SENTENCES = [
    "The bakery on the corner opens at seven every morning.",
    "Die Bäckerei öffnet um sieben.",
    "街角的面包店每天早上七点开门。",
    "Ok.",
    "Heavy rain is expected across the north of the country tomorrow, says the weather service.",
]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)).max())


@pytest.fixture
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32", device="cpu")


def test_hooks_equal_output_hidden_states_for_every_layer(loaded):
    extractor = Extractor(loaded, ExtractionConfig(poolings=("mean", "last")))
    pooled = extractor.extract(SENTENCES, batch_size=2)  # (P, L, n, D)
    encoded = extractor.encode(SENTENCES)
    final_norm = extractor.parts.final_norm
    for i, sentence in enumerate(SENTENCES):
        inputs = loaded.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            hidden = loaded.model(**inputs, output_hidden_states=True).hidden_states
        keep = torch.tensor(encoded.pool_masks[i])
        last_index = int(torch.nonzero(keep).max())
        num_blocks = len(hidden) - 1
        for layer in range(num_blocks):  # embeddings and blocks 1..L-1
            assert relative_error(pooled[0, layer, i], hidden[layer][0][keep].mean(0)) < 1e-5
            assert relative_error(pooled[1, layer, i], hidden[layer][0][last_index]) < 1e-5
        # HF's last hidden state is after the final norm; our last layer is before it.
        with torch.no_grad():
            normed = final_norm(pooled[1, num_blocks, i][None])[0]
        assert relative_error(normed, hidden[num_blocks][0][last_index]) < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted"])
def test_left_right_padding_and_batch_size_agree(loaded, pooling):
    config = ExtractionConfig(poolings=(pooling,))
    right = Extractor(loaded, config, padding_side="right").extract(SENTENCES, batch_size=32)
    left = Extractor(loaded, config, padding_side="left").extract(SENTENCES, batch_size=32)
    single = Extractor(loaded, config).extract(SENTENCES, batch_size=1)
    assert relative_error(left, right) <= 1e-5
    assert relative_error(single, right) <= 1e-5
    assert torch.isfinite(left).all()


def test_bos_and_special_tokens_are_excluded(loaded):
    extractor = Extractor(loaded, ExtractionConfig())
    encoded = extractor.encode(SENTENCES)
    bos = loaded.tokenizer.bos_token_id
    for ids, mask in zip(encoded.input_ids, encoded.pool_masks, strict=False):
        assert ids[0] == bos and mask[0] is False
        assert all(mask[1:])


def test_template_span_covers_exactly_the_sentence(loaded):
    template = 'Translate: "{sentence}" means'
    config = ExtractionConfig(poolings=("mean", "last"), template=template)
    extractor = Extractor(loaded, config)
    encoded = extractor.encode(SENTENCES)
    for sentence, ids, mask in zip(SENTENCES, encoded.input_ids, encoded.pool_masks, strict=False):
        span_text = loaded.tokenizer.decode([t for t, m in zip(ids, mask, strict=False) if m])
        assert span_text.strip().strip('"') == sentence
        assert not mask[0] and not mask[-1]  # BOS and the trailing ' means' are outside
    prompt = Extractor(loaded, ExtractionConfig(template=template, span="prompt"))
    prompt_masks = prompt.encode(SENTENCES).pool_masks
    assert all(sum(p) > sum(s) for p, s in zip(prompt_masks, encoded.pool_masks, strict=False))
    # Span pooling differs from pooling the bare sentence: the prompt changes the context.
    bare = Extractor(loaded, ExtractionConfig()).extract(SENTENCES)
    wrapped = extractor.extract(SENTENCES)
    assert relative_error(wrapped[0, -1], bare[0, -1]) > 1e-3


def test_layer_selection_and_early_stop(loaded):
    extractor = Extractor(loaded, ExtractionConfig(layers=(1, 2)))
    calls = []
    handle = extractor.parts.blocks[-1].register_forward_hook(lambda *a: calls.append(1))
    out = extractor.extract(SENTENCES, batch_size=8)
    handle.remove()
    assert out.shape[1] == 2
    assert calls == []  # the forward stopped after block 2: the last block never ran
    full = Extractor(loaded, ExtractionConfig()).extract(SENTENCES, batch_size=8)
    assert torch.equal(out, full[:, 1:3])


def test_bad_configs(loaded):
    with pytest.raises(DataError, match="unknown pooling"):
        ExtractionConfig(poolings=("max",))
    with pytest.raises(DataError, match="exactly once"):
        ExtractionConfig(template="no slot here")
    with pytest.raises(DataError, match="out of range"):
        Extractor(loaded, ExtractionConfig(layers=(99,)))


def test_unsupported_model_is_refused(tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ModelError, match="not a causal language model"):
        from probe.architecture import find_decoder

        find_decoder(bert)
