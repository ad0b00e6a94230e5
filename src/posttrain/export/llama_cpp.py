"""llama.cpp's own tools at a pinned version: ``convert_hf_to_gguf.py`` (HF folder → f16/bf16/q8_0 GGUF) and the
quantizer (``llama_model_quantize`` through llama-cpp-python's bindings, for Q4_K_M and friends).

The converter is not part of the ``gguf`` package. posttrain takes it from a llama.cpp checkout named by
``llama_cpp_dir`` / ``$LLAMA_CPP_DIR``, or else from the llama.cpp that llama-cpp-python vendors at the pinned
version :data:`LLAMA_CPP_PYTHON_VERSION`: its sdist is fetched once with ``pip download`` and the converter
(``convert_hf_to_gguf.py``, ``conversion/``, its own ``gguf-py``) is cached under
``$POSTTRAIN_CACHE/llama.cpp/<version>``. Converter and runtime then come from the same llama.cpp commit.

**Unknown BPE pre-tokenizers.** The converter identifies a BPE tokenizer's pre-tokenizer by hashing how it splits
a probe text and refuses hashes it does not know (every locally trained or edited tokenizer). posttrain runs the
converter with a fallback instead: the pre-tokenizer type is read off the tokenizer transformers loads
(:func:`fallback_pre_tokenizer`, which can differ from ``tokenizer.json``:
plain byte-level → ``gpt-2``, Llama-3's and Qwen2's split patterns → ``llama-bpe``/``qwen2``, digits + byte-level →
``smollm``, anything else → ``default``), a warning is printed, and export verification checks that llama.cpp
then tokenizes exactly like the HF tokenizer.

**Agreement with the HF tokenizer.** The converter runs with patches (``_convert_runner.py``): the GGUF's
``tokenizer.ggml.add_bos_token`` is what the HF tokenizer the model was trained with does (:func:`hf_adds_bos`), so
llama.cpp and Ollama start prompts as training sequences start (:func:`posttrain.chat_templates.encode_rendered`);
its ``tokenizer.chat_template`` never carries TRL's ``{% generation %}`` markers; a Llama BPE ``tokenizer.json``
without ``tokenizer.model`` gets token scores from its merge ranks.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from posttrain.errors import UserError
from posttrain.export import ExportError
from posttrain.log import get_logger
from posttrain.models.registry import cache_dir
from posttrain.storage import atomic_write_json, publish_dir

logger = get_logger(__name__)

#: llama-cpp-python release whose vendored llama.cpp provides the converter (and whose bindings run the GGUF)
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CONVERTER = "convert_hf_to_gguf.py"
#: output types the converter writes itself; everything else goes through the quantizer from an f16 GGUF
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
_MARKER = "posttrain_llama_cpp.json"
_RUNNER = Path(__file__).with_name("_convert_runner.py")

# Split patterns of the common BPE pre-tokenizers (tokenizer.json `pre_tokenizer`), for the fallback.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_PATTERNS = {_GPT2: "gpt-2", _LLAMA3: "llama-bpe", _QWEN2: "qwen2"}


class LlamaCppError(UserError, RuntimeError):
    """llama.cpp's converter or quantizer failed, or cannot be found or fetched."""


class UnsupportedArchitectureError(ExportError):
    """A model architecture the pinned llama.cpp converter cannot convert (raised before any work)."""


# ------------------------------------------------------------------------------------------------ the converter


def _looks_like_converter(path: Path) -> bool:
    return (path / CONVERTER).is_file() and (path / "gguf-py" / "gguf").is_dir()


def converter_dir(llama_cpp_dir: str | os.PathLike | None = None, *, fetch: bool = True) -> Path:
    """The llama.cpp folder holding ``convert_hf_to_gguf.py``: the given one, ``$LLAMA_CPP_DIR``, or the pinned
    copy cached from the llama-cpp-python sdist (fetched with pip on first use)."""
    given = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if given:
        path = Path(given).expanduser()
        if not _looks_like_converter(path):
            raise LlamaCppError(
                f"llama.cpp folder {path} (llama_cpp_dir / $LLAMA_CPP_DIR) has no {CONVERTER} and gguf-py/ next to it"
            )
        return path

    target = cache_dir() / "llama.cpp" / LLAMA_CPP_PYTHON_VERSION
    if (target / _MARKER).is_file():
        return target
    if not fetch:
        raise LlamaCppError(f"llama.cpp's converter is not cached at {target}")
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / _MARKER).is_file():
            _fetch_converter(target)
    return target


