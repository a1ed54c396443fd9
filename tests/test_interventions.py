"""LAPE selection by hand, the neuron controls, and the intervention hooks on a tiny model: each
does exactly what it says inside its block and nothing after it."""

from __future__ import annotations

import pytest
import torch

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.extract import ExtractionConfig, Extractor
from layer_analysis.probe.interventions import (
    LinearMap,
    deactivated,
    mapped,
    random_direction,
    steered,
)
from layer_analysis.probe.models import load_model
from layer_analysis.probe.neurons import (
    LapeThresholds,
    activation_modules,
    compare_masks,
    lape,
    random_like,
    sentence_nll,
)

SENTENCES = ["The bakery opens at seven.", "Die Bäckerei öffnet um sieben.", "Ok.",
             "Heavy rain is expected across the north tomorrow."]
# (blocks 2, neurons 4, languages [en, de]); 16 values, sorted:
# 0 0 0 .01 .1 .2 .3 .35 .4 .45 .5 .5 .55 .6 .8 .9
PROBS = torch.tensor([[[0.9, 0.0], [0.5, 0.5], [0.01, 0.0], [0.3, 0.35]],
                      [[0.0, 0.8], [0.6, 0.55], [0.2, 0.1], [0.4, 0.45]]])


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), device="cpu", dtype="float32")


def positions(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(p) for p in mask.nonzero().tolist()}


def test_lape_by_hand():
    # filter: some language above the 8th value (0.35) -> drops (0,2), (0,3), (1,2);
    # lowest entropy 2 of 8: (0,0) and (1,0) (entropy 0); bar: above the 12th value (0.5)
    specific = lape(PROBS, LapeThresholds(top_rate=0.25, filter_rate=0.5, bar_rate=0.75))
    assert positions(specific[0]) == {(0, 0)} and positions(specific[1]) == {(1, 0)}
    # 4 of 8: adds (1,3) (above the bar for neither language) and (1,1) (above it for both)
    specific = lape(PROBS, LapeThresholds(top_rate=0.5, filter_rate=0.5, bar_rate=0.75))
    assert positions(specific[0]) == {(0, 0), (1, 1)}
    assert positions(specific[1]) == {(1, 0), (1, 1)}


def test_lape_rejects_bad_thresholds_and_one_language():
    with pytest.raises(DataError, match="top-rate"):
        LapeThresholds(top_rate=0.0)
    with pytest.raises(DataError, match="two languages"):
        lape(PROBS[..., :1])


def test_compare_masks_counts_what_appears_and_vanishes():
    before = torch.tensor([[[True, True, False, False]]])
    after = torch.tensor([[[False, True, True, True]]])
    row = compare_masks(before, after, ["de"]).iloc[0]
    assert (row.kept, row.vanished, row.appeared, row.jaccard) == (1, 1, 2, 0.25)


def test_random_control_matches_counts_and_avoids_the_language_neurons():
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[0, :5] = True
    mask[2, 10:30] = True
    control = random_like(mask, seed=1, exclude=mask)
    assert control.sum(-1).tolist() == mask.sum(-1).tolist()
    assert not (control & mask).any()
    assert torch.equal(control, random_like(mask, seed=1, exclude=mask))


def test_deactivation_zeroes_exactly_the_chosen_neurons(loaded):
    extractor = Extractor(loaded, ExtractionConfig())
    acts = activation_modules(extractor.parts)
    mask = torch.zeros(len(acts), 128, dtype=torch.bool)
    mask[1, [3, 7, 64]] = True
    seen = []
    inputs = loaded.tokenizer(SENTENCES[0], return_tensors="pt")
    with torch.no_grad(), deactivated(extractor.parts, mask):
        # registered after the deactivation's own hook, so it sees what the MLP goes on with
        handle = acts[1].register_forward_hook(lambda _m, _i, out: seen.append(out))
        loaded.model(**inputs)
    handle.remove()
    out = seen[0]
    assert torch.all(out[..., [3, 7, 64]] == 0)
    assert torch.count_nonzero(out[..., :3]) > 0


def test_steering_adds_exactly_the_vector_at_its_layer(loaded):
    extractor = Extractor(loaded, ExtractionConfig())
    parts = extractor.parts
    vector = torch.randn(64)
    inputs = loaded.tokenizer(SENTENCES[0], return_tensors="pt")
    seen: list[torch.Tensor] = []  # what block 3 reads: block 2's output as it flows on
    handle = parts.blocks[2].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        loaded.model(**inputs)
        with steered(parts, 2, vector, 0.5):
            loaded.model(**inputs)
    handle.remove()
    torch.testing.assert_close(seen[1], seen[0] + 0.5 * vector)
    with pytest.raises(DataError, match=r"layers 1\.\.4"), steered(parts, 5, vector):
        pass


