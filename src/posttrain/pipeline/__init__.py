"""``posttrain pipeline``: every stage in order, each in its own process, skipping what is already done.

Modules: :mod:`.commands` (the table of posttrain's commands), :mod:`.config` (the pipeline YAML, profiles),
:mod:`.state` (``pipeline_state.json``, fingerprints, what is done), :mod:`.run` (running the stages), :mod:`.report`
(the final report across stages).
"""
