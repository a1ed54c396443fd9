"""One training loop for every recipe: LoRA (peft) or full fine-tuning of a causal LM on a
mixture, loss on responses only, gradient accumulation, cosine schedule with warm-up,
resumable checkpoints. Runs as one process or under ``accelerate launch`` / ``torchrun``
(DDP; FSDP for full fine-tuning via an accelerate config).

Robustness (each one tested):

- One writer: the main process holds ``probe.files.writer_lock(OUTPUT)`` for the whole run; an
  OUTPUT that is a file, a symbolic link, a directory that is no training run of this loop (a
  probe run, files it did not write, alone or beside its own: ``check_output``), a finished
  run (without ``resume``) or an unfinished one (without ``resume``) is refused before the
  model loads, and before the lock is taken (a refused directory is left as it was).
- Divergence: a non-finite loss or gradient (checked at every optimizer step, the verdict
  reduced over the processes) or non-finite weights at a checkpoint stop the run with a
  ``ModelError`` naming the step; the checkpoints saved before it are kept and nothing final
  (weights, ``training.json``) is written. A logged loss above ``RISE`` times the first logged
  loss is said once (a notice, and in ``training.json``'s ``warnings``).
- Checkpoints: each one's ``checksums.json`` (SHA-256 of every file) is written last. On resume
  a damaged one (a file missing, truncated or changed, or no checksums) is set aside as
  ``checkpoints/damaged-step-N`` with a notice and the previous good one is used; with none
  good, training starts again from step 0 (a notice; the damaged ones stay set aside).
- Resume: log lines after the checkpoint, and a partial last line, are dropped; time, tokens
  and tracking time are carried in each checkpoint, so ``training.json`` counts every session
  (the work redone after a kill counted once). Resuming a finished run changes nothing and says
  so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from layer_analysis.probe.architecture import find_decoder
from layer_analysis.probe.errors import DataError, ModelError, StoreError, notice
from layer_analysis.probe.files import WRITER_LOCK, atomic_write_text, writer_lock
from layer_analysis.probe.models import first_non_finite, load_model
from layer_analysis.probe.runs import check_not_a_file, run_kind

from .encode import IGNORE, batches, collate, encode
from .mixture import Mixture, build_mixture
from .objective import AlignmentObjective, PairBatches, alignment_loss
from .records import Record, Report
from .tracking import (
    ALIGNMENT_LOG,
    COLUMNS,
    AlignmentTracker,
    TrackingConfig,
    read_train_log,
    tracked_languages,
    tracking_hook,
    write_report,
)

CHECKPOINTS = "checkpoints"
STATE = "trainer_state.json"
CHECKSUMS = "checksums.json"  # written last in a checkpoint: SHA-256 of each of its files
LOG = "train_log.jsonl"
SUMMARY = "training.json"  # written last: a directory holding it is a finished run
RISE = 10.0  # a logged loss above RISE x the first logged loss is said (once per session)
clock = time.perf_counter  # the training time's clock (tests replace it)


@dataclass
class TrainConfig:
    """Everything one run needs (the ``train`` command's options)."""

    mixture: str
    output: Path
    model: str = "smollm2-135m"
    full: bool = False  # full fine-tuning instead of LoRA
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] | None = None  # default: every linear layer of the blocks
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: float = 0.03  # share of the optimizer steps
    max_length: int = 256
    seed: int = 0
    save_every: int = 100  # optimizer steps between checkpoints
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    dtype: str = "auto"
    resume: bool = False
    progress: bool = True
    alignment: AlignmentObjective = field(default_factory=AlignmentObjective)
    tracking: TrackingConfig | None = None  # probe alignment while training

    def __post_init__(self) -> None:
        at_least_one = {"batch size": self.batch_size, "grad-accum": self.grad_accum,
                        "lora-r": self.lora_r, "save-every": self.save_every,
                        "log-every": self.log_every, "keep-checkpoints": self.keep_checkpoints,
                        "max-steps": 1 if self.max_steps is None else self.max_steps}
        bad = [f"{name} {value}" for name, value in at_least_one.items() if value < 1]
        if bad:
            raise DataError(f"must be at least 1: {', '.join(bad)}")
        if not (0 < self.lr < math.inf and 0 < self.epochs < math.inf and 0 <= self.warmup < 1):
            raise DataError(f"need lr > 0, epochs > 0 (both finite) and 0 <= warmup < 1 (got "
                            f"lr {self.lr}, epochs {self.epochs}, warmup {self.warmup})")
        if not (0 <= self.lora_dropout < 1 and 0 <= self.weight_decay < math.inf):
            raise DataError(f"need 0 <= lora dropout < 1 and a finite weight decay >= 0 (got "
                            f"{self.lora_dropout}, {self.weight_decay})")
        if self.max_length < 8:
            raise DataError(f"max length must be at least 8 tokens, got {self.max_length}")


