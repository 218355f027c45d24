#!/usr/bin/env bash
# The seed's evidence table on real photos from a released model with tags pooled from
# its own segmentation (issue 27, BENCHMARKS 19): nothing trained, so every coco128-voc
# photo is both tuned on and scored, never at once (2-fold cross-fitting over all 97),
# single scale and multi-scale + flip, with paired bootstrap intervals against DL-MT
# and DL-MT-Pr. The search maximises the pruned rows (--objective=pruned).
#   [MAX_CANDIDATES=8] bash bench/real_photos_seg_tags.sh WORKDIR [RELEASED_TFLITE]
set -euo pipefail
W=${1:?usage: bash bench/real_photos_seg_tags.sh WORKDIR [RELEASED_TFLITE]}
source "$(dirname "$0")/coco128.sh"
SRC=${2:-$TFLITE}
import_pooled "$SRC"
run $PY -m tools.tune_evidence --checkpoint_dir="$W/import" --dataset_dir="$W/coco" \
  --tune_split=trainval --folds=2 --objective=pruned --kinds=l2,es \
  --learning_rates=0.001,0.003,0.01 --evidence_learning_rate=0.003 --evidence_alpha=0 \
  --max_candidates=${MAX_CANDIDATES:-8} --eval_scales=0.5,0.75,1.0,1.25,1.5,1.75 --add_flipped_images