def _fetch_converter(target: Path) -> None:
    spec = f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
    logger.info("posttrain: fetching llama.cpp's converter from the %s sdist (pip download, once) -> %s", spec, target)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", spec, "-d", tmp],
            capture_output=True,
            text=True,
        )
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise LlamaCppError(
                f"could not download the {spec} sdist with pip ({result.stderr.strip()[-500:]}); give a llama.cpp "
                "checkout instead with llama_cpp_dir or $LLAMA_CPP_DIR"
            )
        staging = Path(tmp) / "llama.cpp"
        commit = None
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) > 3 and parts[1:3] == ("vendor", "llama.cpp"):
                    rest = Path(*parts[3:])
                    wanted = rest.parts[0] in ("conversion", "gguf-py") or str(rest) in (CONVERTER, "LICENSE")
                    if wanted and member.isfile():
                        destination = staging / rest
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        with archive.extractfile(member) as source, open(destination, "wb") as out:
                            shutil.copyfileobj(source, out)
                elif member.name.endswith(".git/modules/vendor/llama.cpp/HEAD") and member.isfile():
                    commit = archive.extractfile(member).read().decode().strip()
        if not _looks_like_converter(staging):
            raise LlamaCppError(f"{archives[0].name} does not contain vendor/llama.cpp/{CONVERTER}")
        atomic_write_json(
            staging / _MARKER,
            {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "llama_cpp_commit": commit, "source": archives[0].name},
        )
        publish_dir(staging, target)


def converter_info(path: Path) -> dict:
    """Where the converter comes from: llama-cpp-python version and llama.cpp commit (when known)."""
    marker = path / _MARKER
    if marker.is_file():
        return json.loads(marker.read_text())
    return {"llama_cpp_dir": str(path)}