class ResponseOnlyLM(nn.Module):
    """Mean cross-entropy of the response tokens, the LM head applied to those positions only
    (it is the largest matrix product of a small model: 2.5x faster on CPU measured); with an
    alignment objective, plus its weight times the InfoNCE loss of a batch of pairs.
    ``forward`` returns ``{"loss", "lm", "alignment"}`` (the last two detached)."""

    def __init__(self, model: nn.Module, objective: AlignmentObjective | None = None) -> None:
        super().__init__()
        self.model = model
        self.objective = objective = objective or AlignmentObjective()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
            else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self._no_split_modules = getattr(model, "_no_split_modules", None)  # for FSDP wrapping
        parts = find_decoder(model)
        object.__setattr__(self, "_parts", parts)  # not a second submodule
        self.align_layers = objective.check_layers(parts.num_layers) if objective.active else ()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                pair_ids: torch.Tensor | None = None, pair_attention: torch.Tensor | None = None,
                pair_pool: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self._parts.body(input_ids=input_ids, attention_mask=attention_mask,
                                  use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE
        logits = self.model.get_output_embeddings()(hidden[:, :-1][keep]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        lm = F.cross_entropy(logits, targets[keep])
        if pair_ids is None:
            return {"loss": lm, "lm": lm.detach(), "alignment": torch.zeros((), device=lm.device)}
        alignment = alignment_loss(self._parts, self.align_layers, self.objective.temperature,
                                   pair_ids, pair_attention, pair_pool)
        return {"loss": lm + self.objective.weight * alignment, "lm": lm.detach(),
                "alignment": alignment.detach()}


def lora_targets(model: nn.Module) -> list[str]:
    """Names of the linear layers inside the decoder blocks (q/k/v/o, MLP), found by structure."""
    block = find_decoder(model).blocks[0]
    names = sorted({name.rsplit(".", 1)[-1] for name, module in block.named_modules()
                    if isinstance(module, nn.Linear)})
    if not names:
        raise ModelError("found no linear layers in the decoder blocks to put LoRA on")
    return names


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB on Linux


def checkpoints(output: Path) -> list[Path]:
    """The checkpoint directories of ``output`` (``checkpoints/step-N``), newest first, not
    verified."""
    found = [p for p in (output / CHECKPOINTS).glob("step-*")
             if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def checkpoint_damage(directory: Path) -> str | None:
    """Why ``directory`` is no good checkpoint (no checksums, a file missing or changed), or
    None when every file it recorded has its SHA-256."""
    try:
        recorded = json.loads((directory / CHECKSUMS).read_text())
    except FileNotFoundError:
        return f"no {CHECKSUMS}"
    except (OSError, ValueError):
        return f"{CHECKSUMS} unreadable"
    if not isinstance(recorded, dict) or STATE not in recorded:
        return f"{CHECKSUMS} is not a checkpoint's"
    for name, digest in sorted(recorded.items()):
        try:
            actual = _sha256(directory / name)
        except OSError:
            return f"{name} missing"
        if actual != digest:
            return f"{name} fails its checksum"
    return None


def usable_checkpoint(output: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest good checkpoint (None: none), and the damaged ones newer than it, with why."""
    damaged = []
    for directory in checkpoints(output):
        why = checkpoint_damage(directory)
        if why is None:
            return directory, damaged
        damaged.append((directory, why))
    return None, damaged


@dataclass
class TrainResult:
    summary: dict  # what training.json holds
    model: nn.Module | None  # the trained model (PEFT-wrapped for LoRA), unwrapped from
    # accelerate; None when a finished run was asked to resume (nothing trained)
    report: Report  # records kept and rejected, per component
    main_process: bool = True  # False in the other processes of a multi-process run


NEW, FINISHED, UNFINISHED = "new", "finished", "unfinished"  # what an OUTPUT holds


# What a run writes beside its logs and checkpoints, at its end only: save_pretrained's files
# (LoRA: the adapter and its model card; full: the model, its configs and the tokenizer's), its
# staging directory (.final-*), and the tracking report. Taken for ours beside checkpoints of ours.
FINAL_FILES = {"adapter_model.safetensors", "adapter_config.json", "README.md", "config.json",
               "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt",
               "added_tokens.json", "alignment.html"}
_LOG_KEYS = {"step", "loss"}  # of every train_log.jsonl entry
_SUMMARY_KEYS = {"config", "model", "steps"}  # of every training.json


def _json_keys(path: Path) -> set[str]:
    """The keys of a JSON object file (none when it is unreadable or no object)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return set(saved) if isinstance(saved, dict) else set()


def _ours_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` is a checkpoint this loop saved (maybe damaged since): its
    ``trainer_state.json`` or its ``checksums.json`` is one."""
    return ({"step", "settings"} <= _json_keys(directory / STATE)
            or STATE in _json_keys(directory / CHECKSUMS))


def _ours_log(path: Path) -> bool:
    """Whether ``path`` is a training log this loop wrote (empty, or entries of ours; a partial
    last line the start of one)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    *lines, partial = text.split("\n")
    try:
        entries = [json.loads(line) for line in lines]
    except ValueError:
        return False
    opening = '{"step": '
    return (all(isinstance(e, dict) and e.keys() >= _LOG_KEYS for e in entries)
            and (partial.startswith(opening) or opening.startswith(partial)))


def _ours_alignment_log(path: Path) -> bool:
    """Whether ``path`` is an alignment log the tracker wrote (its columns)."""
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return False
    return set(COLUMNS) <= set(header)


def _foreign(output: Path) -> list[str]:
    """What in ``output`` (a directory that is no finished run) this loop did not write: any
    link, logs that are not its, ``checkpoints/`` entries that are not its checkpoints, the
    final files (``FINAL_FILES``) without a checkpoint of its beside them, anything else."""
    entries = {p.name: p for p in output.iterdir()} if output.is_dir() else {}
    found = [name for name, path in entries.items() if path.is_symlink()]
    steps = entries.get(CHECKPOINTS)
    ours = False  # a checkpoint of this loop is there
    if steps is not None and not steps.is_symlink():
        if not steps.is_dir():
            found.append(CHECKPOINTS)
        for checkpoint in sorted(steps.iterdir()) if steps.is_dir() else []:
            staging = checkpoint.name.startswith(".tmp-")  # of a kill while saving
            name = checkpoint.name.removeprefix("damaged-").removeprefix(".tmp-")
            fits = (name.startswith("step-") and name[5:].isdigit() and checkpoint.is_dir()
                    and not checkpoint.is_symlink())
            if fits and not staging:
                fits = _ours_checkpoint(checkpoint)
                ours = ours or fits
            if not fits:
                found.append(f"{CHECKPOINTS}/{checkpoint.name}")
    atomic = {f".{name}." for name in (SUMMARY, LOG, ALIGNMENT_LOG, "alignment.html")}
    for name, path in entries.items():
        if name in found or name in (WRITER_LOCK, CHECKPOINTS):
            continue
        if name == LOG:
            mine = _ours_log(path)
        elif name == ALIGNMENT_LOG:
            mine = _ours_alignment_log(path)
        elif name.endswith(".tmp") and any(name.startswith(a) for a in atomic):
            mine = path.is_file()  # of an atomic write killed on the way
        else:
            mine = ours and (name in FINAL_FILES or name.startswith(".final-"))
        if not mine:
            found.append(name)
    return sorted(found)


def check_output(config: TrainConfig, say: bool = True) -> str:
    """What ``config.output`` holds — ``NEW`` (nothing, or only the log of a run killed before
    its first checkpoint), ``FINISHED`` or ``UNFINISHED`` (checkpoints) — checked against
    ``resume``: a finished run is never overwritten, checkpoints are resumed only when asked
    to. A link, and a directory that is no training run of this loop (a probe run; unrelated
    files, alone or beside a run's; logs, checkpoints or a training.json that are not its) are
    refused, naming the directory. ``say``: the notice about a restarted run."""
    output = config.output
    if output.is_symlink():
        raise StoreError(f"{output} is a symbolic link (to {os.readlink(output)}); a training "
                         "run is written where it is named: choose another --output")
    check_not_a_file(output)
    names = {p.name for p in output.iterdir()} - {WRITER_LOCK} if output.is_dir() else set()
    steps = output / CHECKPOINTS
    if names == {CHECKPOINTS} and steps.is_dir() and not steps.is_symlink() \
            and not any(steps.iterdir()):
        names = set()  # an empty checkpoints/ only: nothing there yet
    if not names:
        if config.resume:
            raise DataError(f"--resume: {output} holds no checkpoint to resume from")
        return NEW
    kind = run_kind(output)
    if kind is not None:
        raise DataError(f"{output} holds a probe run (kind: {kind}), not a training run; "
                        "choose another --output")
    if SUMMARY in names and _json_keys(output / SUMMARY) >= _SUMMARY_KEYS:
        if not config.resume:
            raise DataError(f"{output} holds a finished training run; choose another --output")
        return FINISHED
    foreign = _foreign(output)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise DataError(f"{output} holds files that are not a training run's of this tool "
                        f"({shown}); nothing is written into it: choose a new or empty --output")
    if checkpoints(output):
        if not config.resume:
            raise DataError(f"{output} holds checkpoints of an unfinished run: pass --resume "
                            "to continue it, or choose another --output")
        return UNFINISHED
    if config.resume:
        raise DataError(f"--resume: {output} holds no checkpoint to resume from")
    if say:
        notice(f"{output} holds the log of a run stopped before its first checkpoint: training "
               "starts again")
    return NEW


def make_trainable(model: nn.Module, config: TrainConfig) -> tuple[nn.Module, str]:
    """The model to train (LoRA-wrapped unless ``full``) and a line saying what trains."""
    if config.full:
        return model, "all parameters"
    from peft import LoraConfig, get_peft_model

    targets = list(config.lora_targets or lora_targets(model))
    model = get_peft_model(model, LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=targets, task_type="CAUSAL_LM"))
    return model, f"LoRA r={config.lora_r} on {', '.join(targets)}"


def resume_settings(config: TrainConfig) -> dict:
    """The settings a resumed run must share with its checkpoint (not where or how it logs)."""
    return {k: v for k, v in asdict(config).items()
            if k not in ("resume", "progress", "save_every", "keep_checkpoints", "log_every",
                         "output", "device", "tracking")}


def data_fingerprint(records: Sequence[Record]) -> str:
    """SHA-256 of the training records in order (a resume must train on the same data)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.instruction, record.input, record.output],
                                 ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def checkpoint_record(checkpoint: Path, settings: dict) -> dict:
    """A checkpoint's ``trainer_state.json`` (step, settings, and what the run had done);
    other settings than the checkpoint's are an error naming each difference."""
    saved = json.loads((checkpoint / STATE).read_text())
    changed = {k: (saved["settings"].get(k), v) for k, v in json.loads(
        json.dumps(settings, default=str)).items() if saved["settings"].get(k) != v}
    if changed:
        raise DataError(f"--resume with other settings than {checkpoint}: " + "; ".join(
            f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    return saved


def trim_log(path: Path, step: int) -> None:
    """Drop log lines written after ``step`` (a run killed between checkpoints) and a partial
    last line."""
    kept = [entry for entry in read_train_log(path) if entry["step"] <= step]
    text = "".join(json.dumps(entry) + "\n" for entry in kept)
    if path.exists() and path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


@dataclass
class Progress:
    """What a run has done; ``done`` is carried across resumes in each checkpoint."""

    step: int = 0
    done: dict = field(default_factory=lambda: {"seconds": 0.0, "tokens": 0,
                                                "tracking_seconds": 0.0})  # up to ``step``
    tokens: int = 0  # trained on in this session, by this process
    first_loss: float | None = None  # the first logged loss of the run
    last_loss: float | None = None
    warnings: list[str] = field(default_factory=list)

    def rose(self, loss: float, step: int) -> None:
        """Say it (once) when a logged loss rises above ``RISE`` x the first one."""
        if self.first_loss is None:
            self.first_loss = loss
        elif not self.warnings and self.first_loss > 0 and loss > RISE * self.first_loss:
            self.warnings.append(
                f"the training loss rose to {loss:.4g} at step {step}, "
                f"{loss / self.first_loss:.0f}x its first logged value ({self.first_loss:.4g}):"
                " the learning rate may be too high")
            notice(self.warnings[-1])


@dataclass
class LogWindow:
    """Loss and throughput since the last log line."""

    loss: float = 0.0
    alignment: float = 0.0
    micro: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, losses: dict[str, torch.Tensor], tokens: int) -> None:
        self.loss += losses["lm"].item()
        self.alignment += losses["alignment"].item()
        self.micro += 1
        self.tokens += tokens

    def entry(self, step: int, epoch: float, lr: float, world: int, grad_accum: int,
              device: torch.device) -> dict:
        seconds = time.perf_counter() - self.start
        micro = max(1, self.micro)
        return {"step": step, "epoch": round(epoch, 4), "loss": self.loss / micro,
                "alignment_loss": self.alignment / micro, "lr": lr,
                "tokens_per_s": round(self.tokens / seconds, 1),
                "seconds_per_step": round(seconds * world * grad_accum / max(1, self.micro), 3),
                "peak_memory_gb": round(_peak_memory_gb(device), 3)}


@dataclass
class Schedule:
    """How many micro-batches make an epoch and how many optimizer steps the run takes."""

    per_epoch: int
    total: int


def check_finite(accelerator, step: int, problem: str | None, output: Path) -> None:
    """Stop the run when any process found ``problem`` at ``step``: a ``ModelError`` in every
    process alike (the verdict is reduced over them)."""
    flag = torch.tensor([0.0 if problem is None else 1.0], device=accelerator.device)
    if float(accelerator.reduce(flag, "sum")) == 0:
        return
    kept = checkpoints(output)
    raise ModelError(
        f"training diverged at step {step}: {problem or 'non-finite values in another process'}"
        f". Nothing final was written; the last checkpoint before it is kept "
        f"({kept[0] if kept else 'none was saved yet'}). Lower the learning rate (or check the "
        "data) and train into another --output")


def run_steps(state: TrainingState, examples: list, config: TrainConfig, schedule: Schedule,
              progress: Progress, pad_id: int, record: Callable[[], dict],
              on_step: Callable[[int], None] | None = None,
              pairs: PairBatches | None = None) -> Progress:
    """The loop: length-bucketed batches, every process its share, accumulation, logging to
    train_log.jsonl (the LM loss, and the alignment loss when ``pairs`` are drawn), a check
    that loss, gradients and (at checkpoints) weights are finite, checkpoints holding
    ``record()``; ``on_step(step)`` after each optimizer step. Updates and returns
    ``progress``."""
    accelerator, wrapper, optimizer = state.accelerator, state.wrapper, state.optimizer
    world, rank = accelerator.num_processes, accelerator.process_index
    log_path = config.output / LOG
    step = progress.step
    trained = [(n.removeprefix("model."), p)
               for n, p in accelerator.unwrap_model(wrapper).named_parameters() if p.requires_grad]
    bar = tqdm(total=schedule.total, initial=step, unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    window, bad_loss = LogWindow(), None
    micro = step * config.grad_accum * world  # micro-batches done, all processes together
    while step < schedule.total:
        epoch, done = divmod(micro, schedule.per_epoch)
        order = batches(examples, config.batch_size, epoch, config.seed)
        rounds = (len(order) - done) // world  # every process gets the same number of batches
        for r in range(rounds):
            batch = collate([examples[i] for i in order[done + r * world + rank]], pad_id)
            if pairs is not None:
                batch.update(pairs.draw(micro + rank))
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(wrapper):
                losses = wrapper(**batch)
                loss = losses["loss"].item()
                if bad_loss is None and not math.isfinite(loss):
                    bad_loss = f"loss is {loss}"
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients:  # the gradients of the whole step are there
                    bad = bad_loss
                    if bad is None:
                        grad = first_non_finite((n, p.grad) for n, p in trained)
                        bad = grad and f"the gradient of {grad} is not finite"
                    check_finite(accelerator, step + 1, bad, config.output)
                optimizer.step()
                optimizer.zero_grad()
            micro += world
            tokens = int(batch["attention_mask"].sum())
            progress.tokens += tokens
            window.add(losses, tokens * world)
            if not accelerator.sync_gradients:
                continue
            state.scheduler.step()
            step += 1
            progress.step = step
            bar.update(1)
            if step % config.log_every == 0 or step == schedule.total:
                entry = window.entry(step, micro / schedule.per_epoch,
                                     state.scheduler.get_last_lr()[0], world, config.grad_accum,
                                     accelerator.device)
                if pairs is None:
                    del entry["alignment_loss"]
                progress.last_loss = entry["loss"]
                progress.rose(entry["loss"], step)
                if accelerator.is_main_process:
                    with log_path.open("a") as log:
                        log.write(json.dumps(entry) + "\n")
                bar.set_postfix(loss=f"{entry['loss']:.3f}")
                window = LogWindow()
            if step % config.save_every == 0 or step == schedule.total:
                bad = first_non_finite(trained)
                check_finite(accelerator, step, bad and f"the weight {bad} is not finite",
                             config.output)
                _checkpoint(state, config.output, step, config.keep_checkpoints, record())
            if on_step is not None:
                on_step(step)
            if step >= schedule.total:
                break
        else:
            micro = (epoch + 1) * schedule.per_epoch  # a remainder smaller than the processes
    bar.close()
    return progress


def prepare_alignment(config: TrainConfig, mixture: Mixture, tokenizer) -> PairBatches | None:
    """The objective's pair batches (its layers are checked by ``ResponseOnlyLM``), both before
    any training starts."""
    objective = config.alignment
    if not objective.active:
        return None
    pairs = [pair for language in sorted(mixture.pairs) for pair in mixture.pairs[language]]
    if not pairs:
        raise DataError(f"the alignment objective needs translation pairs; the mixture "
                        f"{mixture.spec} has no translation_en-<language> component")
    return PairBatches(pairs, tokenizer, config.max_length, objective.batch, config.seed)


def _main_process() -> bool:
    """Whether this is the main process (before accelerate starts: the launcher's ``RANK``)."""
    return os.environ.get("RANK", "0") == "0"


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train, write OUTPUT/{adapter or model files, training.json, train_log.jsonl, and
    alignment_log.csv when alignment is tracked}. OUTPUT is checked first (``check_output``);
    the main process then holds its writer lock throughout (a second writer fails at once); an
    OUTPUT this call created is removed again when the call fails before anything was written
    into it."""
    output = config.output
    if not _main_process():
        return _train(config, on_step)
    check_output(config, say=False)  # before the lock: a refused OUTPUT is left as it was
    created = not output.exists()
    with writer_lock(output):
        try:
            return _train(config, on_step)
        except BaseException:
            if created and {p.name for p in output.iterdir()} == {WRITER_LOCK}:
                with contextlib.suppress(OSError):
                    (output / WRITER_LOCK).unlink()
                    output.rmdir()
            raise


def _finished(output: Path, config: TrainConfig) -> TrainResult:
    """A finished run asked to resume: its summary and report, nothing touched; settings that
    differ from the ones it was trained with are named (they were not applied)."""
    try:
        summary = json.loads((output / SUMMARY).read_text())
        data = summary["data"]
        report = Report(Counter(data["kept"]), Counter(
            {tuple(key.rsplit(": ", 1)): n for key, n in data["rejected"].items()}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{output / SUMMARY} is not a training summary this version reads "
                        f"({exc})") from None
    trained = summary.get("config") or {}
    asked = json.loads(json.dumps(resume_settings(config), default=str))
    ignored = [f"{k} {v!r} (it was trained with {trained[k]!r})" for k, v in asked.items()
               if k in trained and trained[k] != v]
    notice(f"{output} holds a finished training run ({summary.get('steps')} steps): nothing to "
           "resume, nothing changed" + ("; not applied: " + ", ".join(ignored) if ignored else ""))
    return TrainResult(summary, None, report, _main_process())


def _train(config: TrainConfig, on_step: Callable[[int], None] | None) -> TrainResult:
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    started = clock()
    output = config.output
    holds = check_output(config)
    if holds == FINISHED:
        return _finished(output, config)
    settings = resume_settings(config)
    checkpoint, damaged = usable_checkpoint(output) if holds == UNFINISHED else (None, [])
    fallbacks = [f"checkpoint {directory} is damaged ({why}): set aside as "
                 f"damaged-{directory.name}" for directory, why in damaged]
    for line in fallbacks:
        notice(line)
    saved = checkpoint_record(checkpoint, settings) if checkpoint is not None else None
    if saved is not None:
        notice(f"resuming from step {saved['step']} ({checkpoint})")
    elif holds == UNFINISHED:
        notice(f"no usable checkpoint in {output / CHECKPOINTS}: training starts again from "
               "step 0")
    mixture = build_mixture(config.mixture, config.seed)  # bad components fail before the model
    settings["data"] = data_fingerprint(mixture.records)
    if saved is not None and saved["settings"].get("data", settings["data"]) != settings["data"]:
        raise DataError(f"--resume with other training data than {checkpoint}: the records of "
                        f"{config.mixture!r} differ from those it was trained on (same spec, "
                        "changed files?); choose another --output")
    track_languages = (tracked_languages(config.tracking, mixture.languages)
                       if config.tracking else [])
    loaded = load_model(config.model, device="cpu", dtype="float32")
    pairs = prepare_alignment(config, mixture, loaded.tokenizer)
    on_gpu = torch.cuda.is_available() and config.device in ("auto", "cuda")
    bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and on_gpu)
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum,
                              mixed_precision="bf16" if bf16 else "no",
                              cpu=config.device == "cpu" or not on_gpu)
    torch.manual_seed(config.seed)
    examples = encode(mixture.records, loaded.tokenizer, config.max_length, mixture.report)
    model, trainable = make_trainable(loaded.model.train(), config)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tracker = (AlignmentTracker(config.tracking, track_languages, model, loaded.tokenizer,
                                loaded.name, output) if config.tracking else None)
    wrapper = ResponseOnlyLM(model, config.alignment)
    align_layers = wrapper.align_layers
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.lr, weight_decay=config.weight_decay)
    per_epoch = math.ceil(len(examples) / config.batch_size)
    steps_per_epoch = max(1, math.ceil(per_epoch / accelerator.num_processes / config.grad_accum))
    schedule = Schedule(per_epoch, config.max_steps
                        or max(1, math.ceil(steps_per_epoch * config.epochs)))
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup
                                                                     * schedule.total),
                                                schedule.total)
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    state = TrainingState(accelerator, wrapper, optimizer, scheduler)
    progress = Progress()
    accelerator.wait_for_everyone()  # every process has verified the checkpoints
    if accelerator.is_main_process:
        for directory, _ in damaged:
            aside = directory.with_name(f"damaged-{directory.name}")
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(directory, aside)
        for staging in (output / CHECKPOINTS).glob(".tmp-step-*"):  # of a kill while saving
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    if saved is not None:
        state.load(checkpoint)
        progress.step = saved["step"]
        progress.done.update({k: saved[k] for k in progress.done if k in saved})
        if accelerator.is_main_process:
            trim_log(output / LOG, progress.step)
        accelerator.wait_for_everyone()
        entries = read_train_log(output / LOG)
        if entries:
            progress.first_loss, progress.last_loss = entries[0]["loss"], entries[-1]["loss"]
    elif accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        for log in (LOG, ALIGNMENT_LOG):
            (output / log).unlink(missing_ok=True)

    def record() -> dict:
        """What a checkpoint says the run has done (every process calls it: a reduction)."""
        tokens = accelerator.reduce(torch.tensor([progress.tokens], device=accelerator.device),
                                    "sum")
        tracking = tracker.seconds if tracker else 0.0
        return {"settings": settings,
                "seconds": round(progress.done["seconds"] + clock() - started, 1),
                "tokens": progress.done["tokens"] + int(tokens),
                "tracking_seconds": round(progress.done["tracking_seconds"] + tracking, 1)}

    hooks = [on_step] if on_step else []
    if tracker is not None:
        track = tracking_hook(tracker, schedule.total, accelerator.is_main_process,
                              accelerator.wait_for_everyone)
        logged = tracker.logged(progress.step)  # every process alike: the probe waits for all
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            tracker.trim(progress.step)
        if not logged:
            track(progress.step)  # before training, or where a killed run left off
        hooks.insert(0, track)
    run_steps(state, examples, config, schedule, progress, loaded.tokenizer.pad_token_id, record,
              lambda s: [hook(s) for hook in hooks], pairs)
    if tracker is not None and accelerator.is_main_process:
        write_report(output)
    done = record()
    summary = {
        "config": {**asdict(config), "output": str(output)},
        "model": loaded.name, "trainable": trainable, "trainable_parameters": n_trainable,
        "mixture": str(mixture.spec), "examples": len(examples), "data": mixture.report.as_dict(),
        "notes": [*mixture.notes, *fallbacks], "steps": progress.step, "final_loss": progress.last_loss,
        "warnings": progress.warnings,
        "alignment_objective": {"layers": list(align_layers), "pairs": len(pairs)}
        if pairs else None,
        "tracking": {"languages": track_languages, "seconds": done["tracking_seconds"]}
        if tracker else None,
        "processes": accelerator.num_processes, "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "seconds": done["seconds"], "tokens": done["tokens"],  # every session's, added up
        "peak_memory_gb": round(_peak_memory_gb(accelerator.device), 3),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    _save_final(accelerator, wrapper, loaded.tokenizer, output, config.full, summary)
    return TrainResult(summary, accelerator.unwrap_model(wrapper).model.eval(), mixture.report,
                       accelerator.is_main_process)


class TrainingState:
    """What a checkpoint holds: trainable weights, optimizer state and RNG as safetensors,
    optimizer hyper-parameters and the scheduler as JSON — nothing that loads through pickle.
    (Under FSDP, where the optimizer state is sharded, accelerate's own state files are used.)"""

    def __init__(self, accelerator, wrapper: nn.Module, optimizer, scheduler) -> None:
        from accelerate.utils import DistributedType

        self.accelerator, self.wrapper = accelerator, wrapper
        self.optimizer, self.scheduler = optimizer, scheduler
        self.fsdp = accelerator.distributed_type == DistributedType.FSDP
        if self.fsdp:
            accelerator.register_for_checkpointing(scheduler)

    def _trainable(self) -> dict[str, nn.Parameter]:
        model = self.accelerator.unwrap_model(self.wrapper)
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        if self.fsdp:
            self.accelerator.save_state(str(directory))
            return
        directory.mkdir(parents=True, exist_ok=True)
        rank = self.accelerator.process_index
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        save_file(rng, directory / f"rng-{rank}.safetensors")
        if not self.accelerator.is_main_process:
            return
        optimizer = self.optimizer.state_dict()
        tensors = {f"model/{n}": p.detach().cpu().contiguous()
                   for n, p in self._trainable().items()}
        for index, entries in optimizer["state"].items():
            for key, value in entries.items():
                tensors[f"optimizer/{index}/{key}"] = torch.as_tensor(value).detach().cpu()
        save_file(tensors, directory / "state.safetensors")
        atomic_write_text(directory / "state.json", json.dumps(
            {"param_groups": optimizer["param_groups"], "scheduler": self.scheduler.state_dict()}))

    def load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        if self.fsdp:
            self.accelerator.load_state(str(directory))
            return
        if not (directory / "state.safetensors").exists():
            raise DataError(f"{directory} is not a checkpoint this version can resume (no "
                            "state.safetensors); start again with another --output")
        tensors = load_file(directory / "state.safetensors")
        meta = json.loads((directory / "state.json").read_text())
        with torch.no_grad():
            for name, param in self._trainable().items():
                param.copy_(tensors[f"model/{name}"])
        entries: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                entries.setdefault(int(index), {})[name] = value
        groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}  # JSON made lists
                  for g in meta["param_groups"]]
        self.optimizer.load_state_dict({"state": entries, "param_groups": groups})
        self.scheduler.load_state_dict(meta["scheduler"])
        rng = directory / f"rng-{self.accelerator.process_index}.safetensors"
        if rng.exists():
            states = load_file(rng)
            torch.set_rng_state(states["torch"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state(states["cuda"])


def _checkpoint(state: TrainingState, output: Path, step: int, keep: int, record: dict) -> None:
    """Save the training state under a temporary name, ``trainer_state.json`` (``step`` and
    ``record``) and then the checksums of every file last, then rename; keep the newest
    ``keep``."""
    accelerator = state.accelerator
    root = output / CHECKPOINTS
    staging = root / f".tmp-step-{step}"
    state.save(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(staging / STATE, json.dumps({"step": step, **record}, default=str))
        atomic_write_text(staging / CHECKSUMS, json.dumps(
            {name: _sha256(staging / name) for name in _files(staging)}, indent=1))
        final = root / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in checkpoints(output)[keep:]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_final(accelerator, wrapper, tokenizer, output: Path, full: bool, summary: dict) -> None:
    """The adapter (or full model) directory the probe loads, config files moved in last."""
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(wrapper).model
    state = accelerator.get_state_dict(wrapper) if full else None
    if accelerator.is_main_process:
        staging = Path(tempfile.mkdtemp(dir=output, prefix=".final-"))
        if full:
            prefix = "model."
            model.save_pretrained(staging, state_dict={k.removeprefix(prefix): v
                                                       for k, v in state.items()})
            tokenizer.save_pretrained(staging)
        else:  # the vocabulary is never resized: no full embeddings, no Hub lookup to check
            model.save_pretrained(staging, save_embedding_layers=False)
        last = {"config.json", "adapter_config.json"}
        files = sorted(staging.iterdir(), key=lambda p: p.name in last)
        for path in files:
            os.replace(path, output / path.name)
        staging.rmdir()
        atomic_write_text(output / SUMMARY, json.dumps(summary, indent=2, default=str,
                                                      allow_nan=False))
    accelerator.wait_for_everyone()
