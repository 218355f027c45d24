"""What a refit is asked to do: :class:`EvidenceConfig` (its hyper-parameters, checked on
construction) and :func:`validate_evidence` (the tags given, checked before any graph
runs)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tf_mtl.functional_optimizers import OPTIMIZERS
from tf_mtl.inference import validate_scales

__all__ = ["MODES", "EvidenceConfig", "validate_evidence"]

MODES = ("weights", "latent")


@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    """Hyper-parameters of prediction-time refitting (validated on construction).

    Its defaults are the tools' too (``deeplab_ext.run.options.EvidenceOptions`` reads
    them from here): the seed's DL-BP-L2 (10 SGD steps, L2 weight 1e-3), with the
    serving safeguard on."""

    steps: int = 10
    learning_rate: float = 0.01
    optimizer: str = "sgd"  # "sgd" | "adam"
    alpha: float = 1e-3  # L2 to the trained weights (weights) / on delta (latent)
    early_stopping: bool = False  # stop once all tags agree with the evidence
    clip_norm: float = 0.0  # > 0: clip each step's gradient to this global norm (per image)
    threshold: float = 0.5  # decision threshold on tag probabilities
    # Early stopping needs every tag on its evidence side of the threshold by this much
    # (present: p >= threshold + margin, absent: p < threshold - margin); 0 = plain agreement.
    margin: float = 0.0
    mode: str = "weights"  # "weights" | "latent"
    latent_layer: str = "encoder"
    jit_compile: bool = False  # XLA; slower on CPU, so off by default
    loss_scale: float = 2.0**15  # initial dynamic loss scale under mixed_float16
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    eval_scales: tuple[float, ...] = (1.0,)
    add_flipped_images: bool = False
    prune: bool = False
    keep_classes: tuple[int, ...] = (0,)
    # Pruning as a prior (prune_probabilities): a class is scaled by 1 - s * (1 - its tag's
    # probability); 1 = the seed's pruning, 0 = none. Also the anchor's pruned target.
    prune_strength: float = 1.0
    # Per image, fall back to the unrefitted prediction when the refit did not lower the
    # evidence loss or flipped a tag that agreed with the evidence (refit_hurt).
    safeguard: bool = True
    # Weights mode: weight of a term that keeps what pruning already gets right, the mean
    # per-pixel cross-entropy of the refitted softmax to the unrefitted one pruned to the
    # tagged (and kept) classes. 0 = off. Needs tag_class_ids.
    anchor: float = 0.0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            value = getattr(self, field)
            return ValueError(f"EvidenceConfig.{field}={value!r}: {why}")

        if not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise bad("steps", "must be an integer >= 0 (0 = plain inference)")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}")
        if self.alpha < 0:
            raise bad("alpha", "must be >= 0")
        if self.clip_norm < 0:
            raise bad("clip_norm", "must be >= 0 (0 = no clipping)")
        if not 0.0 < self.threshold < 1.0:
            raise bad("threshold", "must be in (0, 1)")
        if not 0.0 <= self.margin < min(self.threshold, 1.0 - self.threshold):
            raise bad("margin", f"must be in [0, {min(self.threshold, 1.0 - self.threshold):g}) "
                      f"so both sides of threshold={self.threshold:g} stay reachable")
        if self.mode not in MODES:
            raise bad("mode", f"must be one of {MODES}")
        if not self.loss_scale > 0:
            raise bad("loss_scale", "must be > 0")
        if self.anchor < 0:
            raise bad("anchor", "must be >= 0 (0 = off)")
        if not 0.0 <= self.prune_strength <= 1.0:
            raise bad("prune_strength", "must be in [0, 1] (1 = remove the classes the tags "
                      "rule out, 0 = no pruning)")
        if self.anchor > 0 and self.mode != "weights":
            raise bad("anchor", "is a term of the weights mode only")
        object.__setattr__(self, "eval_scales", validate_scales(self.eval_scales))
        object.__setattr__(self, "keep_classes", tuple(int(c) for c in self.keep_classes))


def validate_evidence(
    tags: Any,
    num_tags: int,
    *,
    batch_size: int | None = None,
    steps: Any = None,
    name: str = "tags",
    steps_name: str = "steps",
) -> np.ndarray:
    """Check evidence in Python before any graph runs; return float32 ``[B, T]``.

    Tools call this with their flag names (``name``, ``steps_name``) so the error
    says which flag to fix. Mapping class *names* to tags is the data side's job.
    """
    arr = np.asarray(tags)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise ValueError(f"{name}: expected a numeric tag vector (each tag's probability in "
                         f"[0, 1]; 1 = present, 0 = absent), got {tags!r}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[-1] != num_tags:
        raise ValueError(
            f"{name}: expected {num_tags} tag values per image (shape [{num_tags}] or "
            f"[batch, {num_tags}], one probability in [0, 1] per tag; tag i is class "
            f"tag_class_ids[i]), got shape {list(np.shape(tags))}. Fix: pass a vector of "
            f"length {num_tags} (the model's tag head size)."
        )
    arr = arr.astype(np.float32)
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # NaN is neither
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"{name}: tag values must be probabilities in [0, 1], got "
            f"{float(arr[tuple(where)])} at index {where}. Fix: pass 1 for a class present, "
            "0 for one absent, or the probability you give it."
        )
    if batch_size is not None and arr.shape[0] != batch_size:
        raise ValueError(
            f"{name}: {arr.shape[0]} tag vectors for {batch_size} images. "
            "Fix: pass one tag vector per image."
        )
    if steps is not None:
        s = np.asarray(steps)
        if s.ndim != 0 or not np.issubdtype(s.dtype, np.integer) or int(s) < 0:
            raise ValueError(
                f"{steps_name}: must be an integer >= 0 (0 = plain inference), got {steps!r}."
            )
    return arr
