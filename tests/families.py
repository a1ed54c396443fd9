"""Tiny random decoders of many families, built from configs (no downloads), for the test matrix.

Each family is built with the tokenizer behaviour of its family: ``bos`` says whether its real
tokenizer adds a BOS token (Llama, Mistral, Gemma, Phi-3 do; Qwen, OLMo 2, GPT-NeoX, GPT-2,
BLOOM, Falcon do not — their first real token becomes the attention sink).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import transformers


@dataclass(frozen=True)
class Family:
    name: str
    config: str
    model: str
    bos: bool
    extra: dict[str, Any]


_ROPE = dict(num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
             max_position_embeddings=512)
FAMILIES = [
    Family("llama", "LlamaConfig", "LlamaForCausalLM", True, _ROPE),
    Family("mistral", "MistralConfig", "MistralForCausalLM", True, _ROPE),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", False, _ROPE),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", False, {**_ROPE, "head_dim": 16}),
    Family("gemma2", "Gemma2Config", "Gemma2ForCausalLM", True,
           {**_ROPE, "head_dim": 16, "sliding_window": 16, "query_pre_attn_scalar": 16}),
    Family("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", True,
           {**_ROPE, "head_dim": 16, "sliding_window": 16, "query_pre_attn_scalar": 16}),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", True, _ROPE),
    Family("olmo2", "Olmo2Config", "Olmo2ForCausalLM", False, _ROPE),
    Family("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", False,
           dict(num_attention_heads=4, intermediate_size=128, max_position_embeddings=512)),
    Family("gpt2", "GPT2Config", "GPT2LMHeadModel", False,
           dict(n_embd=64, n_layer=4, n_head=4, n_positions=512)),
    Family("bloom", "BloomConfig", "BloomForCausalLM", False, dict(n_head=4, n_layer=4)),
    Family("falcon", "FalconConfig", "FalconForCausalLM", False,
           dict(num_attention_heads=4, num_kv_heads=4, new_decoder_architecture=False)),
]


def build_family(family: Family, vocab_size: int) -> torch.nn.Module:
    """A 4-block, d=64 random model of ``family`` in eval mode (seeded)."""
    torch.manual_seed(0)
    config_class = getattr(transformers, family.config)
    common = dict(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=4,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = config_class(**{**common, **family.extra})
    return getattr(transformers, family.model)(config).eval()
