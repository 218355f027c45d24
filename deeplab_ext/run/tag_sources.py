"""Where the tags of an evaluation come from: the ground truth as it is, the ground truth
with seeded noise, or a file of the user's.

Why: users' tags come from people, photo metadata or another model, so one is missing or
one names a class that is not there. ``--tag_noise=drop:1,add:1,seed:0`` scores the
evidence rows with such tags (drop k true tags, add k false ones drawn from the dataset's
tag classes absent from the photo), ``--tags_from=FILE`` with the user's own. The noise
is seeded per image index, so every row of one evaluation, and every candidate of one
tuning, sees the same tags; drop and add draw from separate streams, so ``drop:1,add:1``
drops the very tag ``drop:1`` drops. What was given, dropped and added is recorded per
image (``eval_results.json``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.data.input_pipeline import tags_from_names

__all__ = ["TagNoise", "TagSource", "read_tags_file", "tag_source"]


@dataclasses.dataclass(frozen=True)
class TagNoise:
    """Per image: ``drop`` true tags removed and ``add`` false ones added (as many as the
    image has), drawn with a generator seeded by ``(seed, image index)``; ``rate`` < 1
    touches that share of the images only (each drawn by its own seeded stream: a user
    whose tags are wrong now and then)."""

    drop: int = 0
    add: int = 0
    seed: int = 0
    rate: float = 1.0

    @classmethod
    def parse(cls, spec: str, flag: str = "--tag_noise") -> TagNoise:
        """``drop:K,add:K,seed:N,rate:R`` (any of them, any order)."""
        values: dict[str, float] = {}
        for part in [p.strip() for p in spec.split(",") if p.strip()]:
            key, _, value = part.partition(":")
            if key not in ("drop", "add", "seed", "rate") or key in values:
                raise ValueError(f"{flag}={spec}: {part!r} is not one of drop:K, add:K, seed:N, "
                                 "rate:R (each at most once), e.g. drop:1,add:1,seed:0")
            try:
                values[key] = float(value) if key == "rate" else int(value)
            except ValueError:
                raise ValueError(f"{flag}={spec}: {part!r} needs a "
                                 f"{'number' if key == 'rate' else 'whole number'}, e.g. "
                                 f"{key}:{'0.5' if key == 'rate' else 1}") from None
            if key == "rate" and not 0 < values[key] <= 1:  # NaN fails too
                raise ValueError(f"{flag}={spec}: {part!r}: the share of images with noise "
                                 "must be in (0, 1]")
            if values[key] < 0:
                raise ValueError(f"{flag}={spec}: {part!r} must be >= 0")
        noise = cls(**values)
        if noise.drop == 0 and noise.add == 0:
            raise ValueError(f"{flag}={spec}: drops and adds nothing; give drop:K and/or "
                             "add:K (or leave the flag out for the true tags)")
        return noise

    def apply(self, tags: np.ndarray, index: int) -> tuple[np.ndarray, list[int], list[int]]:
        """(the noisy tags, the tag indices dropped, those added) of image ``index``."""
        tags = np.asarray(tags, np.float32)
        if self.rate < 1 and np.random.default_rng([self.seed, index, 2]).random() >= self.rate:
            return tags.copy(), [], []
        present, absent = np.flatnonzero(tags >= 0.5), np.flatnonzero(tags < 0.5)
        drop_rng = np.random.default_rng([self.seed, index, 0])
        add_rng = np.random.default_rng([self.seed, index, 1])
        dropped = sorted(int(i) for i in drop_rng.permutation(present)[: self.drop])
        added = sorted(int(i) for i in add_rng.permutation(absent)[: self.add])
        noisy = tags.copy()
        noisy[dropped] = 0.0
        noisy[added] = 1.0
        return noisy, dropped, added

    def describe(self) -> str:
        rate = f",rate:{self.rate:g}" if self.rate < 1 else ""
        return f"drop:{self.drop},add:{self.add},seed:{self.seed}{rate}"


def read_tags_file(path: str | pathlib.Path, info: DatasetInfo, flag: str = "--tags_from"
                   ) -> dict[str, np.ndarray]:
    """A user's tags per image: JSON ``{image: ["person", "dog:0.6"]}`` (or ``{image:
    {"person": 1, "dog": 0.6}}``), or CSV rows ``image,person dog:0.6`` (tags separated by
    spaces or ``;``, an optional ``image,tags`` header). Images are named as in the
    shards (``image/filename``), with or without the extension."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag}={path}: cannot be read ({e}); give a JSON or CSV file of "
                         "tags per image") from None
    entries: dict[str, Any]
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{flag}={path}: not valid JSON ({e})") from None
        if not isinstance(entries, dict):
            raise ValueError(f"{flag}={path}: expected an object {{image: [tags]}}")
    elif path.suffix.lower() == ".csv":
        entries = {}
        for row in csv.reader(text.splitlines()):
            if not row or not row[0].strip() or row[0].strip().lower() in ("image", "filename"):
                continue
            entries[row[0].strip()] = " ".join(row[1:]).replace(";", " ").split()
    else:
        raise ValueError(f"{flag}={path}: expected a .json or .csv file of tags per image")
    out = {}
    for image, tags in entries.items():
        if isinstance(tags, dict):
            tags = [f"{name}:{p}" for name, p in tags.items()]
        if isinstance(tags, str) or not isinstance(tags, list):
            raise ValueError(f"{flag}={path}: image {image!r}: expected a list of class names "
                             f"(or name:probability), got {tags!r}")
        out[_stem(image)] = tags_from_names(tags, info, flag=f"{flag}={path}: image {image!r}")
    return out


