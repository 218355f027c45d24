"""Flags shared by the tools (the original's common.py): one definition, many tools."""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS


def define_dataset_flags(default_dataset: str = "shapes_evidence") -> None:
    flags.DEFINE_string("dataset", default_dataset,
                        "Dataset name (pascal_voc_seg, cityscapes, ade20k, camvid, coco128_voc, "
                        "shapes_evidence, or one registered with --custom_dataset).")
    flags.DEFINE_string("dataset_dir", None, "Folder with the TFRecord shards of --dataset.")


def define_evidence_flags() -> None:
    flags.DEFINE_integer("evidence_steps", 10, "Refit steps per image (bp_l2, latent).")
    flags.DEFINE_integer("evidence_es_steps", 30, "Step cap for early stopping (bp_es).")
    flags.DEFINE_float("evidence_learning_rate", 0.01, "Refit learning rate.")
    flags.DEFINE_enum("evidence_optimizer", "sgd", ["sgd", "adam"], "Refit optimizer.")
    flags.DEFINE_float("evidence_alpha", 1e-3, "L2 to the trained weights (bp_l2).")
    flags.DEFINE_float("evidence_clip_norm", 0.0,
                       "Clip each refit step's gradient to this global norm per image (0 = off).")
    flags.DEFINE_float("evidence_threshold", 0.5, "Tag decision threshold (early stopping).")
    flags.DEFINE_float("evidence_es_margin", 0.0,
                       "Early stopping waits until every tag clears --evidence_threshold by "
                       "this margin (present >= t+m, absent < t-m); 0 = plain agreement.")
    flags.DEFINE_string("evidence_refit", "backbone,aspp,tag_head",
                        "Variable groups refitted (backbone, aspp, decoder, logits, tag_head).")
    flags.DEFINE_bool("evidence_jit_compile", False, "XLA-compile the refit loop (GPU).")


def evidence_options():
    from deeplab_ext.evaluation import EvidenceOptions

    return EvidenceOptions(
        steps=FLAGS.evidence_steps, learning_rate=FLAGS.evidence_learning_rate,
        optimizer=FLAGS.evidence_optimizer, alpha=FLAGS.evidence_alpha,
        es_steps=FLAGS.evidence_es_steps, threshold=FLAGS.evidence_threshold,
        es_margin=FLAGS.evidence_es_margin,
        clip_norm=FLAGS.evidence_clip_norm,
        refit=FLAGS.evidence_refit, jit_compile=FLAGS.evidence_jit_compile,
    )


def int_pair(values, flag: str) -> tuple[int, int] | None:
    """--*_crop_size=513,513 -> (513, 513); a clear error otherwise."""
    if values is None:
        return None
    try:
        out = tuple(int(v) for v in values)
    except ValueError as e:
        raise flags.ValidationError(f"--{flag} must be two integers, got {values}") from e
    if len(out) == 1:
        out = (out[0], out[0])
    if len(out) != 2 or min(out) < 1:
        raise flags.ValidationError(f"--{flag} must be two positive integers like 513,513")
    return out


USER_ERRORS = (ValueError, FileNotFoundError, OSError, RuntimeError)


def run_reporting_errors(fn, *args, **kwargs) -> int:
    """Run a tool's library call; a user error prints `error: ...` and exits 1, no traceback."""
    import sys

    try:
        fn(*args, **kwargs)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
