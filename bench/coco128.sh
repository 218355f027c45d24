# Sourced by the coco128-voc bench scripts (after W is set): PY, SHARED, TFLITE, `run`
# (echo and log each command to $W/log.txt) and the coco128-voc shards in $W/coco.
PY=${PY:-.venv/bin/python}
SHARED=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared
TFLITE="$SHARED/models/deeplabv3_mnv2_dm05_pascal_257.tflite"
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$W"
run() { echo "\$ $*" | tee -a "$W/log.txt"; "$@" 2>&1 | tee -a "$W/log.txt"; }
[ -f "$W/coco/done" ] || { run $PY -m tools.build_voc2012_data \
  --image_folder="$SHARED/data/coco128-voc/JPEGImages" \
  --semantic_segmentation_folder="$SHARED/data/coco128-voc/SegmentationClass" \
  --list_folder="$SHARED/data/coco128-voc/ImageSets/Segmentation" --dataset=coco128_voc \
  --output_dir="$W/coco" && touch "$W/coco/done"; }
