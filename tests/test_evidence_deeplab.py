"""The model-agnostic refitter on the real DeepLab graph."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.models import build_network, group_variables, variable_groups
from tests.conftest import TEST_VARIANT
from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter
from tf_mtl.graph import split_at


@pytest.fixture(scope="module")
def net():
    return build_network(TEST_VARIANT)


def test_deeplab_split_refit_and_untouched(net):
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (2, 33, 33, 3)).astype("float32")
    num_tags = net.output["tags"].shape[-1]
    tags = np.zeros((2, num_tags), "float32")
    tags[0, [3, 7]] = 1
    tags[1, 14] = 1
    split = split_at(net, "encoder")
    assert "decoder_skip" in split.side_names  # the decoder's low-level skip
    ref = net(x, training=False)
    np.testing.assert_allclose(
        split.head(split.trunk(x))["semantic"].numpy(), ref["semantic"].numpy(), atol=1e-6
    )
    groups = variable_groups(net)
    chosen = groups["backbone"] + groups["aspp"] + groups["tag_head"]
    # The family's default refit set is the trunk and the tag branch.
    assert {id(v) for v in group_variables(net)} == {id(v) for v in chosen}
    snap = [v.numpy().copy() for v in net.variables]
    refitter = EvidenceRefitter(
        net, EvidenceConfig(steps=5, learning_rate=0.01, optimizer="adam"), variables=chosen
    )
    assert {id(v) for v in refitter.refit_variables} == {id(v) for v in chosen}
    zero = refitter(x, tags, steps=0)
    # Zero steps is plain inference. The refitter's graph (stateless_call inside a
    # tf.function) and the eager call order float operations differently: on some CPUs
    # they differ by a few 1e-9, so a tolerance, not bit equality.
    np.testing.assert_allclose(
        zero["probabilities"].numpy(), tf.nn.softmax(ref["semantic"]).numpy(), rtol=0, atol=1e-6
    )
    np.testing.assert_array_equal(zero["steps_taken"].numpy(), [0, 0])
    out = refitter(x, tags)
    before = np.abs(out["tag_probabilities_before"].numpy() - tags).mean()
    after = np.abs(out["tag_probabilities_after"].numpy() - tags).mean()
    assert after < 0.5 * before, (before, after)
    # The model's own variables are never assigned: same values, bit for bit.
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(snap, net.variables, strict=True))
