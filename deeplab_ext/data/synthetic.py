"""`shapes_evidence`: the built-in procedurally generated dataset (no download).

Why it exists: a fast, offline dataset on which image-level tags carry information that
the pixels leave ambiguous, so multi-task training and prediction-time evidence can be
shown to matter in minutes on a CPU.

The generator (`generate_example`), per image of `size` x `size` pixels:
- Background (class 0): a random grey-ish tint, low-frequency blotches (a cubic-upsampled
  coarse noise grid, sd 18) plus fine pixel noise (sd 8): textured and noisy.
- 1..`max_objects` objects drawn from 8 foreground classes in 4 look-alike PAIRS, one pair
  per shape (disk, square, triangle, cross). Both members of a pair have the same shape
  and the same base colour (plus per-instance colour jitter of +-12, larger than the
  +4 blue offset between the members); the only cue is a faint stripe texture,
  horizontal for `*_h` and vertical for `*_v` (period 4 px, amplitude 12). An image never
  holds both members of a pair, so its tags say which member every object of that shape is.
- Objects are sometimes small (radius 3-5 px, p=0.25) and sometimes faint (alpha-blended
  into the background at 0.3-0.5, p=0.3), where the stripes are almost invisible.
- Later objects occlude earlier ones. As in VOC, a 255 "void" band (the 3x3 morphological
  gradient of the label map, ~1 px each side) marks every boundary.
The per-pixel task stays learnable: shape, colour and (on clear objects) the stripes are
visible to a small CNN; what the tags add is the pair member on faint/small objects.
Deterministic: example `i` of split `s` uses `numpy.random.default_rng([seed, s, i])`.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import cv2
import numpy as np

from deeplab_ext.data import tfrecord
from deeplab_ext.data.datasets import get_dataset_info, info_to_dict

NAME = "shapes_evidence"
IGNORE_LABEL = 255
SHAPES = ("disk", "square", "triangle", "cross")
# Pair k (shape SHAPES[k]) has classes 2k+1 (horizontal stripes) and 2k+2 (vertical).
PAIRS = tuple((2 * k + 1, 2 * k + 2) for k in range(len(SHAPES)))
BASE_COLORS = ((200, 80, 70), (70, 160, 90), (80, 100, 200), (190, 170, 60))
STRIPE_PERIOD = 4
STRIPE_AMPLITUDE = 12.0
MEMBER_BLUE_OFFSET = 4.0
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# The built-in dataset's difficulty (generator options default to these).
P_SMALL = 0.25
P_FAINT = 0.3
FAINT_ALPHA = (0.3, 0.5)


def partner(class_id: int) -> int:
    """The look-alike class of `class_id` (1<->2, 3<->4, ...)."""
    if not 1 <= class_id <= 2 * len(PAIRS):
        raise ValueError(f"{class_id} is not a foreground class of {NAME}")
    return class_id + 1 if class_id % 2 == 1 else class_id - 1


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(90, 160) + rng.uniform(-15, 15, size=3)
    coarse = rng.normal(0, 18, size=(size // 8 + 2, size // 8 + 2, 3)).astype(np.float32)
    blotches = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return base + blotches + rng.normal(0, 8, size=(size, size, 3))


def _shape_mask(rng: np.random.Generator, shape: str, size: int, radius: float,
                centre: tuple[float, float] | None = None) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cy, cx = rng.uniform(radius, size - radius, size=2) if centre is None else centre
    angle = rng.uniform(0, np.pi)
    if shape == "disk":
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius)), 1, -1)
    elif shape in ("square", "triangle"):
        n = 4 if shape == "square" else 3
        r = radius * (1.2 if shape == "square" else 1.3)
        t = angle + np.arange(n) * 2 * np.pi / n
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], -1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # cross: two bars
        half_w = max(1.0, radius * 0.35)
        for a in (angle, angle + np.pi / 2):
            d = np.array([np.cos(a), np.sin(a)])
            n = np.array([-d[1], d[0]])
            c = np.array([cx, cy])
            pts = [c + radius * d + half_w * n, c + radius * d - half_w * n,
                   c - radius * d - half_w * n, c - radius * d + half_w * n]  # fmt: skip
            cv2.fillPoly(mask, [np.round(np.array(pts)).astype(np.int32)], 1)
    return mask.astype(bool)


def _add_void_band(label: np.ndarray) -> None:
    """VOC's 255 band on every boundary: the 3x3 morphological gradient of the labels."""
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    label[band] = IGNORE_LABEL


