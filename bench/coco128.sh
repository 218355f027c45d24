# Sourced by the coco128-voc bench scripts (after W is set): PY, ASSETS, TFLITE, `run`
# (echo and log each command to $W/log.txt) and the coco128-voc shards in $W/coco. The
# photos and the two releases ship with the repository (deeplab_ext/assets/NOTICE.md).
PY=${PY:-.venv/bin/python}
ASSETS=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/deeplab_ext/assets
TFLITE="$ASSETS/released-weights/deeplabv3_mnv2_dm05_pascal_257.tflite"
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$W"
run() { echo "\$ $*" | tee -a "$W/log.txt"; "$@" 2>&1 | tee -a "$W/log.txt"; }
[ -f "$W/coco/done" ] || { run $PY -m tools.build_voc2012_data \
  --image_folder="$ASSETS/real-data/coco128-voc/JPEGImages" \
  --semantic_segmentation_folder="$ASSETS/real-data/coco128-voc/SegmentationClass" \
  --list_folder="$ASSETS/real-data/coco128-voc/ImageSets/Segmentation" --dataset=coco128_voc \
  --output_dir="$W/coco" && touch "$W/coco/done"; }
# import_pooled SRC: the release SRC (a name or a file) in $W/import, tags pooled from its
# segmentation (once).
import_pooled() { [ -f "$W/import/model_config.json" ] || run $PY -m tools.import_weights \
  --source="$1" --tag_head=segmentation --output_dir="$W/import"; }
