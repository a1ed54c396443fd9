"""Find the parts of a decoder-only model by structure, not by class name.

Works for decoders that keep their blocks in one ``nn.ModuleList`` beside the token embedding,
with or without a PEFT wrapper around them: Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3, OLMo 2,
GPT-NeoX, GPT-2, BLOOM, Falcon and their relatives (``tests/families.py`` holds the tested matrix).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .errors import ModelError

CAUSAL_LM_CLASSES = frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")


@dataclass(frozen=True)
class DecoderParts:
    """The modules the probe needs: the body that runs embeddings and blocks, the blocks (whose
    first one's input is layer 0: token embeddings plus whatever the family adds before block 1,
    e.g. GPT-2's position embeddings, Gemma's scaling, BLOOM's embedding norm) and the final norm."""

    body: nn.Module
    embeddings: nn.Module
    blocks: nn.ModuleList
    final_norm: nn.Module | None

    @property
    def num_layers(self) -> int:
        """Layer 0 is the embedding output; layer i (1..num_blocks) the output of block i."""
        return len(self.blocks) + 1


def find_decoder(model: nn.Module) -> DecoderParts:
    """Locate body, embeddings and decoder blocks of ``model`` or raise a clear ``ModelError``."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", type(model).__name__)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"model type {kind!r} is an encoder-decoder; the probe needs a decoder-only LM")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    name = type(inner).__name__
    if name not in CAUSAL_LM_CLASSES and "CausalLM" not in name:
        raise ModelError(f"{name} is not a causal (decoder-only) language model; the probe needs "
                         "one (encoder-only and encoder-decoder models are unsupported)")
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        embeddings = None
    if embeddings is None:
        raise ModelError(f"model type {kind!r} exposes no input embeddings; unsupported")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    expected = getattr(text_config, "num_hidden_layers", None)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and (expected is None or len(module) == expected)
        and len({type(block) for block in module}) == 1
    ]
    for name, blocks in candidates:
        body = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if any(sub is embeddings for sub in body.modules()):
            norms = [getattr(body, n) for n in FINAL_NORM_NAMES if hasattr(body, n)]
            return DecoderParts(body, embeddings, blocks, norms[0] if norms else None)
    raise ModelError(
        f"{type(inner).__name__} (model type {kind!r}) is not a supported decoder: found no list of "
        f"{expected or 'N'} identical blocks beside the token embedding"
    )

