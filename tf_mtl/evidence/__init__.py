"""Evidence at prediction time: refit to an image's tags, then segment.

Given an image and its image-level tags (the *evidence*), back-propagate the tag
head's loss against the tags into the trunk and tag branch, keep the segmentation
decoder fixed, and predict the segmentation with the adjusted network. Every image
starts again from the trained weights. Model-agnostic: works on any Keras network
that follows the contract in ARCHITECTURE.md (input images ``[B, H, W, 3]``; output
dict with ``"semantic"`` logits ``[B, H, W, C]`` and ``"tags"`` logits ``[B, T]``;
identity layer ``"encoder"``).

Modes (``EvidenceConfig.mode``):
  * ``"weights"`` (DL-BP-L2 / DL-BP-ES): K gradient steps of
    ``BCE(tags_logits(x), tags) + alpha * ||W - W*||^2`` on the chosen variables
    only. The weights are *loop state* of a ``tf.while_loop`` fed to
    ``model.stateless_call``; the model's variables are never assigned, so the
    model is bit-identical afterwards, concurrent calls are safe and the whole
    function exports to a SavedModel. Each image of a batch is refitted
    independently (``tf.map_fn``) from the trained weights.
  * ``"latent"``: optimise an additive offset ``delta`` on the output of
    ``latent_layer`` (``"encoder"``) with ``BCE + alpha * ||delta||^2``. The
    network is split there by :func:`split_at`; the per-image losses are summed,
    so a batch is refitted in one go with independent per-image gradients.

Pruning (``-Pr``): :func:`prune_probabilities` zeroes classes absent from the tags
(background kept); usable alone or after refitting (``EvidenceConfig.prune``). Tags may
be probabilities (soft evidence): the refit's target is the probability given, and
``EvidenceConfig.prune_strength`` < 1 makes pruning a prior that scales a class by
``1 - s * (1 - t)`` instead of zeroing it (1 with 0/1 tags: the seed's pruning).

Outputs of :meth:`EvidenceRefitter.__call__` (dict of tensors):
  ``probabilities`` [B,H,W,C] float32 (after pruning if enabled), ``predictions``
  [B,H,W] int32 (argmax), ``tag_probabilities_before`` / ``tag_probabilities_after``
  [B,T] float32, ``steps_taken`` [B] int32 (optimizer updates applied per image),
  ``fell_back`` [B] bool (``EvidenceConfig.safeguard``: the image got the unrefitted
  prediction because the refit did not help its evidence, see :func:`refit_hurt`).

Optimizers are functional (state as loop variables, ``tf_mtl.functional_optimizers``)
and follow ``keras.optimizers.SGD`` / ``keras.optimizers.Adam`` update rules exactly.
Graph surgery (the latent split, upstream layers) lives in ``tf_mtl.graph``.

Mixed precision: the refitted values are float32 master copies (the variables'
float32 values; layers autocast to float16), and the loss is multiplied by a
dynamic loss scale (starting at ``loss_scale``, halved and the step skipped on
non-finite gradients). Under float32 no scaling is applied.
"""

from tf_mtl.evidence.config import MODES, EvidenceConfig, validate_evidence
from tf_mtl.evidence.pruning import (
    agrees_with_evidence,
    evidence_bce,
    prune_probabilities,
    refit_hurt,
)
from tf_mtl.evidence.refitter import EvidenceRefitter
from tf_mtl.evidence.variables import VariableSpec, select_variables

__all__ = [
    "MODES",
    "EvidenceConfig",
    "EvidenceRefitter",
    "VariableSpec",
    "agrees_with_evidence",
    "evidence_bce",
    "prune_probabilities",
    "refit_hurt",
    "select_variables",
    "validate_evidence",
]
