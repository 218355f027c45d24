"""The model-agnostic refitter on the real DeepLab graph (skipped until deeplab_ext exists)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter, split_at

dl_model = pytest.importorskip("deeplab_ext.model")


@pytest.fixture(scope="module")
def net():
    return dl_model.build_model("deeplabv3plus_mobilenetv2_tiny_mt")


def test_deeplab_split_refit_and_untouched(net):
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (2, 33, 33, 3)).astype("float32")
    num_tags = net.output["tags"].shape[-1]
    tags = np.zeros((2, num_tags), "float32")
    tags[0, [3, 7]] = 1
    tags[1, 14] = 1
    split = split_at(net, "encoder")
    assert "low_level" in split.side_names
    ref = net(x, training=False)
    np.testing.assert_allclose(
        split.head(split.trunk(x))["semantic"].numpy(), ref["semantic"].numpy(), atol=1e-6
    )
    groups = dl_model.variable_groups(net)
    chosen = groups["backbone"] + groups["aspp"] + groups["tag_head"]
    snap = [v.numpy().copy() for v in net.variables]
    refitter = EvidenceRefitter(
        net, EvidenceConfig(steps=5, learning_rate=0.01, optimizer="adam"), variables=chosen
    )
    assert {id(v) for v in refitter.refit_variables} == {id(v) for v in chosen}
    zero = refitter(x, tags, steps=0)
    np.testing.assert_array_equal(
        zero["probabilities"].numpy(), tf.nn.softmax(ref["semantic"]).numpy()
    )
    out = refitter(x, tags)
    before = np.abs(out["tag_probabilities_before"].numpy() - tags).mean()
    after = np.abs(out["tag_probabilities_after"].numpy() - tags).mean()
    assert after < 0.5 * before, (before, after)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(snap, net.variables, strict=True))
