"""Targets by name: what the input pipeline yields next to each image.

A target is a function of the example registered under a name and a *stage*:

* ``"image"`` targets are image-level facts computed from the full image and label
  map *before* any resizing, cropping or flipping (a crop that cuts an object out does
  not remove its tag);
* ``"dense"`` targets are computed *after* the augmentation, from the crop the network
  sees, so they stay aligned with it (the label map itself, an edge map, a box that
  moves with the crop and the flip).

``make_dataset(..., targets=("semantic", "tags", "edges"))`` yields a dict with one
entry per name. A task that needs a new target registers it in its own module::

    @register_target("edges", stage=DENSE)
    def edges(ctx: TargetContext) -> tf.Tensor:
        ...  # ctx.image float32 [h, w, 3], ctx.label int32 [h, w, 1]

A target may also read dense maps the shards carry besides the label
(``deeplab_ext.data.tfrecord.MAP_KEYS``: instance ids, disparity): it names them
(``register_target("depth", DENSE, maps=("disparity",))``) and gets them in ``ctx.maps``,
augmented with the image like the label (nearest sampling), 0 in the padding.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from tf_mtl.registry import Registry, discover

__all__ = [
    "DEFAULT_TARGETS",
    "DENSE",
    "IMAGE",
    "TargetContext",
    "TargetSpec",
    "compute_targets",
    "get_target",
    "maps_of",
    "register_target",
    "tags_from_label",
    "target_names",
]

IMAGE = "image"
DENSE = "dense"
STAGES = (IMAGE, DENSE)
DEFAULT_TARGETS = ("semantic", "tags")


@dataclasses.dataclass(frozen=True)
class TargetContext:
    """What a target function sees of one example.

    ``image``: ``"image"`` stage uint8 ``[H, W, 3]`` as decoded; ``"dense"`` stage float32
    ``[h, w, 3]`` in 0..255 after augmentation (padding is the mean pixel).
    ``label``: ``[H, W, 1]`` (uint8 decoded / int32 augmented; padding is the ignore label).
    ``seed``: an int64 ``[2]`` seed of this example and target for stateless random ops in
    training, None in evaluation (where targets must be deterministic).
    ``memo``: shared by every target of one example and stage, so targets built on the
    same intermediate (the largest object's class and box) compute it once: use
    :meth:`shared`.
    ``maps``: the dense maps the target's spec names, int32 ``[h, w]`` each (0 where the
    shards have none, and in the padding).
    """

    image: tf.Tensor
    label: tf.Tensor
    info: DatasetInfo
    seed: tf.Tensor | None
    is_training: bool
    memo: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    maps: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def shared(self, key: str, build: Callable[[], object]) -> object:
        """``build()`` once per example and stage, whichever target asks first."""
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    name: str
    stage: str
    fn: Callable[[TargetContext], tf.Tensor]
    maps: tuple[str, ...] = ()


def _load_builtin() -> None:
    """The targets other modules of ``deeplab_ext.data`` define (edges, object class and
    box, the scene maps): every module of the package, discovered."""
    discover("deeplab_ext.data", skip=("tfds_builders",))


TARGETS: Registry[TargetSpec] = Registry("input target", discover=_load_builtin)


def register_target(name: str, stage: str, maps: tuple[str, ...] = (), *,
                    override: bool = False) -> Callable:
    """Decorator: register ``fn(ctx: TargetContext) -> Tensor`` as target ``name``;
    ``maps``: the shards' dense maps it reads (``tfrecord.MAP_KEYS``). A name already
    taken is refused unless ``override``."""
    from deeplab_ext.data.tfrecord import MAP_KEYS

    if stage not in STAGES:
        raise ValueError(f"target {name!r}: stage must be one of {STAGES}, got {stage!r}")
    unknown = sorted(set(maps) - set(MAP_KEYS))
    if unknown:
        raise ValueError(f"target {name!r}: unknown maps {unknown}; the shards carry "
                         f"{sorted(MAP_KEYS)}")

    def decorate(fn: Callable[[TargetContext], tf.Tensor]) -> Callable:
        TARGETS.register(name, TargetSpec(name, stage, fn, tuple(maps)), override=override)
        return fn

    return decorate


def target_names() -> list[str]:
    return sorted(TARGETS)


def get_target(name: str) -> TargetSpec:
    return TARGETS.get(name)


def _seed_for(seed: tf.Tensor | None, name: str) -> tf.Tensor | None:
    """A seed per target, independent of the augmentation's and of other targets'."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64),
                                                    zlib.crc32(name.encode()) & 0x7FFFFFFF)


def maps_of(names: tuple[str, ...]) -> tuple[str, ...]:
    """The dense maps the named targets read, in order, without repeats."""
    return tuple(dict.fromkeys(m for n in names for m in get_target(n).maps))


def compute_targets(names: tuple[str, ...], stage: str, image: tf.Tensor, label: tf.Tensor,
                    info: DatasetInfo, seed: tf.Tensor | None, is_training: bool,
                    maps: dict[str, tf.Tensor] | None = None) -> dict[str, tf.Tensor]:
    """The targets of ``names`` that belong to ``stage``, by name."""
    out, memo = {}, {}
    for name in names:
        spec = get_target(name)
        if spec.stage == stage:
            out[name] = spec.fn(TargetContext(image, label, info, _seed_for(seed, name),
                                              is_training, memo,
                                              {m: (maps or {})[m] for m in spec.maps}))
    return out


def tags_from_label(label: tf.Tensor, info: DatasetInfo) -> tf.Tensor:
    """Multi-hot float32 `[num_tags]`: tag i is set when class `tag_class_ids[i]` occurs."""
    depth = max(info.num_classes, info.ignore_label + 1)
    flat = tf.reshape(tf.cast(label, tf.int32), [-1])
    counts = tf.math.bincount(flat, minlength=depth, maxlength=depth, dtype=tf.int32)
    present = tf.gather(counts, list(info.tag_class_ids)) > 0
    return tf.cast(present, tf.float32)


@register_target("tags", stage=IMAGE)
def _tags(ctx: TargetContext) -> tf.Tensor:
    """Classes present anywhere in the full label map (background and ignore excluded)."""
    return tags_from_label(ctx.label, ctx.info)


@register_target("semantic", stage=DENSE)
def _semantic(ctx: TargetContext) -> tf.Tensor:
    """The augmented label map ``[h, w]`` (the ignore label kept)."""
    return ctx.label[..., 0]
