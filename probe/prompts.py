"""Prompts: the Stanford Alpaca wrapper, and translation instructions (paraphrases rotated by line
for training, the first one fixed for evaluation, as x-LLM did)."""

from __future__ import annotations

from .languages import display_name

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)

# Written for this project; {source} and {target} are English language names.
TRANSLATION_INSTRUCTIONS = (
    "Translate the following sentences from {source} to {target}.",
    "Translate this text from {source} into {target}.",
    "Render the following {source} sentence in {target}.",
    "Please give the {target} translation of the {source} text below.",
    "What is the {target} for the following {source} sentence?",
    "Convert the sentence below from {source} to {target}, keeping its meaning.",
    "Provide a faithful {target} translation of this {source} passage.",
    "Rewrite the following {source} text in {target}.",
    "Translate into {target}: the text below is written in {source}.",
    "I need this {source} sentence translated to {target}.",
    "Express the meaning of the following {source} sentence in {target}.",
    "Produce a fluent {target} version of the {source} sentence that follows.",
)


def alpaca_prompt(instruction: str, input: str = "") -> str:
    """The Alpaca prompt up to and including ``### Response:\\n``."""
    if input and input.strip():
        return ALPACA_WITH_INPUT.format(instruction=instruction, input=input)
    return ALPACA_WITHOUT_INPUT.format(instruction=instruction)


def translation_instruction(source: str, target: str, line: int | None = None) -> str:
    """Instruction for translating ``source`` -> ``target`` (canonical codes). Training rotates
    the paraphrases by ``line``; evaluation (``line=None``) always uses the first."""
    template = TRANSLATION_INSTRUCTIONS[0 if line is None else line % len(TRANSLATION_INSTRUCTIONS)]
    return template.format(source=display_name(source), target=display_name(target))
