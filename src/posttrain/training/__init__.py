"""One builder per training stage (sft, ...); each exposes ``make_parser()`` and ``main(...)``."""
