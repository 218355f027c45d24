"""The image classification and box regression tasks (SegNet / MTAN's ``class`` and
``box`` heads; any family whose network has those outputs gets them).

``class``: softmax cross-entropy against ``object_class`` (the largest object's class;
crops without one are skipped), accuracy. ``box``: MSE of the normalised box against
``object_box`` (present boxes only), mean box IoU; a regression task under uncertainty
weighting. The study's fixed weights are ``--task_weights=semantic=0.7,class=0.1,box=0.2``.
"""

from __future__ import annotations

from deeplab_ext.tasks.base import TaskContext, TaskSpec, register_task
from tf_mtl.losses import box_mse, image_class_ce
from tf_mtl.metrics import ImageClassAccuracy, MeanBoxIoU
from tf_mtl.tasks import Task


def _class(ctx: TaskContext) -> Task:
    return Task("class", image_class_ce, kind="classification", target="object_class",
                metrics=[ImageClassAccuracy(name="accuracy")])


def _box(ctx: TaskContext) -> Task:
    return Task("box", box_mse, kind="regression", target="object_box",
                metrics=[MeanBoxIoU(name="box_iou")])


register_task(TaskSpec("class", _class, targets=("object_class",), output=lambda family: "class"))
register_task(TaskSpec("box", _box, targets=("object_box",), output=lambda family: "box"))
