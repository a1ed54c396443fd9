"""The hook engine on a matrix of decoder families (tests/families.py), each with its family's
tokenizer behaviour (BOS or not), against HF's own hidden states and a plain one-sentence oracle."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from families import FAMILIES, build_family
from tokenizers import processors

from layer_analysis.probe.architecture import find_decoder
from layer_analysis.probe.errors import ModelError
from layer_analysis.probe.extract import SINK_RATIO, ExtractionConfig, Extractor
from layer_analysis.probe.interventions import deactivated, steered
from layer_analysis.probe.lens import LogitLens
from layer_analysis.probe.models import block_count, load_model
from layer_analysis.probe.neurons import activation_counts, activation_modules

SENTENCES = [
    "The bakery on the corner opens at seven every morning.",
    "Die Bäckerei öffnet um sieben.",
    "街角的面包店每天早上七点开门。",
    "Ok, fine.",
    "Heavy rain is expected across the north of the country tomorrow, says the weather service.",
]
POOLINGS = ("mean", "last", "weighted")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp_min(1e-12)).max())


def without_bos(tokenizer):
    """The same tokenizer, adding no BOS (as Qwen, GPT-2, BLOOM, ... do)."""
    tok = copy.deepcopy(tokenizer)
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request, tokenizer, tmp_path_factory):
    fam = request.param
    directory = tmp_path_factory.mktemp(f"family-{fam.name}")
    build_family(fam, len(tokenizer)).save_pretrained(directory)
    (tokenizer if fam.bos else without_bos(tokenizer)).save_pretrained(directory)
    return fam, load_model(str(directory), device="cpu", dtype="float32")


def test_the_config_tells_the_blocks_the_structure_finds(family):
    """block_count (config only, checked before the weights load) agrees with the blocks."""
    _, loaded = family
    assert block_count(loaded.identity["directory"]) == len(find_decoder(loaded.model).blocks)


def hidden_states(loaded, sentence: str, hook=None) -> tuple[torch.Tensor, ...]:
    """HF's hidden states of one sentence (no padding), with an optional extra forward hook."""
    inputs = loaded.tokenizer(sentence, return_tensors="pt")
    with torch.no_grad():
        return loaded.model(**inputs, output_hidden_states=True).hidden_states


