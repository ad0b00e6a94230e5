"""Merging LoRA adapters into full-precision weights: the one merge implementation.

:func:`merge_chain` (``posttrain merge``) merges an adapter chain (base → SFT adapter → DPO/PPO adapter ...) into one
full-precision HF folder and measures the logit drift (:func:`merge_adapters` for a chain already found by
:func:`adapter_chain`, as ``posttrain export`` does); :func:`merge_adapter` merges one adapter (a causal LM or a
reward model) into a folder, and :func:`merged_adapter` caches that merge under ``$POSTTRAIN_CACHE/merged/<name>-<content
hash>`` so a stage can start from an earlier stage's adapter. Both apply adapters through :func:`_apply_adapter`.

The base is loaded in float32 (or bfloat16) -- never into 4-bit weights, where a merge would round the adapter's
update away -- and each adapter is applied and ``merge_and_unload``-ed in order. Before each merge the logits with
the adapter *on* are recorded on sample prompts and compared with the merged weights': the maximum absolute
difference is the *logit drift* (≈1e-5 in float32; bfloat16 rounding makes it larger).

Chains are found from the adapters themselves: ``adapter_config.json`` names the base; a DPO adapter's base is
posttrain's cached merge of the SFT adapter (``$POSTTRAIN_CACHE/merged/<name>-<digest>``), whose
``posttrain_merged.json`` names the SFT adapter, which is re-applied from its own folder when its digest still
matches (otherwise the cached merge itself is the base). When a recorded base no longer exists, the adapter's
``run_manifest.json`` (``base_model``) is tried; ``base_model`` overrides the root base.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from posttrain.chat_templates import keep_tokenizer_legacy
from posttrain.chat_templates.stops import end_of_turn_ids
from posttrain.errors import UserError
from posttrain.log import get_logger
from posttrain.manifest import read_manifest
from posttrain.models.adapters import AdapterError, adapter_base, adapter_digest, is_adapter, task_model_class
from posttrain.models.registry import cache_dir, resolve_base
from posttrain.models.sample_conversations import GENERATION_CONVERSATIONS
from posttrain.storage import atomic_write_json, staged_dir

logger = get_logger(__name__)

MAX_CHAIN = 16


@dataclass
class MergeReport:
    base: str
    adapters: list[str]
    dtype: str
    drift: list[float] = field(default_factory=list)  # max |logit difference| per adapter

    @property
    def max_drift(self) -> float:
        return max(self.drift, default=0.0)

    def to_dict(self) -> dict:
        return {**asdict(self), "max_drift": self.max_drift}


def _cached_merge_source(path: Path) -> Path | None:
    """The adapter a posttrain merge cache folder was made from, when it still has the same content."""
    marker = path / "posttrain_merged.json"
    if not marker.is_file():
        return None
    try:
        source = Path(json.loads(marker.read_text())["adapter"])
    except (OSError, ValueError, KeyError):
        return None
    if is_adapter(source) and path.name.endswith("-" + adapter_digest(source)):
        return source
    return None


def _manifest_base(adapter: Path) -> str | None:

    try:
        manifest = read_manifest(adapter) or {}
    except (OSError, ValueError):
        return None
    base = manifest.get("base_model")
    return base if base and Path(base).expanduser().exists() else None


def adapter_chain(name_or_path: str, base_model: str | None = None) -> tuple[str, list[Path]]:
    """``(root base model, [adapter folders, applied first to last])`` for a model or adapter folder."""
    adapters: list[Path] = []
    current = name_or_path
    while True:
        path = Path(current).expanduser()
        if path.exists() and is_adapter(path):
            adapters.insert(0, path.resolve())
            if len(adapters) > MAX_CHAIN:
                raise AdapterError(f"{name_or_path}: adapter chain longer than {MAX_CHAIN} (a cycle?)")
            recorded = adapter_base(path)
            if not Path(recorded).expanduser().exists() and recorded.startswith(("/", ".", "~")):
                fallback = _manifest_base(path)
                if fallback is None:
                    raise AdapterError(
                        f"{path / 'adapter_config.json'}: its base {recorded} no longer exists; give the base "
                        "with base_model"
                    )
                recorded = fallback
            current = recorded
            continue
        source = _cached_merge_source(path) if path.exists() else None
        if source is not None:
            current = str(source)
            continue
        break
    return (base_model or current), adapters


def _check_full_precision(path: str) -> None:
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        quant = config.get("quantization_config")
        if quant:
            raise AdapterError(
                f"{config_file}: the base is stored quantized ({quant.get('quant_method', 'quantized')}); merging "
                "into quantized weights would round the adapter away: give the full-precision base with base_model"
            )


def sample_prompt_ids(tokenizer, conversations: list[list[dict]]) -> list[list[int]]:
    """Token ids of the prompts used to measure drift (chat-rendered when the tokenizer has a template)."""
    out = []
    for conversation in conversations:
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n".join(m["content"] for m in conversation)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def _logits(model, prompts: list[list[int]]):
    import torch

    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids])).logits[0].float() for ids in prompts]


def _apply_adapter(model, adapter: Path, base_label):
    """``model`` with the LoRA ``adapter`` applied (a PeftModel, not yet merged); the embeddings grow first when the
    adapter's stage added tokens (ChatML). The one place an adapter meets its base, for every merge."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (RuntimeError, ValueError, KeyError) as err:
        raise AdapterError(f"adapter {adapter} does not fit its base {base_label}: {str(err)[:800]}") from None


