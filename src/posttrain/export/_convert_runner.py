"""Run llama.cpp's ``convert_hf_to_gguf.py`` with posttrain's fallback for unknown BPE pre-tokenizers.

    python _convert_runner.py <llama.cpp dir> <fallback pre-tokenizer> <converter arguments...>

The converter's own ``gguf-py`` is put first on ``sys.path`` (it must match the converter). Its
``TextModel.get_vocab_base_pre`` raises ``NotImplementedError`` for a tokenizer hash it does not know; here that
returns the fallback instead (chosen by :func:`posttrain.export.llama_cpp.fallback_pre_tokenizer`) and prints the
marker line ``POSTTRAIN_PRE_TOKENIZER_FALLBACK=<type>`` so the caller can report it.
"""

import runpy
import sys
from pathlib import Path


def main() -> None:
    llama_cpp, fallback, *args = sys.argv[1:]
    here = Path(__file__).resolve().parent  # posttrain/export: its module names must not shadow the converter's
    sys.path = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path[:0] = [llama_cpp, str(Path(llama_cpp) / "gguf-py")]
    try:
        from conversion import base
    except ImportError:  # single-file converters (older llama.cpp): nothing to patch
        base = None
    if base is not None and hasattr(base, "TextModel"):
        original = base.TextModel.get_vocab_base_pre

        def get_vocab_base_pre(self, tokenizer):
            try:
                return original(self, tokenizer)
            except NotImplementedError:
                print(f"POSTTRAIN_PRE_TOKENIZER_FALLBACK={fallback}", file=sys.stderr, flush=True)
                return fallback

        base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    converter = str(Path(llama_cpp) / "convert_hf_to_gguf.py")
    sys.argv = [converter, *args]
    runpy.run_path(converter, run_name="__main__")


if __name__ == "__main__":
    main()
