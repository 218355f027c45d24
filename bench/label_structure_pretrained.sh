#!/usr/bin/env bash
# The label-structure regulariser on a pretrained start (issue 16: "it composes"): the
# original's released mobilenetv2_dm05_coco_voc_trainaug imported, fine-tuned on
# coco128-voc train (65 photos) with and without the frozen label decoder (CE, weight
# 0.5), the same schedule and seed; the label autoencoder (variant 128) trained on the
# train label maps only. Both evaluated on the 32 val photos (plain model; the decoder
# path's own mIoU too). BatchNorm stays frozen: the TFLite weights carry it folded.
#   bash bench/label_structure_pretrained.sh WORKDIR [STEPS] [AE_STEPS]
set -euo pipefail
W=${1:?usage: bash bench/label_structure_pretrained.sh WORKDIR [STEPS] [AE_STEPS]}
STEPS=${2:-300}
AE_STEPS=${3:-800}
source "$(dirname "$0")/coco128.sh"
run $PY -m tools.train_label_autoencoder --train_logdir="$W/ae128" --dataset=pascal_voc_seg \
  --dataset_dir="$W/coco" --train_split=train --eval_split=val --variant=128 \
  --train_crop_size=128,128 --training_number_of_steps="$AE_STEPS" --log_every_n_steps=100
run $PY -m tools.import_weights --source="$TFLITE" \
  --model_variant=deeplabv3_mobilenetv2_dm05 --output_dir="$W/import"
for arm in baseline decoder; do
  extra=()
  [ $arm = decoder ] && extra=(--label_decoder="$W/ae128" --label_decoder_weight=0.5)
  run $PY -m tools.train --model_variant=deeplabv3_mobilenetv2_dm05 --dataset=pascal_voc_seg \
    --dataset_dir="$W/coco" --train_split=train --train_logdir="$W/$arm" \
    --tf_initial_checkpoint="$W/import" --fine_tune_batch_norm=false \
    --train_crop_size=257,257 --train_batch_size=4 --training_number_of_steps="$STEPS" \
    --optimizer=adam --base_learning_rate=0.0001 --loss_weighting=fixed \
    --save_interval_steps="$STEPS" --save_summaries_steps=50 --seed=0 "${extra[@]}"
  evflags=()
  [ $arm = decoder ] && evflags=(--label_decoder_path_miou)
  run $PY -m tools.eval --checkpoint_dir="$W/$arm" --dataset_dir="$W/coco" --eval_split=val \
    --evidence_modes=none --eval_logdir="$W/$arm/eval" "${evflags[@]}"
done
run $PY -m tools.eval --checkpoint_dir="$W/import" --dataset_dir="$W/coco" --eval_split=val \
  --evidence_modes=none --eval_logdir="$W/import/eval"
