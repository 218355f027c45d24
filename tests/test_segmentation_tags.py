"""Tags pooled from the segmentation (``--tag_head=segmentation``): the head, the refit
through it, its refit sets, and a released model imported with it, exported and served
in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import build_network, group_variables, variable_groups
from tests.conftest import DM05, run_tool, tool_env
from tf_mtl import evidence as ev
from tf_mtl.evidence import refitter as refitter_module


def numpy_pooling(probs: np.ndarray, pooling: str, r: float) -> np.ndarray:
    """[H, W, T] -> [T], written from the docstring's formulas."""
    flat = probs.reshape(-1, probs.shape[-1]).astype(np.float64)
    if pooling == "max":
        s = flat.max(0)
    elif pooling == "mean":
        s = flat.mean(0)
    else:
        s = np.log(np.mean(np.exp(r * flat), 0)) / r
    return np.clip(s, 1e-6, 1 - 1e-6)


@pytest.mark.parametrize("variant,pooling,r", [
    ("deeplabv3plus_mobilenetv2_tiny", "lse", 10.0),
    ("deeplabv3plus_mobilenetv2_tiny_mt", "lse", 3.0),
    ("deeplabv3plus_mobilenetv2_tiny_mt", "max", 10.0),
    ("segnet_tiny", "mean", 10.0),
    ("mtan_tiny", "lse", 10.0),
])
def test_tags_are_the_pooled_softmax_and_the_head_has_no_parameters(variant, pooling, r):
    net = build_network(variant, num_classes=6, tag_head="segmentation",
                        seg_tag_pooling=pooling, seg_tag_temperature=r)
    cfg = net.model_config
    # A variant without tags gets them with the head; tag i is class i + 1 (background 0).
    assert cfg.num_tags == 5
    plain = build_network(variant, num_classes=6, num_tags=0)
    assert net.count_params() == plain.count_params()  # the head adds no parameter
    assert net.get_layer("tag_head").count_params() == 0
    x = np.random.RandomState(0).uniform(0, 255, (2, 33, 49, 3)).astype("float32")
    out = net(x, training=False)
    probs = tf.nn.softmax(out["semantic"], -1).numpy()
    for i in range(2):
        want = numpy_pooling(probs[i][..., 1:], pooling, r)
        got = tf.sigmoid(out["tags"][i]).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_tag_class_ids_follow_the_dataset():
    """A dataset without background (CamVid: the ignore label is the 12th value) tags
    every class; the record in the config survives a JSON round trip."""
    from deeplab_ext.data.datasets import get_dataset_info
    from deeplab_ext.models.deeplab.config import DeepLabConfig
    from deeplab_ext.models.registry import get_variant

    info = get_dataset_info("camvid")
    _, cfg = get_variant("deeplabv3plus_mobilenetv2_tiny_mt", tag_head="segmentation")
    cfg = cfg.for_dataset(info.num_classes, info.num_tags, info.tag_class_ids)
    assert cfg.tag_class_ids == tuple(range(11)) and cfg.num_tags == 11
    again = DeepLabConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(ValueError, match="tag_class_ids"):
        cfg.replace(tag_class_ids=(0, 1))
    with pytest.raises(ValueError, match="--tag_head"):
        cfg.replace(tag_head="pixels")


def test_batch_norm_only_refit_group():
    net = build_network("deeplabv3plus_mobilenetv2_tiny_mt", tag_head="segmentation")
    bn = group_variables(net, "backbone:bn,aspp:bn")
    assert bn and all(v.path.rsplit("/", 1)[-1] in ("gamma", "beta") for v in bn)
    groups = variable_groups(net)
    every = {id(v) for v in groups["backbone"] + groups["aspp"]}
    assert {id(v) for v in bn} < every
    # Defaults: the segmentation head's first refit set (the encoder head keeps its own).
    assert {id(v) for v in group_variables(net)} == {id(v) for v in groups["aspp"]}
    encoder = build_network("deeplabv3plus_mobilenetv2_tiny_mt")
    want = variable_groups(encoder)
    assert {id(v) for v in group_variables(encoder)} == {
        id(v) for g in ("backbone", "aspp", "tag_head") for v in want[g]}
    with pytest.raises(ValueError, match=":bn"):
        group_variables(net, "trunk:bn")