def oracle(states: torch.Tensor, pool: list[bool], first_is_real: bool, ratio: float, pooling: str
           ) -> torch.Tensor:
    """Sink-excluded pooling of one sentence's (T, d) states, written plainly, token by token."""
    candidates = [i for i, p in enumerate(pool) if p and not (i == 0 and first_is_real)]
    norms = [float(states[i].norm()) for i in candidates]
    median = sorted(norms)[(len(norms) - 1) // 2]  # the lower median, as torch.nanmedian
    kept = [i for i, n in zip(candidates, norms, strict=True) if n <= ratio * median]
    if pooling == "last":
        return states[kept[-1]]
    positions = [sum(pool[: i + 1]) for i in range(len(pool))]
    weights = [1.0 if pooling == "mean" else float(positions[i]) for i in kept]
    return sum(w * states[i] for w, i in zip(weights, kept, strict=True)) / sum(weights)


def test_tokenizer_behaviour_is_the_family_s(family):
    fam, loaded = family
    ids = loaded.tokenizer("Hello there")["input_ids"]
    assert (ids[0] == loaded.tokenizer.bos_token_id) == fam.bos


def test_hooks_equal_output_hidden_states_for_every_layer(family):
    _, loaded = family
    extractor = Extractor(loaded, ExtractionConfig(poolings=("mean", "last"), sinks="keep"))
    pooled = extractor.extract(SENTENCES, batch_size=2)
    encoded = extractor.encode(SENTENCES)
    final_norm = extractor.parts.final_norm
    assert final_norm is not None
    for i, sentence in enumerate(SENTENCES):
        hidden = hidden_states(loaded, sentence)
        assert len(hidden) == extractor.parts.num_layers
        keep = torch.tensor(encoded.pool_masks[i])
        last = int(torch.nonzero(keep).max())
        blocks = len(hidden) - 1
        for layer in range(blocks):
            assert relative_error(pooled[0, layer, i], hidden[layer][0][keep].mean(0)) < 1e-5, layer
            assert relative_error(pooled[1, layer, i], hidden[layer][0][last]) < 1e-5, layer
        with torch.no_grad():  # HF's last hidden state is after the final norm; ours before it
            normed = final_norm(pooled[1, blocks, i][None])[0]
        assert relative_error(normed, hidden[blocks][0][last]) < 1e-5


def test_logit_lens_last_layer_is_the_model_s_own_next_token_distribution(family):
    """Every family (Gemma 2's soft-capping included): the lens at the last layer == the model's
    logits at the prompt's last token, batched with padding; earlier layers differ."""
    _, loaded = family
    lens = LogitLens(loaded)
    states = lens.last_token_states(SENTENCES, batch_size=2)
    for i, sentence in enumerate(SENTENCES):
        inputs = loaded.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            own = torch.log_softmax(loaded.model(**inputs).logits[0, -1].float(), -1)
        read = lens.log_probs(states[-1, i : i + 1])[0]
        assert float((read - own).abs().max()) < 1e-4
        assert float((lens.log_probs(states[1, i : i + 1])[0] - own).abs().max()) > 1e-3
    token = loaded.tokenizer("x", add_special_tokens=False)["input_ids"][0]
    readout = lens.readout(SENTENCES, [[[token], [token, 5]]] * len(SENTENCES), top_k=3,
                           batch_size=2)
    assert readout.probs.shape == (lens.extractor.parts.num_layers, len(SENTENCES), 2)
    assert torch.all((readout.entropy >= 0) & (readout.entropy <= math.log(len(loaded.tokenizer)) + 1e-3))
    with torch.no_grad():
        own = torch.softmax(loaded.model(**loaded.tokenizer(SENTENCES[0], return_tensors="pt")
                                         ).logits[0, -1].float(), -1)
    assert abs(float(readout.probs[-1, 0, 0]) - float(own[token])) < 1e-5
    assert abs(float(readout.probs[-1, 0, 1]) - float(own[token] + own[5])) < 1e-5  # a set: summed
    assert int(readout.top[-1, 0, 0]) == int(own.argmax())


def test_sink_exclusion_equals_a_plain_oracle(family):
    fam, loaded = family
    config = ExtractionConfig(poolings=POOLINGS)
    extractor = Extractor(loaded, config)
    pooled = extractor.extract(SENTENCES, batch_size=3)
    encoded = extractor.encode(SENTENCES)
    assert encoded.first_is_real == [not fam.bos] * len(SENTENCES)
    for i, sentence in enumerate(SENTENCES):
        hidden = hidden_states(loaded, sentence)
        for layer in range(len(hidden) - 1):
            for p, pooling in enumerate(POOLINGS):
                expected = oracle(hidden[layer][0], encoded.pool_masks[i], not fam.bos,
                                  config.sink_ratio, pooling)
                assert relative_error(pooled[p, layer, i], expected) < 1e-5, (layer, pooling)
    record = extractor.sink_record
    assert record.sentences == len(SENTENCES)
    assert record.first_token == (0 if fam.bos else len(SENTENCES))


@pytest.mark.parametrize("sinks", ["exclude", "keep"])
def test_padding_side_and_batch_size_agree_for_every_pooling(family, sinks):
    _, loaded = family
    config = ExtractionConfig(poolings=POOLINGS, sinks=sinks)
    right = Extractor(loaded, config, padding_side="right").extract(SENTENCES, batch_size=32)
    left = Extractor(loaded, config, padding_side="left").extract(SENTENCES, batch_size=32)
    single = Extractor(loaded, config).extract(SENTENCES, batch_size=1)
    assert torch.isfinite(left).all() and torch.isfinite(right).all()
    assert relative_error(left, right) <= 1e-5
    assert relative_error(single, right) <= 1e-5


def test_an_injected_sink_is_excluded(family):
    """Scale one mid-sentence token's state by 500 at block 2: from there on it is left out."""
    _, loaded = family
    extractor = Extractor(loaded, ExtractionConfig(poolings=("mean",)))
    position = 3
    block = extractor.parts.blocks[1]  # output = layer 2

    def inject(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, position] *= 500.0
        return output

    handle = block.register_forward_hook(inject)
    try:
        pooled = extractor.extract(SENTENCES, batch_size=1)
        encoded = extractor.encode(SENTENCES)
        for i, sentence in enumerate(SENTENCES):
            hidden = hidden_states(loaded, sentence)[2][0]
            pool = list(encoded.pool_masks[i])
            assert hidden[position].norm() > 100 * hidden[pool.index(True) + 1].norm()
            expected = oracle(hidden, pool, encoded.first_is_real[i], SINK_RATIO, "mean")
            without = [j for j, p in enumerate(pool) if p and j != position
                       and not (j == 0 and encoded.first_is_real[i])]
            assert relative_error(expected, hidden[without].mean(0)) < 1e-5  # oracle drops it
            assert relative_error(pooled[0, 2, i], expected) < 1e-5
    finally:
        handle.remove()
    assert extractor.sink_record.massive.get(2, 0) >= len(SENTENCES)
    assert extractor.sink_record.positions[position] >= len(SENTENCES)


def test_encoder_models_get_a_clear_error(tmp_path):
    from transformers import BertConfig, BertForMaskedLM, T5Config, T5ForConditionalGeneration

    from layer_analysis.probe.architecture import find_decoder

    bert = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_ff=32, num_layers=1,
                                             num_heads=2, d_kv=8))
    with pytest.raises(ModelError, match="BertForMaskedLM is not a causal"):
        find_decoder(bert)
    with pytest.raises(ModelError, match="encoder-decoder"):
        find_decoder(t5)


