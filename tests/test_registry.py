"""The one registry class of every extension axis (tf_mtl.registry) and its users."""

from __future__ import annotations

import pytest

from tf_mtl.registry import Registry


def test_names_in_order_duplicates_refused_override_and_unknown_listed():
    found = []
    reg: Registry[int] = Registry("widget", "--widget", discover=lambda: found.append(1))
    reg.register("b", 2)
    reg.register("a", 1)
    assert reg.names() == ("b", "a") and found == [1]  # discovered once, before lookups
    assert reg.names() == ("b", "a") and found == [1]
    with pytest.raises(ValueError, match="widget named 'a' is already registered.*override"):
        reg.register("a", 3)
    reg.register("a", 3, override=True)
    assert reg["a"] == 3
    reg.register("a", 3)  # the very same object again: a module imported twice
    with pytest.raises(ValueError, match=r"--widget=c: unknown widget 'c'; known: b, a"):
        reg.get("c")
    reg.unregister("a")
    assert "a" not in reg and len(reg) == 1


def test_every_built_in_axis_refuses_a_second_plug_in_of_a_taken_name():
    """A user's module can no longer silently replace a built-in family, task, branch,
    target or dataset: it must say override=True."""
    from deeplab_ext import tasks
    from deeplab_ext.data import datasets, targets
    from deeplab_ext.models import registry as models

    deeplab = models.get_family("deeplab")
    with pytest.raises(ValueError, match="model family named 'deeplab'"):
        models.register_family(deeplab.__class__(**{**deeplab.__dict__, "module": "mine"}))
    with pytest.raises(ValueError, match="task named 'semantic'"):
        tasks.register_task(tasks.TaskSpec("semantic", lambda ctx: None, ("semantic",),
                                           lambda family: "semantic"))
    with pytest.raises(ValueError, match="branch named 'aux_tasks'"):
        tasks.register_branch(tasks.BranchSpec("aux_tasks", lambda ctx: None))
    with pytest.raises(ValueError, match="input target named 'edges'"):
        targets.register_target("edges", targets.DENSE)(lambda ctx: None)
    with pytest.raises(ValueError, match="already registered"):
        datasets.register_custom_dataset("camvid", ["a", "b"])
    assert set(models.FAMILIES.names()) >= {"deeplab", "segnet", "mtan"}


def test_a_methods_options_are_resolved_once_with_the_old_flags_as_aliases(shapes_data):
    """--initial_sigma and --dwa_window_steps are aliases of the methods' own options; the
    option a method fills with one pass over the data (DWA's window) is counted by the run,
    not by a name the trainer knows."""
    from deeplab_ext.run.trainer import method_options
    from tests.conftest import tiny_train_options

    def resolved(**kw):
        return method_options(tiny_train_options("unused", shapes_data, **kw), shapes_data)

    assert resolved(loss_weighting="uncertainty")["initial_sigma"] == 1.0
    assert resolved(loss_weighting="uncertainty", initial_sigma=2.0)["initial_sigma"] == 2.0
    assert resolved(loss_weighting="uncertainty",
                    weighting_options="initial_sigma=3")["initial_sigma"] == 3.0
    with pytest.raises(ValueError, match="give initial_sigma once"):
        resolved(loss_weighting="uncertainty", initial_sigma=2.0,
                 weighting_options="initial_sigma=3")
    # 6 training images at batch 2: one pass is 3 steps.
    assert resolved(loss_weighting="dwa")["window_steps"] == 3
    assert resolved(loss_weighting="dwa", dwa_window_steps=5)["window_steps"] == 5
    assert "window_steps" not in resolved(loss_weighting="cagrad", dwa_window_steps=5)