def supported_architectures(path: Path) -> set[str]:
    """HF architectures the converter maps to a GGUF model class (read from its source, nothing imported)."""
    registry = path / "conversion" / "__init__.py"
    if registry.is_file():
        tree = ast.parse(registry.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
            if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and isinstance(node.value, ast.Dict):
                return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    # older single-file converters: @ModelBase.register("LlamaForCausalLM", ...)
    source = (path / CONVERTER).read_text(encoding="utf-8")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register":
            names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def check_architecture(model_dir: Path, path: Path) -> str:
    """The model's architecture, or :class:`UnsupportedArchitectureError` naming it (before any work)."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UnsupportedArchitectureError(f"{model_dir / 'config.json'}: unreadable ({err})") from None
    architectures = config.get("architectures") or []
    if not architectures:
        raise UnsupportedArchitectureError(f"{model_dir / 'config.json'}: no `architectures` entry")
    supported = supported_architectures(path)
    if architectures[0] not in supported:
        info = converter_info(path)
        version = info.get("llama_cpp_commit") or info.get("llama_cpp_dir")
        raise UnsupportedArchitectureError(
            f"{model_dir / 'config.json'}: architecture {architectures[0]} cannot be converted to GGUF by "
            f"llama.cpp ({version}); it converts {len(supported)} architectures, e.g. LlamaForCausalLM, "
            "Qwen2ForCausalLM, MistralForCausalLM, Gemma2ForCausalLM, Phi3ForCausalLM"
        )
    return architectures[0]


# ------------------------------------------------------------------------------------------- pre-tokenizer


def _loaded_pre_tokenizer(model_dir: Path) -> dict:
    """The pre-tokenizer the converter hashes: the one of the tokenizer transformers *loads*, which can differ from
    ``tokenizer.json`` (transformers 5 rebuilds e.g. Qwen2's split pattern from the model type)."""
    try:
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
        return json.loads(backend.to_str()).get("pre_tokenizer") or {}
    except Exception:
        try:
            return json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("pre_tokenizer") or {}
        except (OSError, json.JSONDecodeError):
            return {}


def hf_adds_bos(model_dir: Path) -> bool | None:
    """Whether the HF tokenizer in ``model_dir`` adds BOS to a text (None when it cannot be loaded: the converter
    then keeps what ``tokenizer_config.json`` says)."""
    try:
        from transformers import AutoTokenizer

        from posttrain.chat_templates import adds_bos

        return adds_bos(AutoTokenizer.from_pretrained(model_dir))
    except Exception:
        return None


def fallback_pre_tokenizer(model_dir: Path) -> str:
    """The llama.cpp pre-tokenizer type used when the converter does not recognize the tokenizer's hash."""
    pre = _loaded_pre_tokenizer(model_dir)
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [step.get("type") for step in steps]
    if types == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if types[:1] == ["Split"] and types[1:] in ([], ["ByteLevel"]):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in _SPLIT_PATTERNS:
            return _SPLIT_PATTERNS[pattern]
    return "default"


# ------------------------------------------------------------------------------------------------ convert


def convert(model_dir: Path, outfile: Path, outtype: str, *, llama_cpp: Path, threads: int | None = None) -> dict:
    """Run llama.cpp's converter (with the pre-tokenizer fallback) in a subprocess; returns what happened."""
    if outtype not in CONVERTER_TYPES:
        raise ValueError(f"the converter writes {', '.join(CONVERTER_TYPES)}, not {outtype}")
    fallback = fallback_pre_tokenizer(model_dir)
    command = [
        sys.executable,
        str(_RUNNER),
        str(llama_cpp),
        fallback,
        str(model_dir),
        "--outfile",
        str(outfile),
        "--outtype",
        outtype,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    add_bos = hf_adds_bos(model_dir)
    if add_bos is not None:
        env["POSTTRAIN_ADD_BOS"] = "1" if add_bos else "0"
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    logger.info("posttrain: converting %s -> %s (%s) with llama.cpp's %s", model_dir, outfile.name, outtype, CONVERTER)
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    log = result.stdout + result.stderr
    if result.returncode != 0 or not outfile.is_file():
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise LlamaCppError(f"llama.cpp's converter failed on {model_dir} (exit {result.returncode}):\n{tail}")
    used_fallback = "POSTTRAIN_PRE_TOKENIZER_FALLBACK" in log
    if used_fallback:
        logger.warning(
            "llama.cpp does not know the BPE pre-tokenizer of %s (its hash is not in the converter's list); "
            "wrote tokenizer.ggml.pre=%r derived from tokenizer.json instead. Verification compares llama.cpp's "
            "tokenization with the HF tokenizer's.",
            model_dir,
            fallback,
        )
        logger.warning(
            "unknown BPE pre-tokenizer hash; using the fallback pre-tokenizer '%s' (see posttrain.export.llama_cpp)",
            fallback,
        )
    return {"outtype": outtype, "pre_tokenizer_fallback": fallback if used_fallback else None}


# ------------------------------------------------------------------------------------------------ quantize


def quantize_types() -> dict[str, int]:
    """Quantized GGUF types llama.cpp's quantizer writes, by name (Q4_K_M, Q5_K_M, Q6_K, ...) → ftype id."""
    try:
        import llama_cpp
    except ImportError:
        return {}
    return {
        name[len("LLAMA_FTYPE_MOSTLY_") :]: getattr(llama_cpp, name)
        for name in dir(llama_cpp)
        if name.startswith("LLAMA_FTYPE_MOSTLY_")
    }


def quantize(
    source: Path, outfile: Path, qtype: str, *, threads: int | None = None, imatrix: dict | None = None
) -> None:
    """``llama_model_quantize`` through llama-cpp-python (the runtime that also loads the result).

    ``imatrix``: per weight name, the mean squared input activation per column (an importance matrix, see
    :mod:`posttrain.export.quant_quality`), passed as llama.cpp's C array ``llama_model_imatrix_data`` -- what
    ``llama-quantize --imatrix`` passes after reading the file."""
    try:
        import llama_cpp
    except ImportError:
        raise LlamaCppError(
            f"quantizing to {qtype} needs llama.cpp's Python bindings: "
            f"pip install llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"
        ) from None
    ftype = quantize_types().get(qtype.upper())
    if ftype is None:
        raise LlamaCppError(f"llama.cpp has no quantization type {qtype}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads or os.cpu_count() or 1
    keep = []
    if imatrix:
        entry = getattr(llama_cpp, "llama_model_imatrix_data", None)
        if entry is None:
            raise LlamaCppError(
                "this llama-cpp-python cannot pass an importance matrix to the quantizer (needs "
                f"llama_model_imatrix_data, llama-cpp-python {LLAMA_CPP_PYTHON_VERSION})"
            )
        import numpy as np

        array = (entry * (len(imatrix) + 1))()
        for i, (name, values) in enumerate(sorted(imatrix.items())):
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(values)
            array[i].name = name.encode()
            array[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            array[i].size = values.size
        array[len(imatrix)].name = None  # terminator
        keep.append(array)
        params.imatrix = ctypes.cast(array, ctypes.POINTER(entry))
    with_imatrix = f" with an importance matrix ({len(imatrix)} weights)" if imatrix else ""
    logger.info("posttrain: quantizing %s -> %s (%s) with llama.cpp%s", source.name, outfile.name, qtype, with_imatrix)
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(outfile).encode(), params)
    del keep
    if status != 0 or not outfile.is_file():
        raise LlamaCppError(f"llama.cpp's quantizer failed on {source} -> {qtype} (status {status})")
