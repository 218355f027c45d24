#!/usr/bin/env bash
# The refit settings the released-weights table records for a shipped release
# (deeplab_ext/weights/released.json, each file's "evidence"): tags pooled from the
# release's segmentation, the L2 refit searched for the pruned row (DL-BP-L2-Pr against
# DL-MT-Pr) on coco128-voc's 65 *train* photos. `make demo` scores the 32 *val* photos
# with them, so no photo it scores chose its settings.
#   [MAX_CANDIDATES=8] bash bench/tune_released.sh WORKDIR [RELEASED_TFLITE]
set -euo pipefail
W=${1:?usage: bash bench/tune_released.sh WORKDIR [RELEASED_TFLITE]}
source "$(dirname "$0")/coco128.sh"
SRC=${2:-$TFLITE}
import_pooled "$SRC"
run $PY -m tools.tune_evidence --checkpoint_dir="$W/import" --dataset_dir="$W/coco" \
  --tune_split=train --objective=pruned --kinds=l2 \
  --learning_rates=0.001,0.003,0.01 --evidence_learning_rate=0.003 --evidence_alpha=0 \
  --max_candidates=${MAX_CANDIDATES:-8}
