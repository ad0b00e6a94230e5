"""Export: merge the adapter chain into full-precision weights, convert to GGUF with llama.cpp's own converter,
quantize, write an Ollama Modelfile, and verify the artifact that ships.

Modules, one concern each: :mod:`~posttrain.export.config` (the stage's settings), :mod:`~posttrain.export.build`
(the source resolved once, GGUF files, importance matrix and Modelfile written into a work folder),
:mod:`~posttrain.export.verify_build` (every check run against a build, the served GGUF, the report),
:mod:`~posttrain.export.publish` (the files moved into ``output_dir``, the commands that run them),
:mod:`~posttrain.export.llama_cpp` (pinned converter, conversion, quantization), :mod:`~posttrain.export.go_template`
(Jinja → Go template), :mod:`~posttrain.export.gorender` (Go's text/template), :mod:`~posttrain.export.modelfile`,
:mod:`~posttrain.export.verify` (generations, templates, end-of-turn audit), :mod:`~posttrain.export.quant_quality`
(KL divergence, importance matrix), :mod:`~posttrain.export.serve` (llama.cpp's OpenAI-compatible server + an
evaluation suite). The merge itself is :mod:`posttrain.models.merge`; the end-of-turn tokens
:mod:`posttrain.chat_templates.stops`; the commands are :mod:`posttrain.stages.merge` and
:mod:`posttrain.stages.export`.
"""

from posttrain.errors import UserError


class ExportError(UserError, ValueError):
    """An export that cannot be done as configured (unconvertible architecture, too little disk, bad setting)."""
