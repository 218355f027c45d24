"""A loss weighting is one file: this module registers one from outside the tree
(``halved``: every task at half its weight, with a range-checked option) and runs it
through ``tools.train`` by ``--extra_modules``, as a user's own method would be."""

from __future__ import annotations

import keras
import pytest

from tests.conftest import TEST_VARIANT, run_tool
from tf_mtl.weighting import FixedWeighting, register_weighting

MODULE = "tests.test_weighting_plugin"


@register_weighting("halved", "test plug-in: fixed weights times a factor",
                    checks={"factor": (lambda v: 0 < v <= 1, "in (0, 1]")}, factor=0.5)
@keras.saving.register_keras_serializable(package="tests")
class HalvedWeighting(FixedWeighting):
    """Every task at ``factor`` times its weight."""

    def __init__(self, tasks=None, factor: float = 0.5, **kwargs):
        super().__init__(tasks, **kwargs)
        self.weights_by_task = {n: factor * w for n, w in self.weights_by_task.items()}


def test_a_weighting_from_outside_the_tree_trains_through_the_tool(tmp_path, shapes_data):
    from tf_mtl import tbevents

    logdir = tmp_path / "run"
    common = [f"--extra_modules={MODULE}", f"--train_logdir={logdir}",
              f"--dataset_dir={shapes_data}", "--dataset=shapes_evidence",
              f"--model_variant={TEST_VARIANT}", "--train_crop_size=33,33",
              "--train_batch_size=2", "--save_summaries_images=false", "--seed=0",
              "--training_number_of_steps=2", "--save_summaries_steps=1"]
    proc = run_tool("train", *common, "--loss_weighting=halved",
                    "--weighting_options=factor=0.25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scalars = tbevents.read_scalars(logdir / "train")
    assert dict(scalars["train/semantic_weight"])[0] == pytest.approx(0.25)
    # Its option's range, declared with it, is checked like a built-in's.
    proc = run_tool("train", *common[:1], f"--train_logdir={tmp_path / 'bad'}", *common[2:],
                    "--loss_weighting=halved", "--weighting_options=factor=2")
    assert proc.returncode == 2 and "factor=2 for --loss_weighting=halved must be in (0, 1]" \
        in proc.stderr, proc.stderr[-2000:]
    # Without the module the name is unknown, and the error lists the known ones.
    proc = run_tool("train", *common[1:], "--loss_weighting=halved")
    assert proc.returncode == 2 and "unknown loss weighting 'halved'" in proc.stderr \
        and "uncertainty" in proc.stderr, proc.stderr[-2000:]


def test_a_taken_name_is_refused_unless_overridden():
    with pytest.raises(ValueError, match="already registered"):
        register_weighting("fixed")(HalvedWeighting)