def test_neuron_counts_equal_a_one_sentence_oracle(family):
    """LAPE's firing counts (batched, padded, hooked) against each sentence alone: the MLP
    activation's outputs > 0 over the sentence's real tokens."""
    _, loaded = family
    extractor = Extractor(loaded, ExtractionConfig())
    counts, tokens = activation_counts(extractor, SENTENCES, batch_size=3)
    acts = activation_modules(extractor.parts)
    expected = torch.zeros_like(counts)
    expected_tokens = 0
    for sentence in SENTENCES:
        inputs = loaded.tokenizer(sentence, return_tensors="pt", return_special_tokens_mask=True)
        real = ~inputs.pop("special_tokens_mask")[0].bool()
        seen: list[torch.Tensor] = []
        handles = [a.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out[0]))
                   for a in acts]
        with torch.no_grad():
            loaded.model(**inputs)
        for handle in handles:
            handle.remove()
        for layer, out in enumerate(seen):
            expected[layer] += (out[real] > 0).sum(0)
        expected_tokens += int(real.sum())
    assert tokens == expected_tokens
    assert torch.equal(counts, expected)


def test_interventions_leave_the_logits_bit_identical(family):
    _, loaded = family
    parts = find_decoder(loaded.model)
    inputs = loaded.tokenizer(SENTENCES[0], return_tensors="pt")
    with torch.no_grad():
        before = loaded.model(**inputs).logits
        width = activation_counts(Extractor(loaded, ExtractionConfig()), SENTENCES[:1])[0].shape[1]
        mask = torch.zeros(len(parts.blocks), width, dtype=torch.bool)
        mask[:, ::3] = True
        vector = torch.ones(parts.embeddings.weight.shape[1])
        with deactivated(parts, mask):
            zeroed = loaded.model(**inputs).logits
        with steered(parts, 2, vector, 3.0):
            pushed = loaded.model(**inputs).logits
        after = loaded.model(**inputs).logits
    assert not torch.equal(zeroed, before) and not torch.equal(pushed, before)
    assert torch.equal(after, before)