def test_an_identity_map_changes_nothing_and_decoding_steps_are_left_alone(loaded):
    parts = Extractor(loaded, ExtractionConfig()).parts
    identity = LinearMap(torch.eye(64), torch.zeros(64), 1.0)
    shift = LinearMap(torch.eye(64), torch.full((64,), 5.0), 1.0)
    inputs = loaded.tokenizer(SENTENCES[3], return_tensors="pt")
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with mapped(parts, 3, identity):
            same = loaded.model(**inputs).logits
        one = {k: v[:, :1] for k, v in inputs.items()}
        with mapped(parts, 3, shift):
            moved = loaded.model(**inputs).logits
            single = loaded.model(**one).logits
        single_plain = loaded.model(**one).logits
    torch.testing.assert_close(same, plain)
    assert not torch.allclose(moved, plain)
    assert torch.equal(single, single_plain)


def test_the_map_leaves_attention_sink_states_alone(loaded):
    parts = Extractor(loaded, ExtractionConfig()).parts
    zero = LinearMap(torch.zeros(64, 64), torch.zeros(64), 1.0)  # maps every state to 0
    inputs = loaded.tokenizer(SENTENCES[3], return_tensors="pt")
    seen: list[torch.Tensor] = []

    def sink_at_start(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, 0] *= 1000.0
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = parts.blocks[2].register_forward_hook(sink_at_start)  # before the map's hook
    try:
        with torch.no_grad(), mapped(parts, 3, zero):
            probe = parts.blocks[3].register_forward_pre_hook(
                lambda _m, args: seen.append(args[0]))
            loaded.model(**inputs)
            probe.remove()
    finally:
        handle.remove()
    states = seen[0][0]
    assert float(states[0].norm()) > 0  # the sink kept its state
    assert torch.all(states[1:] == 0)  # every ordinary state went to the map's image


def test_the_linear_map_recovers_a_known_map():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 16, generator=generator)
    weight, bias = torch.randn(16, 16, generator=generator), torch.randn(16, generator=generator)
    fitted = LinearMap.fit(x, x @ weight + bias + 0.01 * torch.randn(400, 16, generator=generator))
    torch.testing.assert_close(fitted.weight, weight, atol=0.02, rtol=0.02)
    torch.testing.assert_close(fitted.bias, bias, atol=0.02, rtol=0.02)
    assert not fitted.ridge_at_edge
    unrelated = torch.Generator().manual_seed(1)  # a draw where leave-one-out wants the most
    noise = LinearMap.fit(torch.randn(60, 32, generator=unrelated),
                          torch.randn(60, 32, generator=unrelated))
    assert noise.ridge == 1e5 and noise.ridge_at_edge
    with pytest.raises(DataError, match="paired"):
        LinearMap.fit(x, x[:10])


def test_random_direction_has_the_norm_it_replaces():
    like = torch.randn(64) * 3
    assert torch.isclose(random_direction(like, seed=2).norm(), like.norm())
    assert torch.equal(random_direction(like, seed=2), random_direction(like, seed=2))


def test_sentence_nll_equals_the_model_s_own_loss(loaded):
    nll = sentence_nll(Extractor(loaded, ExtractionConfig()), SENTENCES, batch_size=3)
    for sentence, value in zip(SENTENCES, nll, strict=True):
        inputs = loaded.tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            loss = loaded.model(**inputs, labels=inputs["input_ids"]).loss
        assert abs(float(loss) - float(value)) < 1e-5


def test_hooks_work_through_a_peft_adapter_and_are_removed(loaded):
    import copy

    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(loaded.model), LoraConfig(r=4, target_modules=["q_proj"]))
    wrapped = type(loaded)(model, loaded.tokenizer, "peft")
    parts = Extractor(wrapped, ExtractionConfig()).parts
    mask = torch.ones(4, 128, dtype=torch.bool)
    inputs = loaded.tokenizer(SENTENCES[1], return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).logits
        with deactivated(parts, mask):
            off = model(**inputs).logits
        after = model(**inputs).logits
    assert not torch.allclose(off, before)
    assert torch.equal(after, before)
