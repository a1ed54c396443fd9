"""Records -> token ids with the loss on the response only: Alpaca prompt (label -100), response
and EOS (labelled). Records longer than ``max_length`` are counted and left out, not cut."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layer_analysis.probe.errors import DataError
from layer_analysis.probe.prompts import alpaca_prompt

from .records import Record, Report

IGNORE = -100


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    origin: str


def encode(records: list[Record], tokenizer, max_length: int, report: Report) -> list[Example]:
    """Tokenise prompt and response separately (so the boundary is exact), append EOS."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token; training needs one to end responses")
    prompts = tokenizer([alpaca_prompt(r.instruction, r.input) for r in records]).input_ids
    responses = tokenizer([r.output for r in records], add_special_tokens=False).input_ids
    examples = []
    for record, prompt, response in zip(records, prompts, responses, strict=True):
        response = [*response, tokenizer.eos_token_id]
        if len(prompt) + len(response) > max_length:
            component = record.origin.rsplit(":", 1)[0]
            report.reject(component, f"over {max_length} tokens")
            report.kept[component] -= 1
            continue
        examples.append(Example([*prompt, *response], [IGNORE] * len(prompt) + response,
                                record.origin))
    if not examples:
        raise DataError(f"no record fits in {max_length} tokens; raise --max-length")
    return examples


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on prompt and padding)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batches(examples: list[Example], batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    """Deterministic batches of example indices for ``epoch``: shuffled, then sorted by length
    within windows of 50 batches (less padding), then the batch order shuffled again."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(examples), generator=generator).tolist()
    window = batch_size * 50
    grouped: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -len(examples[i].input_ids))
        grouped += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(grouped), generator=generator).tolist()
    return [grouped[i] for i in shuffle]
