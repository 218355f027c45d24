#!/usr/bin/env bash
# Evidence with wrong tags (issue 43, BENCHMARKS.md 27): a shipped release imported by
# name (the released-weights table's refit settings, tuned on the 65 train photos), the
# soft setting tuned on the train photos with one true tag dropped per photo, then the
# table on the 32 val photos with exact tags, one dropped, one false one added, and both.
#   bash bench/noisy_tags.sh WORKDIR [RELEASE_NAME] [OUTPUT_JSON]
set -euo pipefail
W=${1:?usage: bash bench/noisy_tags.sh WORKDIR [RELEASE_NAME] [OUTPUT_JSON]}
NAME=${2:-mobilenetv2_dm05_coco_voc_trainaug}
OUT=${3:-bench/results/noisy_tags_$NAME.json}
source "$(dirname "$0")/coco128.sh"
import_pooled "$NAME"
run $PY -m bench.bench_noisy_tags --checkpoint_dir="$W/import" --dataset_dir="$W/coco" \
  --workdir="$W" --output="$OUT"
