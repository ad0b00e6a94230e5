"""``posttrain merge`` / ``recipes/merge.py``: adapter chain → one full-precision HF folder, with the logit drift
between adapter-on and merged weights reported (and bounded)."""

from __future__ import annotations

from posttrain.export import ExportError
from posttrain.export.config import MergeArguments
from posttrain.log import get_logger
from posttrain.manifest import write_manifest
from posttrain.models.merge import merge_chain, save_merged

logger = get_logger(__name__)


def make_parser():
    from trl import TrlParser

    return TrlParser((MergeArguments,))


def main(args: MergeArguments):
    """merge chain → drift check → save (atomic) → run manifest; returns the MergeReport."""

    model, tokenizer, report = merge_chain(args.model_name_or_path, base_model=args.base_model, dtype=args.dtype)
    if report.max_drift > args.drift_limit:
        raise ExportError(
            f"merging changed the logits by up to {report.max_drift:.3g} (> max_logit_drift {args.drift_limit:g}): "
            "the merged model does not reproduce the adapter; check the base model and dtype"
        )
    output_dir = save_merged(model, tokenizer, args.output_dir, report)
    logger.info(
        "posttrain: merged model (%s) written to %s; max |logit drift| %.3g over %d adapter(s)",
        args.dtype,
        output_dir,
        report.max_drift,
        len(report.adapters),
    )
    write_manifest(
        output_dir,
        stage="merge",
        configs=(args,),
        base_model=report.base,
        adapters=report.adapters,
        merge=report.to_dict(),
    )
    return report
