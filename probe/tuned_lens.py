"""A multilingual tuned lens (Belrose et al. 2023, trained on parallel text in many languages).

Per layer an affine translator ``h -> h + A h + b`` (A and b start at zero: the logit lens)
maps the layer's state to what the final layer would say; it is trained to minimise
KL(final distribution || lens distribution) over token positions of sentences in every language
given, all layers at once on the same batches (the final distribution is computed once per
batch). Training resumes from its checkpoint (safetensors: translators, Adam moments, step);
a checkpoint of more steps than asked for is not reused. Each step's batch is drawn when it is
needed, so memory does not grow with the number of steps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .checks import COUNT, COUNT_OR_NONE, RATE, SEED, check_numbers
from .errors import DataError, notice
from .lens import LogitLens
from .store import CorruptFile, load_tensors, save_tensors


@dataclass
class TunedLens:
    """Translators for ``layers``: weight (layers, d, d), bias (layers, d), trained ``steps``."""

    layers: list[int]
    weight: torch.Tensor
    bias: torch.Tensor
    steps: int = 0

    @classmethod
    def identity(cls, layers: list[int], hidden: int) -> TunedLens:
        return cls(list(layers), torch.zeros(len(layers), hidden, hidden),
                   torch.zeros(len(layers), hidden))

    def translate(self, index: int, states: torch.Tensor) -> torch.Tensor:
        """Layer ``layers[index]``'s states (n, d) as the final layer would hold them."""
        states = states.float()
        return states + states @ self.weight[index].T + self.bias[index]


def kl_to_final(lens: LogitLens, states: torch.Tensor, tuned: TunedLens | None = None,
                batch_size: int = 64) -> torch.Tensor:
    """(layers, n) KL(final || layer) in nats, through the logit lens or the tuned lens."""
    out = torch.empty(states.shape[0], states.shape[1])
    with torch.inference_mode():
        for start in range(0, states.shape[1], batch_size):
            rows = slice(start, start + batch_size)
            final = lens.log_probs(states[-1, rows]).cpu()
            for index in range(states.shape[0]):
                hidden = states[index, rows]
                if tuned is not None and index < len(tuned.layers):
                    hidden = tuned.translate(index, hidden)
                out[index, rows] = kl(final, lens.log_probs(hidden).cpu())
    return out


def kl(target: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis from log-probabilities (terms with p = 0 count 0)."""
    p = target.exp()
    return torch.where(p > 0, p * (target - logq), torch.zeros_like(p)).sum(-1)


@dataclass(frozen=True)
class TuningConfig:
    steps: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    save_every: int = 20

    def __post_init__(self) -> None:
        check_numbers({"tuned-lens steps": (self.steps, COUNT_OR_NONE),
                       "tuned-lens batch size": (self.batch_size, COUNT),
                       "tuned-lens learning rate": (self.lr, RATE),
                       "tuned-lens seed": (self.seed, SEED),
                       "tuned-lens save_every": (self.save_every, COUNT)})


def batch_rows(positions: int, batch_size: int, seed: int, start: int = 0
               ) -> Iterator[torch.Tensor]:
    """Each step's rows (a random ``batch_size`` of ``positions``), drawn as they are needed:
    the same sequence for a ``seed`` whatever the ``start`` step (earlier draws are dropped)."""
    generator = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        rows = torch.randperm(positions, generator=generator)[:batch_size]
        if step >= start:
            yield rows
        step += 1


def train_tuned_lens(lens: LogitLens, states: torch.Tensor, config: TuningConfig,
                     checkpoint: Path, identity: dict, progress: Callable[[int, float], None]
                     | None = None) -> TunedLens:
    """Translators for every layer but the last (which is the model's own output), trained on
    ``states`` (layers, n, d) for ``config.steps`` steps; resumes from ``checkpoint`` when it
    holds the same settings and at most that many steps (one of more steps is trained anew)."""
    if states.shape[1] < config.batch_size:
        raise DataError(f"{states.shape[1]} training positions for batches of "
                        f"{config.batch_size}: give the tuned lens more sentences")
    layers = lens.layers[:-1]
    device = lens.loaded.device
    kept = {k: v for k, v in asdict(config).items() if k not in ("steps", "save_every")}
    settings = json.dumps({"config": kept, "layers": layers, "identity": identity,
                           "positions": states.shape[1]}, sort_keys=True, default=str)
    weight = torch.zeros(len(layers), states.shape[-1], states.shape[-1], device=device)
    bias = torch.zeros(len(layers), states.shape[-1], device=device)
    step = 0
    saved, meta = _resume(checkpoint, settings)
    if saved and int(meta["step"]) > config.steps:
        notice(f"{checkpoint} holds a tuned lens of {meta['step']} steps, more than the "
               f"{config.steps} asked for; training {config.steps} steps from the start")
        saved, meta = {}, {}
    if saved:
        weight.copy_(saved["weight"])
        bias.copy_(saved["bias"])
        step = int(meta["step"])
    weight.requires_grad_()
    bias.requires_grad_()
    tuned = TunedLens(layers, weight, bias)
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    if saved:  # Adam's moments and step count, as they were
        for name, parameter in (("weight", weight), ("bias", bias)):
            optimizer.state[parameter] = {
                "step": torch.tensor(float(step)),
                "exp_avg": saved[f"{name}.exp_avg"].to(device),
                "exp_avg_sq": saved[f"{name}.exp_avg_sq"].to(device)}
    frozen = [p for p in lens.loaded.model.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    batches = batch_rows(states.shape[1], config.batch_size, config.seed, start=step)
    try:
        while step < config.steps:
            rows = next(batches)
            with torch.no_grad():
                final = lens.log_probs(states[-1, rows], differentiable=True)
            optimizer.zero_grad()
            loss = 0.0
            for index in range(len(layers)):  # layers are independent: one graph at a time
                hidden = tuned.translate(index, states[index, rows].to(device))
                layer_loss = kl(final, lens.log_probs(hidden, differentiable=True)).mean() / len(layers)
                layer_loss.backward()
                loss += float(layer_loss.detach())
            optimizer.step()
            step += 1
            if progress is not None:
                progress(step, loss)
            if step % config.save_every == 0 or step == config.steps:
                _save(checkpoint, weight, bias, optimizer, step, settings)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
    return TunedLens(layers, weight.detach(), bias.detach(), step)


def _resume(path: Path, settings: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A checkpoint's tensors and metadata if it exists, is intact and has these settings."""
    if not path.exists():
        return {}, {}
    try:
        saved, meta = load_tensors(path)
    except CorruptFile:
        return {}, {}
    return (saved, meta) if meta.get("settings") == settings else ({}, {})


def _save(path: Path, weight: torch.Tensor, bias: torch.Tensor,
          optimizer: torch.optim.Optimizer, step: int, settings: str) -> None:
    tensors = {"weight": weight.detach(), "bias": bias.detach()}
    for name, parameter in (("weight", weight), ("bias", bias)):
        state = optimizer.state[parameter]
        tensors[f"{name}.exp_avg"] = state["exp_avg"]
        tensors[f"{name}.exp_avg_sq"] = state["exp_avg_sq"]
    save_tensors(tensors, path, {"step": str(step), "settings": settings})
