"""Run llama.cpp's ``convert_hf_to_gguf.py`` with posttrain's fallback for unknown BPE pre-tokenizers.

    python _convert_runner.py <llama.cpp dir> <fallback pre-tokenizer> <converter arguments...>

The converter's own ``gguf-py`` is put first on ``sys.path`` (it must match the converter). Its
``TextModel.get_vocab_base_pre`` raises ``NotImplementedError`` for a tokenizer hash it does not know; here that
returns the fallback instead (chosen by :func:`posttrain.export.llama_cpp.fallback_pre_tokenizer`) and prints the
marker line ``POSTTRAIN_PRE_TOKENIZER_FALLBACK=<type>`` so the caller can report it.

Three more patches make the GGUF agree with the HF tokenizer the model was trained with:

* ``tokenizer.ggml.add_bos_token`` is what the HF tokenizer does (``$POSTTRAIN_ADD_BOS``, decided by
  :func:`posttrain.chat_templates.adds_bos`), not what ``tokenizer_config.json`` claims (DeepSeek-V3's says
  ``add_bos_token: true`` while its tokenizer adds none and its template writes BOS);
* ``tokenizer.chat_template`` is the inference template: TRL's ``{% generation %}`` markers are stripped
  (:func:`posttrain.chat_templates.strip_generation_tags`; llama.cpp and Ollama cannot parse them);
* a Llama BPE ``tokenizer.json`` without ``tokenizer.model`` (``LlamaHfVocab``) gets token scores from its merge
  ranks (the converter writes -1000 for every token, so llama.cpp's SPM tokenizer merges in arbitrary order).
"""

import json
import os
import runpy
import sys
from pathlib import Path


def _merge_scores(model_dir: Path) -> dict[int, float]:
    """Token id -> -(rank of the first merge that forms it): llama.cpp's SPM tokenizer merges the highest-scoring
    pair first, leftmost on ties, which is then exactly BPE's order (lowest merge rank, leftmost)."""
    try:
        data = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    model = data.get("model") or {}
    vocab, scores = model.get("vocab") or {}, {}
    for rank, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        token_id = vocab.get(left + right)
        if token_id is not None and token_id not in scores:
            scores[token_id] = -float(rank)
    return scores


def _patch_vocab(gguf, model_dir: Path) -> None:
    add_bos = os.environ.get("POSTTRAIN_ADD_BOS")
    original_add_to_gguf = gguf.SpecialVocab.add_to_gguf

    def add_to_gguf(self, gw, quiet: bool = False) -> None:
        if add_bos in ("0", "1"):
            self.add_special_token["bos"] = add_bos == "1"
        if self.chat_template is not None:
            from posttrain.chat_templates import strip_generation_tags

            if isinstance(self.chat_template, str):
                self.chat_template = strip_generation_tags(self.chat_template)
            else:  # named templates: [{"name": ..., "template": ...}]
                self.chat_template = [
                    {**entry, "template": strip_generation_tags(entry["template"])} for entry in self.chat_template
                ]
        return original_add_to_gguf(self, gw, quiet)

    gguf.SpecialVocab.add_to_gguf = add_to_gguf
    hf_vocab = getattr(gguf, "LlamaHfVocab", None)
    if hf_vocab is not None:
        scores = _merge_scores(model_dir)
        unmerged = -1e9 if scores else -1000.0  # a token no merge forms: BPE never produces it

        def get_token_score(self, token_id: int) -> float:
            return scores.get(token_id, unmerged if len(self.tokenizer.convert_ids_to_tokens(token_id)) > 1 else 0.0)

        hf_vocab.get_token_score = get_token_score


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
    import gguf

    _patch_vocab(gguf, Path(args[0]))
    converter = str(Path(llama_cpp) / "convert_hf_to_gguf.py")
    sys.argv = [converter, *args]
    runpy.run_path(converter, run_name="__main__")


if __name__ == "__main__":
    main()
