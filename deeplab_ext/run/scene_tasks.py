"""The instance and depth tasks of Kendall, Gal and Cipolla's scene network (CVPR 2018);
any family whose network has an ``instance`` or ``depth`` output gets them (DeepLab's
``*_scene`` variants: per-task decoders on the shared encoder).

``instance``: L1 of the predicted centroid offsets (dy, dx, pixels) on instance pixels
(target ``instance``, ``deeplab_ext.data.scene_targets``); metrics the mean offset error in
pixels and the panoptic quality of the instances clustered from the offsets on the true
instance pixels (``tf_mtl.instances``). ``depth``: L1 of the predicted disparity (inverse depth, pixels) on valid pixels
(target ``depth``); metrics MAE, abs rel, delta < 1.25. Both are regression tasks: under
uncertainty weighting their terms are L / (2 sigma^2) + log sigma.
"""

from __future__ import annotations

from deeplab_ext.run.tasks import TaskContext, TaskSpec, register_task
from tf_mtl.instances import InstanceQuality
from tf_mtl.losses import masked_l1
from tf_mtl.metrics import DepthErrors, OffsetError
from tf_mtl.tasks import Task


def _instance(ctx: TaskContext) -> Task:
    return Task("instance", masked_l1, kind="regression",
                metrics=[OffsetError(), InstanceQuality()])


def _depth(ctx: TaskContext) -> Task:
    return Task("depth", masked_l1, kind="regression", metrics=[DepthErrors()])


register_task(TaskSpec("instance", _instance, targets=("instance",),
                       output=lambda family: "instance"))
register_task(TaskSpec("depth", _depth, targets=("depth",), output=lambda family: "depth"))