def _stripes(size: int, vertical: bool, phase: int) -> np.ndarray:
    coord = np.arange(size)
    wave = np.where(((coord + phase) % STRIPE_PERIOD) < STRIPE_PERIOD // 2, 1.0, -1.0)
    return np.tile(wave[None, :], (size, 1)) if vertical else np.tile(wave[:, None], (1, size))


def generate_example(
    rng: np.random.Generator,
    size: int = 64,
    *,
    max_objects: int = 3,
    p_small: float = P_SMALL,
    p_faint: float = P_FAINT,
    faint_alpha: tuple[float, float] = FAINT_ALPHA,
    ignore_band: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One (uint8 RGB image `[size, size, 3]`, uint8 label `[size, size]`) pair.

    See the module docstring for the design. Labels: 0 background, 1..8 objects, 255 void.
    `p_small`, `p_faint` and `faint_alpha` (the blend range of faint objects) set how often
    an object is hard to find at all, as opposed to hard to tell from its look-alike.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if not 1 <= max_objects <= len(PAIRS):
        raise ValueError(f"max_objects must be in 1..{len(PAIRS)}, got {max_objects}")
    for name, prob in (("p_small", p_small), ("p_faint", p_faint)):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {prob}")
    lo, hi = faint_alpha
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"faint_alpha must be (low, high) with 0 < low <= high <= 1, got {faint_alpha}")
    image = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    num = int(rng.integers(1, max_objects + 1))
    pairs = rng.choice(len(PAIRS), size=num, replace=False)
    for pair in pairs:
        member = int(rng.integers(0, 2))
        class_id = PAIRS[pair][member]
        if rng.random() < p_small:
            radius = rng.uniform(3, 5)
        else:
            radius = rng.uniform(0.08, 0.22) * size
        mask = _shape_mask(rng, SHAPES[pair], size, radius)
        if not mask.any():
            continue
        color = np.array(BASE_COLORS[pair], np.float64) + rng.uniform(-12, 12, size=3)
        color[2] += MEMBER_BLUE_OFFSET * member
        texture = STRIPE_AMPLITUDE * _stripes(size, bool(member), int(rng.integers(0, 4)))
        obj = color + texture[..., None] + rng.normal(0, 8, size=(size, size, 3))
        alpha = rng.uniform(lo, hi) if rng.random() < p_faint else rng.uniform(0.85, 1.0)
        image[mask] = alpha * obj[mask] + (1 - alpha) * image[mask]
        label[mask] = class_id
    if ignore_band:
        _add_void_band(label)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label


# The scene variant (``scene=True``, dataset ``shapes_scene``): disparity in pixels at size
# 64 (scaled with the size) of the far and near ends of the ground, and the range objects
# are drawn from; the fog colour and its share at the farthest and nearest objects.
SCENE_NAME = "shapes_scene"
SCENE_GROUND_DISPARITY = (1.5, 16.0)
SCENE_OBJECT_DISPARITY = (3.0, 12.0)
SCENE_FOG = np.array([185.0, 190.0, 200.0])
SCENE_FOG_SHARE = (0.6, 0.15)


def generate_scene_example(
    rng: np.random.Generator, size: int = 64, *, max_objects: int = 3,
    ignore_band: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One example of the scene variant ``shapes_scene``: (image, label, instance ids
    uint16, disparity uint16 in Cityscapes' encoding p = 256 d + 1), for the semantic +
    instance + depth system (issue 31). One class per shape (1 disk, 2 square, 3 triangle,
    4 cross, in its base colour; no look-alike pairs: this dataset is about the three
    tasks, not tags) on the textured background of :func:`generate_example`, and:

    * a ground plane whose disparity grows linearly from the top row (far) to the bottom
      row (near); every object stands on the ground at the row of its own disparity, so
      nearer objects are lower in the image;
    * an object's size is proportional to its disparity (radius 0.9 d), and fog fades
      everything with distance (the share of the fog colour goes from 0.15 at the nearest
      to 0.6 at the farthest object), so far objects are small and faint;
    * objects are drawn far to near: nearer ones occlude farther ones;
    * instance ids are ``class * 1000 + k`` (Cityscapes' encoding), k the drawing order.
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if not 1 <= max_objects <= len(SHAPES):
        raise ValueError(f"max_objects must be in 1..{len(SHAPES)}, got {max_objects}")
    k = size / 64.0
    ground = tuple(d * k for d in SCENE_GROUND_DISPARITY)
    objects = tuple(d * k for d in SCENE_OBJECT_DISPARITY)
    rows = np.arange(size, dtype=np.float64)[:, None]
    disparity = np.repeat(ground[0] + (ground[1] - ground[0]) * rows / (size - 1), size, axis=1)
    image = _background(rng, size)
    f = _fog_share(disparity, objects)[..., None]
    image = (1 - f) * image + f * SCENE_FOG
    label = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.int64)
    _draw_scene_objects(rng, size, max_objects, ground, objects, image, label, instance,
                        disparity)
    instance = np.where(instance > 0, instance, label)  # no instance: the class id
    if ignore_band:
        _add_void_band(label)
    raw = np.round(disparity * 256.0) + 1.0
    return (np.clip(np.round(image), 0, 255).astype(np.uint8), label,
            instance.astype(np.uint16), raw.astype(np.uint16))


def _fog_share(d: np.ndarray | float, objects: tuple[float, float]) -> np.ndarray | float:
    """The fog colour's share at disparity ``d``: SCENE_FOG_SHARE's far value at the
    farthest object disparity, its near value at the nearest."""
    far_share, near_share = SCENE_FOG_SHARE
    o_far, o_near = objects
    near = np.clip((d - o_far) / (o_near - o_far), 0.0, 1.0)
    return far_share + (near_share - far_share) * near


def _draw_scene_objects(rng: np.random.Generator, size: int, max_objects: int,
                        ground: tuple[float, float], objects: tuple[float, float],
                        image: np.ndarray, label: np.ndarray, instance: np.ndarray,
                        disparity: np.ndarray) -> None:
    """Draws the scene's objects far to near into the four maps (in place), each standing
    on the ground row of its disparity and fogged by it."""
    g_far, g_near = ground
    num = int(rng.integers(1, max_objects + 1))
    shapes = rng.choice(len(SHAPES), size=num, replace=False)
    depths = np.sort(rng.uniform(objects[0], objects[1], size=num))  # far first
    for order, (shape, d) in enumerate(zip(shapes, depths, strict=True), start=1):
        class_id = int(shape) + 1
        radius = 0.9 * d
        ground_row = (d - g_far) / (g_near - g_far) * (size - 1)
        cy = float(np.clip(ground_row - radius, radius, size - 1 - radius))
        cx = float(rng.uniform(radius, size - radius))
        mask = _shape_mask(rng, SHAPES[shape], size, radius, centre=(cy, cx))
        if not mask.any():
            continue
        color = np.array(BASE_COLORS[shape], np.float64) + rng.uniform(-12, 12, size=3)
        obj = color + rng.normal(0, 8, size=(size, size, 3))
        fog = _fog_share(d, objects)
        image[mask] = (1 - fog) * obj[mask] + fog * SCENE_FOG
        label[mask] = class_id
        instance[mask] = class_id * 1000 + order
        disparity[mask] = d


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for example `index` of `split`: independent of every other example.

    Other split names get a stable id from a CRC of the name (not `hash`, which Python
    salts per process: the same split would differ between runs).
    """
    split_id = SPLIT_IDS.get(split, zlib.crc32(split.encode()) % 100_000 + 10)
    return np.random.default_rng([seed, split_id, index])


def encode_example(image: np.ndarray, label: np.ndarray, filename: str,
                   maps: dict[str, np.ndarray] | None = None) -> bytes:
    """Serialize one generated pair in the original TFRecord format (lossless PNGs), with
    the scene variant's 16-bit maps by name when given."""
    ok_i, img_png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ok_l, lab_png = cv2.imencode(".png", label)
    if not (ok_i and ok_l):  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    h, w = label.shape
    ex = tfrecord.image_seg_to_tfexample(
        img_png.tobytes(), filename, h, w, lab_png.tobytes(), image_format="png",
        maps={k: cv2.imencode(".png", v)[1].tobytes() for k, v in (maps or {}).items()},
    )
    return ex.SerializeToString()


def write_tfrecords(
    output_dir: str | os.PathLike,
    num_train: int | None = None,
    num_val: int | None = None,
    size: int = 64,
    seed: int = 0,
    *,
    num_shards: int = 4,
    max_objects: int = 3,
    splits: Sequence[str] = ("train", "val"),
    num_test: int | None = None,
    p_small: float = P_SMALL,
    p_faint: float = P_FAINT,
    faint_alpha: tuple[float, float] = FAINT_ALPHA,
    split_sizes: dict[str, int] | None = None,
    ignore_band: bool = True,
    scene: bool = False,
) -> dict[str, int]:
    """Generate and write the train/val shards (same format and reader path as real data).

    Defaults come from the `shapes_evidence` DatasetInfo's split sizes. A `test` split
    (disjoint from val: its own rng stream) is written when asked for with `num_test`;
    it is where prediction-time settings are tuned without touching val. `split_sizes`
    sizes any further split by name (e.g. ``{"holdout": 1000}``, its own rng stream): a
    large split narrows the interval on differences between prediction modes.
    ``ignore_band=False``: no void pixels (every batch then has the same number of
    labelled pixels, which per-replica loss normalisation needs to equal one process's).
    ``scene=True``: the scene variant, dataset ``shapes_scene``
    (:func:`generate_scene_example`: one class per shape, instance ids and disparity,
    objects placed by depth; ``p_small``/``p_faint``/``faint_alpha`` do not apply, depth
    sets size and fog).
    """
    if num_shards < 1:
        raise ValueError(f"--num_shards must be >= 1, got {num_shards}")
    info = get_dataset_info(SCENE_NAME if scene else NAME)
    sizes = dict(info.splits_to_sizes)
    wanted = {"train": num_train, "val": num_val, "test": num_test, **(split_sizes or {})}
    counts = {}
    for split in splits:
        n = wanted.get(split)
        n = sizes.get(split, 0) if n is None else n
        if n < 1:
            raise ValueError(f"number of {split} examples must be >= 1, got {n}")
        per_shard = -(-n // num_shards)
        with tfrecord.AtomicShardWriter(output_dir, split, num_shards,
                                        record=info_to_dict(info)) as writer:
            for i in range(n):
                image, label, maps = _split_example(
                    example_rng(seed, split, i), size, scene, max_objects=max_objects,
                    p_small=p_small, p_faint=p_faint, faint_alpha=faint_alpha,
                    ignore_band=ignore_band)
                writer.write(i // per_shard,
                             encode_example(image, label, f"{split}_{i:06d}", maps))
            writer.commit()
        counts[split] = n
    return counts


def _split_example(rng: np.random.Generator, size: int, scene: bool, *, max_objects: int,
                   p_small: float, p_faint: float, faint_alpha: tuple[float, float],
                   ignore_band: bool) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(image, label, the scene variant's maps or None): one example of either variant."""
    if scene:
        image, label, instance, raw = generate_scene_example(
            rng, size, max_objects=max_objects, ignore_band=ignore_band)
        return image, label, {"instance": instance, "disparity": raw}
    image, label = generate_example(
        rng, size, max_objects=max_objects, p_small=p_small, p_faint=p_faint,
        faint_alpha=faint_alpha, ignore_band=ignore_band,
    )
    return image, label, None
