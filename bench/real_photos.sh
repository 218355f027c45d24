#!/usr/bin/env bash
# The first evidence table on real photos (issue 15): the original's released
# mobilenetv2_dm05_coco_voc_trainaug imported, its _mt twin's tag head trained on
# coco128-voc train (trunk and segmentation frozen: 65 photos cannot improve a model
# trained on COCO + VOC train_aug, and a frozen segmentation makes every row's difference
# the evidence's own), refit settings tuned on train (never val), then every evidence
# mode on val, single scale and multi-scale + flip, with bootstrap intervals.
#   bash bench/real_photos.sh WORKDIR [TAG_STEPS]
set -euo pipefail
W=${1:?usage: bash bench/real_photos.sh WORKDIR [TAG_STEPS]}
STEPS=${2:-1500}
source "$(dirname "$0")/coco128.sh"
MODES=none,prune,bp_l2,bp_es,bp_l2_prune,bp_es_prune
run $PY -m tools.import_weights --source="$TFLITE" \
  --model_variant=deeplabv3_mobilenetv2_dm05_mt --output_dir="$W/import"
run $PY -m tools.train --model_variant=deeplabv3_mobilenetv2_dm05_mt --dataset=pascal_voc_seg \
  --dataset_dir="$W/coco" --train_split=train --train_logdir="$W/train" \
  --tf_initial_checkpoint="$W/import" --fine_tune_batch_norm=false --train_groups=tag_head \
  --train_crop_size=321,321 --train_batch_size=8 --training_number_of_steps="$STEPS" \
  --optimizer=adam --base_learning_rate=0.001 --loss_weighting=fixed \
  --save_interval_steps=500 --save_summaries_steps=50 --seed=0
run $PY -m tools.tune_evidence --checkpoint_dir="$W/train" --dataset_dir="$W/coco" \
  --tune_split=train --max_number_of_examples=16 --max_candidates=6
run $PY -m tools.eval --checkpoint_dir="$W/train" --dataset_dir="$W/coco" --eval_split=val \
  --evidence_modes=$MODES --eval_logdir="$W/eval_val"
run $PY -m tools.eval --checkpoint_dir="$W/train" --dataset_dir="$W/coco" --eval_split=val \
  --evidence_modes=$MODES --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --add_flipped_images \
  --eval_logdir="$W/eval_val_ms"
run $PY -m tools.eval --checkpoint_dir="$W/import" --dataset_dir="$W/coco" \
  --eval_split=trainval --evidence_modes=none,prune --eval_logdir="$W/eval_import_97"
run $PY -m tools.eval --checkpoint_dir="$W/import" --dataset_dir="$W/coco" \
  --eval_split=trainval --evidence_modes=none,prune --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 \
  --add_flipped_images --eval_logdir="$W/eval_import_97_ms"
