"""The hook engine against HF's own hidden states, padding, batching, BOS and templates."""

from __future__ import annotations

import pytest
import torch

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.models import load_model

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
    with pytest.raises(DataError, match="unknown sinks mode"):
        ExtractionConfig(sinks="drop")
    with pytest.raises(DataError, match="sink_ratio must be a finite number above 1"):
        ExtractionConfig(sink_ratio=float("nan"))


def test_a_sentence_that_is_only_a_sink_is_refused(loaded, monkeypatch):
    """Without a BOS the first token is left out; a one-token sentence then has nothing to pool."""
    import copy

    from tokenizers import processors

    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    monkeypatch.setattr(loaded, "tokenizer", tokenizer)
    one_token = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(300)])
    with pytest.raises(DataError, match="attention sink"):
        Extractor(loaded, ExtractionConfig()).encode([one_token])
    kept = Extractor(loaded, ExtractionConfig(sinks="keep")).extract([one_token])
    assert torch.isfinite(kept).all()


def test_sink_record_round_trips_and_merges():
    from collections import Counter

    from layer_analysis.probe.extract import SinkRecord

    a = SinkRecord(sentences=4, first_token=4, first_ratio_sum={3: 40.0}, massive={5: 2},
                   massive_max_ratio={5: 120.0}, tokens=Counter({",": 2}), positions=Counter({7: 2}))
    b = SinkRecord.from_dict(a.to_dict())
    assert b.to_dict() == a.to_dict()
    b.merge(a)
    assert b.sentences == 8 and b.massive == {5: 4} and b.tokens[","] == 4
    assert b.first_ratio_sum[3] == pytest.approx(80.0)
    assert "first token of 8 of 8 sentences" in b.summary() and "4 token states" in b.summary()


def test_a_nan_state_stops_the_run_naming_layer_and_sentence(loaded):
    from layer_analysis.probe.extract import NonFiniteStates

    extractor = Extractor(loaded, ExtractionConfig())

    def poison(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[1] > 10:  # only the long sentences' batch
            hidden[0, 3, 0] = float("nan")
        return output

    handle = extractor.parts.blocks[1].register_forward_hook(poison)
    try:
        with pytest.raises(NonFiniteStates, match=r"float32\) produced non-finite states at layer 2 "
                                                  r"for sentence 4 \('Heavy rain"):
            extractor.extract(SENTENCES, batch_size=1)
    finally:
        handle.remove()


def test_truncation_is_counted_from_the_untruncated_lengths(loaded):
    lengths = [len(ids) for ids in loaded.tokenizer(SENTENCES)["input_ids"]]
    limit = sorted(lengths)[2]  # two sentences are longer
    record = Extractor(loaded, ExtractionConfig(max_length=limit)).truncation(SENTENCES)
    assert (record.total, record.sentences) == (5, 2) and record.serious  # 40 % > 5 %
    assert record.worst_kept_fraction == pytest.approx(limit / max(lengths))
    assert record.to_dict()["share"] == 0.4
    none = Extractor(loaded, ExtractionConfig(max_length=max(lengths))).truncation(SENTENCES)
    assert none.sentences == 0 and none.worst_kept_fraction == 1.0 and not none.serious
    templated = Extractor(loaded, ExtractionConfig(max_length=max(lengths),
                                                   template="Text: {sentence}"))
    assert templated.truncation(SENTENCES).sentences >= 1  # the template's tokens count too
