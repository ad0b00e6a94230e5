"""Export: merge the adapter chain into full-precision weights, convert to GGUF with llama.cpp's own converter,
quantize, write an Ollama Modelfile, and verify the artifact that ships.

Modules, one concern each: :mod:`~posttrain.export.config` (the stage's settings), :mod:`~posttrain.export.llama_cpp` (pinned converter, conversion, quantization), :mod:`~posttrain.export.go_template`
(Jinja → Go template), :mod:`~posttrain.export.gorender` (Go's text/template), :mod:`~posttrain.export.modelfile`,
:mod:`~posttrain.export.verify` (generations, templates, end-of-turn audit), :mod:`~posttrain.export.serve`
(llama.cpp's OpenAI-compatible server + an evaluation suite). The merge itself is :mod:`posttrain.models.merge`; the
commands are :mod:`posttrain.stages.merge` and :mod:`posttrain.stages.export`.
"""

from posttrain.errors import UserError


class ExportError(UserError, ValueError):
    """An export that cannot be done as configured (unconvertible architecture, too little disk, bad setting)."""