def merge_chain(
    name_or_path: str,
    *,
    base_model: str | None = None,
    dtype: str = "float32",
    conversations: list[list[dict]] | None = None,
):
    """Load the root base of ``name_or_path``'s adapter chain (:func:`adapter_chain`) in ``dtype``, apply and merge
    every adapter of the chain; returns ``(model, tokenizer, MergeReport)``."""
    base, adapters = adapter_chain(name_or_path, base_model)
    return merge_adapters(base, adapters, dtype=dtype, conversations=conversations)


def _check_merge_dtype(dtype: str) -> None:
    if dtype not in ("float32", "bfloat16", "float16"):
        raise AdapterError(
            f"dtype must be float32, bfloat16 or float16 for a merge (got {dtype!r}); "
            "merging into 4-bit weights is never done"
        )


def merge_adapters(
    base: str,
    adapters: list[Path],
    *,
    dtype: str = "float32",
    conversations: list[list[dict]] | None = None,
):
    """Load ``base`` in ``dtype``, apply and merge ``adapters`` (an :func:`adapter_chain`) in order, measuring each
    merge's logit drift on ``conversations`` (the first 8 :data:`GENERATION_CONVERSATIONS` by default); returns
    ``(model, tokenizer, MergeReport)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_merge_dtype(dtype)
    for adapter in adapters:
        config = json.loads((adapter / "adapter_config.json").read_text())
        if config.get("task_type") == "SEQ_CLS":
            raise AdapterError(f"{adapter}: a sequence-classification (reward model) adapter is not a chat model")
    base_path = resolve_base(base)
    _check_full_precision(base_path)
    chain = " → ".join([str(base), *map(str, adapters)])
    logger.info("posttrain: merging %s in %s", chain, dtype)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(adapters[-1] if adapters else base_path)
    prompts = sample_prompt_ids(tokenizer, (conversations or GENERATION_CONVERSATIONS)[:8])
    report = MergeReport(base=str(base), adapters=[str(a) for a in adapters], dtype=dtype)
    for adapter in adapters:
        peft_model = _apply_adapter(model, adapter, base)
        peft_model.eval()
        before = _logits(peft_model, prompts)
        model = peft_model.merge_and_unload()
        model.eval()
        after = _logits(model, prompts)
        drift = max((a - b).abs().max().item() for a, b in zip(before, after)) if prompts else 0.0
        report.drift.append(drift)
        logger.info("posttrain: merged %s: max |logit drift| adapter-on vs merged = %.3g", adapter.name, drift)
    return model, tokenizer, report


def save_merged(model, tokenizer, output_dir: str | Path, report: MergeReport) -> Path:
    """Write safetensors + tokenizer + chat template + generation_config (EOS = every end-of-turn token) into
    ``output_dir``, through a temporary folder moved into place when complete."""

    output_dir = Path(output_dir)
    stops = end_of_turn_ids(tokenizer)
    if stops:
        model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
        model.config.eos_token_id = stops[0]
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / "merge_report.json").is_file():
        raise AdapterError(
            f"output_dir {output_dir} exists and holds something other than a merged model; choose another folder"
        )
    with staged_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        keep_tokenizer_legacy(tokenizer)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "merge_report.json", report.to_dict())
    return output_dir


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, *, dtype=None) -> Path:
    """Merge ``adapter_dir`` into its full-precision base and save model + tokenizer + chat template to
    ``output_dir``: a new folder is published whole (:func:`~posttrain.storage.staged_dir`); into an existing one --
    e.g. a stage's folder holding ``adapter/``, which keeps its other contents -- the files are moved only when all
    are written."""
    import torch
    from transformers import AutoTokenizer

    dtype = dtype or torch.float32
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    base = adapter_base(adapter_dir)
    base_path = str(merged_adapter(base)) if is_adapter(base) else resolve_base(base)
    model_class = task_model_class(adapter_dir)
    kwargs = {"num_labels": 1} if model_class.__name__.endswith("SequenceClassification") else {}
    base = model_class.from_pretrained(base_path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    model = _apply_adapter(base, adapter_dir, base_path).merge_and_unload()
    adapter = adapter_dir.resolve()
    if adapter.parent == output_dir.resolve():  # the adapter ships inside the merged folder (reward model)
        adapter = Path(adapter.name)
    marker = {"adapter": str(adapter), "base": adapter_base(adapter_dir)}
    if not output_dir.exists():
        with staged_dir(output_dir) as tmp:
            _save_merged_adapter(model, tokenizer, tmp, marker)
        return output_dir
    with tempfile.TemporaryDirectory(prefix=f".{output_dir.name}-", dir=output_dir.parent) as tmp:
        _save_merged_adapter(model, tokenizer, Path(tmp), marker)
        for file in Path(tmp).iterdir():
            file.replace(output_dir / file.name)
    return output_dir


def _save_merged_adapter(model, tokenizer, folder: Path, marker: dict) -> None:
    model.save_pretrained(folder)
    keep_tokenizer_legacy(tokenizer)
    tokenizer.save_pretrained(folder)
    (folder / "posttrain_merged.json").write_text(json.dumps(marker, indent=2))


def merged_adapter(adapter_dir: str | Path) -> Path:
    """Cached full-precision merge of an adapter folder (rebuilt when the adapter's files change).

    Under a distributed launch (DDP, FSDP, DeepSpeed) the first process of each machine merges while the others wait
    at a barrier, and it merges with plain loading: ZeRO-3 would otherwise partition the base model it loads
    (``zero.Init`` needs every rank, which are waiting) and FSDP's RAM-efficient loading would give it weights on the
    meta device. Every rank passes the barrier, also when the merge is cached already.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return _merged_adapter(adapter_dir)
    if int(os.environ.get("LOCAL_RANK", dist.get_rank())) == 0:  # the cache is per machine
        with _plain_loading():
            target = _merged_adapter(adapter_dir)
        dist.barrier()
    else:
        dist.barrier()
        target = _merged_adapter(adapter_dir)
    return target


def _merged_adapter(adapter_dir: str | Path) -> Path:
    from filelock import FileLock

    target = cache_dir() / "merged" / f"{Path(adapter_dir).resolve().name}-{adapter_digest(adapter_dir)}"
    if (target / "config.json").is_file():
        _touch(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            logger.info("posttrain: merging adapter %s into its full-precision base -> %s", adapter_dir, target)
            merge_adapter(adapter_dir, target)
    prune_merged_cache(keep=target)
    return target


#: the environment variable that bounds the merge cache, in GiB (default :data:`DEFAULT_MERGED_CACHE_GIB`)
MERGED_CACHE_ENV = "POSTTRAIN_MERGED_CACHE_GB"
DEFAULT_MERGED_CACHE_GIB = 20.0


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still serves
        path.touch()


def merged_cache_limit() -> int:
    """The merge cache's size bound in bytes, from ``$POSTTRAIN_MERGED_CACHE_GB`` (a positive number of GiB)."""
    raw = os.environ.get(MERGED_CACHE_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MERGED_CACHE_GIB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        gib = float("nan")
    if not gib > 0 or gib == float("inf"):
        raise UserError(f"{MERGED_CACHE_ENV}={raw!r}: give the merge cache's size bound as a positive number of GiB")
    return int(gib * 2**30)


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune_merged_cache(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Remove the least recently used merges from ``$POSTTRAIN_CACHE/merged`` until it holds at most ``limit`` bytes
    (:func:`merged_cache_limit`); ``keep`` and merges another process holds locked stay. Each merge of the embedded
    model is ~0.5 GB in float32, and every new SFT/DPO adapter makes one, so an unbounded cache fills a disk. An
    evicted merge is rebuilt from its adapter when it is needed again. Returns the removed folders."""
    from filelock import FileLock, Timeout

    limit = merged_cache_limit() if limit is None else limit
    root = cache_dir() / "merged"
    if not root.is_dir():
        return []
    entries = [p for p in root.iterdir() if p.is_dir() and (p / "config.json").is_file()]
    sizes = {p: _folder_bytes(p) for p in entries}
    total = sum(sizes.values())
    removed: list[Path] = []
    keep = keep.resolve() if keep is not None else None
    for path in sorted(entries, key=lambda p: p.stat().st_mtime):  # least recently used first
        if total <= limit:
            break
        if keep is not None and path.resolve() == keep:
            continue
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:  # being merged right now
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.release()
        Path(str(path) + ".lock").unlink(missing_ok=True)
        total -= sizes[path]
        removed.append(path)
    if removed:
        logger.info(
            "posttrain: merge cache over %.1f GiB (%s): removed %d least recently used merge(s), e.g. %s",
            limit / 2**30,
            MERGED_CACHE_ENV,
            len(removed),
            removed[0].name,
        )
    return removed


@contextlib.contextmanager
def _plain_loading():
    """Load whole models on this process whatever engine launched it, for the length of the block: transformers'
    ZeRO-3 hook (its module-level DeepSpeed config reference, transformers 5.23) and accelerate's FSDP loading
    variables are set aside and put back after."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved_env = {
        k: os.environ.pop(k) for k in ("ACCELERATE_USE_FSDP", "FSDP_CPU_RAM_EFFICIENT_LOADING") if k in os.environ
    }
    has_ref = hasattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref")
    saved_ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    if has_ref:
        hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        if has_ref:
            hf_deepspeed._hf_deepspeed_config_weak_ref = saved_ref
        os.environ.update(saved_env)