def test_refit_through_the_frozen_trunk_equals_the_whole_network(monkeypatch):
    """Refitting ASPP and logits runs the backbone once per image (a split at the deepest
    frozen feature): the same refit as stepping the whole network, and the network's
    variables are never assigned."""
    net = build_network("deeplabv3plus_mobilenetv2_tiny_mt", num_classes=5,
                        tag_head="segmentation")
    x = np.random.RandomState(0).uniform(0, 255, (2, 33, 33, 3)).astype("float32")
    tags = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], np.float32)
    cfg = ev.EvidenceConfig(steps=3, learning_rate=0.5)
    variables = group_variables(net, "aspp,logits")
    snapshot = [v.numpy().copy() for v in net.variables]
    split = ev.EvidenceRefitter(net, cfg, variables=variables)
    assert split.split is not None and "decoder_skip" in split.split.side_names
    got = split(x, tags)
    monkeypatch.setattr(refitter_module, "frozen_prefix", lambda *args: None)
    whole = ev.EvidenceRefitter(net, cfg, variables=variables)
    assert whole.split is None
    want = whole(x, tags)
    for key in ("probabilities", "tag_probabilities_before", "tag_probabilities_after"):
        np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["steps_taken"].numpy(), [3, 3])
    moved = np.abs(got["tag_probabilities_after"].numpy() - tags).mean()
    assert moved < np.abs(got["tag_probabilities_before"].numpy() - tags).mean()
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(snapshot, net.variables,
                                                            strict=True))
    # A refit that reaches the backbone has no frozen prefix worth splitting at.
    assert ev.EvidenceRefitter(net, cfg, variables=group_variables(net, "backbone:bn")
                               ).split is None


def test_released_model_gets_tags_exports_and_serves_them(tmp_path, real_data):
    """tools.import_weights --tag_head=segmentation gives the released model tags with no
    training; its export, loaded in a fresh process that imports only TensorFlow, serves
    them: segment_with_evidence with steps=0 is serving_default, 10 steps move the tags
    toward the evidence."""
    run, export = tmp_path / "import", tmp_path / "export"
    proc = run_tool("import_weights", f"--source={DM05}", "--tag_head=segmentation",
                    "--model_variant=deeplabv3_mobilenetv2_dm05", f"--output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((run / "model_config.json").read_text())
    assert meta["model"]["tag_head"] == "segmentation" and meta["model"]["num_tags"] == 20
    assert meta["model"]["tag_class_ids"] == list(range(1, 21))
    proc = run_tool("export_model", f"--checkpoint_dir={run}", f"--export_path={export}",
                    "--evidence_learning_rate=0.003", "--evidence_alpha=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    photo = real_data / "coco128-voc" / "JPEGImages" / "000000000036.jpg"
    script = textwrap.dedent(f"""
        import json, cv2, numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(export)!r})
        image = cv2.resize(cv2.imread({str(photo)!r})[..., ::-1], (161, 121))
        x = tf.constant(image[None].astype("float32"))
        tags = np.zeros([1, 20], "float32"); tags[0, [14, 16]] = 1  # person, pottedplant
        plain = m.signatures["serving_default"](images=x)
        zero = m.signatures["segment_with_evidence"](images=x, tags=tf.constant(tags),
                                                     steps=tf.constant(0))
        ten = m.signatures["segment_with_evidence"](images=x, tags=tf.constant(tags),
                                                    steps=tf.constant(10))
        bce = lambda p: float(-np.mean(tags * np.log(p) + (1 - tags) * np.log(1 - p)))
        print(json.dumps({{
            "probs": float(np.abs(zero["semantic_probabilities"].numpy() -
                                  plain["semantic_probabilities"].numpy()).max()),
            "tags": float(np.abs(zero["tag_probabilities"].numpy() -
                                 plain["tag_probabilities"].numpy()).max()),
            "steps": int(ten["steps_taken"][0]),
            "before": bce(ten["tag_probabilities_before"].numpy()),
            "after": bce(ten["tag_probabilities"].numpy())}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=tool_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # Two graphs (the serving call; the refit's split head at zero steps): float rounding.
    assert got["probs"] <= 1e-5 and got["tags"] <= 1e-5, got
    assert got["steps"] == 10 and got["after"] < got["before"], got
