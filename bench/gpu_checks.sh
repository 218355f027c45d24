#!/usr/bin/env bash
# GPU and mixed-precision checks, on a machine with an NVIDIA GPU (after `make venv`,
# which installs tensorflow[and-cuda] there), in one go:
#   bash bench/gpu_checks.sh [bench|tests|all|finetune|noisy] (PY=python to use another interpreter)
#   bash bench/gpu_checks.sh --tiny                 (the same checks CPU-sized: the suite
#                                                    runs this, so the script is known to work)
# gpu:   bench_gpu: Xception-65 DeepLabv3+ 513 train step in float32 / mixed_float16 /
#        mixed_bfloat16 at the largest batch that fits, OS8 vs OS16 memory, the refit
#        step per image, the imported released model's inference;
# bench: bench_refit_speed at 513 (refit step / train step, latent vs weights) in
#        float32, mixed_float16, and mixed_float16 with the refit loop XLA-compiled;
# tests: the refitter's exactness, steps=0, mixed-precision and jit tests, the
#        SavedModel round trip and the loss-scaled train step, now on the GPU.
# finetune (not in all: hours on 2 cores, needs the full CamVid split in $CAMVID_DIR):
#        issue 44 on the GPU, 3 seeds per arm: the width-1.0 VOC release vs scratch
#        (bench_finetune), then the seed experiments from that release (--from_release):
#        label-map decoder, auxiliary modules / deep supervision, UW vs EW, the methods.
#        RELEASE=mobilenetv2_dm05_coco_voc_trainaug starts them from the dm0.5 release
#        instead (twice as fast; what BENCHMARKS 29 ran on 2 cores).
# noisy (not in all: hours on 2 cores; needs nothing outside the clone): issue 43's
#        noisy-tag table for the width-1.0 VOC release (bench/noisy_tags.sh, BENCHMARKS 27),
#        written to bench/results/noisy_tags_mobilenetv2_coco_voc_trainaug.json.
set -u
PY=${PY:-.venv/bin/python}
what=${1:-all}
case "$what" in
  bench|tests|all|finetune|noisy|--tiny) ;;
  *) echo "error: unknown check '$what'; use bench, tests, all, finetune, noisy or --tiny" >&2
     exit 2 ;;
esac
if [ "$what" = --tiny ]; then
  exec $PY -m bench.bench_gpu --tiny
fi
$PY - <<'PYEOF'
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TF", tf.__version__, "GPUs:", gpus, flush=True)
if gpus:
    print(tf.config.experimental.get_device_details(gpus[0]))
    with tf.device("/GPU:0"):
        print("matmul ok:", float(tf.reduce_sum(tf.matmul(tf.ones((64, 64)), tf.ones((64, 64))))))
PYEOF
if [ "$what" = bench ] || [ "$what" = all ]; then
  echo "== bench_gpu"
  $PY -m bench.bench_gpu
  for args in "" "--precision mixed_float16"; do
    echo "== bench_refit_speed --size 513 $args"
    $PY -m bench.bench_refit_speed --size 513 --rounds 5 --steps 5 --compare_rounds 3 $args
  done
  # The XLA-compiled while_loop did not finish within 9 min on an H100 (2026-11-24),
  # so it runs last, with fewer rounds and a time limit (JIT_TIMEOUT seconds).
  echo "== bench_refit_speed --size 513 --precision mixed_float16 --jit_compile"
  timeout "${JIT_TIMEOUT:-900}" $PY -m bench.bench_refit_speed --size 513 --rounds 2 \
    --steps 5 --compare_rounds 1 --precision mixed_float16 --jit_compile \
    || echo "jit_compile run did not finish (rc $?)"
fi
if [ "$what" = finetune ]; then
  C=${CAMVID_DIR:?set CAMVID_DIR to the SegNet CamVid folder (train.txt, train/, ...)}
  W=${WORKDIR:-/tmp/exp44}
  R=${RELEASE:-mobilenetv2_coco_voc_trainaug}
  $PY -m bench.bench_finetune --workdir="$W/finetune" --camvid_dir="$C"
  for b in bench_label_structure bench_self_supervised bench_mtl_methods; do
    $PY -m bench.$b --workdir="$W/${b}_$R" --camvid_dir="$C" --from_release=$R \
      --base_learning_rate=1e-3 --train_steps=1200
  done
fi
if [ "$what" = noisy ]; then
  bash "$(dirname "$0")/noisy_tags.sh" "${WORKDIR:-/tmp/exp43}/mnv2" mobilenetv2_coco_voc_trainaug
fi
if [ "$what" = tests ] || [ "$what" = all ]; then
  $PY -m pytest -q -p no:cacheprovider tests/test_evidence.py tests/test_export.py \
    tests/test_mtl_model.py -x
fi