def _stem(name: str) -> str:
    return pathlib.PurePath(str(name)).stem if "." in str(name) else str(name)


@dataclasses.dataclass
class TagSource:
    """The tags one evaluation (or tuning) gives every image: ``tags(index, name, true)``
    -> (tags, record); ``describe`` says where they came from (eval_results.json)."""

    noise: TagNoise | None = None
    file: str | None = None
    by_image: dict[str, np.ndarray] | None = None

    @property
    def describe(self) -> dict[str, Any]:
        if self.noise is not None:
            return {"source": "ground truth with noise", "tag_noise": self.noise.describe(),
                    **dataclasses.asdict(self.noise)}
        if self.file is not None:
            return {"source": "file", "tags_from": self.file}
        return {"source": "ground truth"}

    @property
    def label(self) -> str:
        if self.noise is not None:
            return f"the true tags with noise {self.noise.describe()}"
        return f"the tags of {self.file}" if self.file is not None else "the true tags"

    @property
    def is_truth(self) -> bool:
        return self.noise is None and self.file is None

    def tags(self, index: int, name: str, true: np.ndarray, info: DatasetInfo
             ) -> tuple[np.ndarray, dict[str, Any]]:
        true = np.asarray(true, np.float32)
        names = info.tag_names
        if self.noise is not None:
            given, dropped, added = self.noise.apply(true, index)
            record = {"dropped": [names[i] for i in dropped], "added": [names[i] for i in added]}
        elif self.by_image is not None:
            given, record = self.by_image[_stem(name)], {}
        else:
            given, record = true, {}
        record["given"] = {names[i]: round(float(given[i]), 4) for i in np.flatnonzero(given)}
        return given, record

    def check_names(self, names: Sequence[str]) -> None:
        """A file must name every image scored (a silent "no tags" would prune it bare)."""
        if self.by_image is None:
            return
        missing = [n for n in names if _stem(n) not in self.by_image]
        if missing:
            raise ValueError(
                f"--tags_from={self.file}: no tags for {len(missing)} of the {len(names)} "
                f"images (first: {missing[0]!r}); give every image a row (an empty one for "
                "an image without tags)")

    def apply(self, batches: Sequence, names: Sequence[str], info: DatasetInfo
              ) -> tuple[list, list[dict]]:
        """The batches (one image each) with ``targets["tags"]`` the tags given (the truth
        kept as ``targets["true_tags"]``), and each image's record."""
        self.check_names(names)
        out, records = [], []
        for index, ((images, targets), name) in enumerate(zip(batches, names, strict=True)):
            true = targets["tags"].numpy()
            given, record = self.tags(index, name, true[0], info)
            out.append((images, {**targets, "tags": tf.constant(given[None], tf.float32),
                                 "true_tags": targets["tags"]}))
            records.append(record)
        return out, records


def tag_source(tag_noise: str | None, tags_from: str | None, info: DatasetInfo) -> TagSource:
    """The tag source the flags ask for (at most one of --tag_noise, --tags_from)."""
    if tag_noise and tags_from:
        raise ValueError("give at most one of --tag_noise (the true tags, made noisy) and "
                         "--tags_from (your own tags per image)")
    if tag_noise:
        return TagSource(noise=TagNoise.parse(tag_noise))
    if tags_from:
        return TagSource(file=str(tags_from), by_image=read_tags_file(tags_from, info))
    return TagSource()
