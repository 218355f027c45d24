"""`make demo DEMO_ARGS=--data=<VOC folder>` end to end on a tiny budget (its own file:
pytest-xdist runs files on different workers)."""

from __future__ import annotations

import json

from tests.conftest import DM05, run_tool


def test_demo_dataset_override_voc_folder(tmp_path, real_data):
    """`make demo DEMO_ARGS="--data=<VOC folder> --weights=NAME --train_groups=tag_head"`:
    converts, starts from the original's released model by name (its new tag head trained
    alone), evaluates full-size real photos."""
    work = tmp_path / "demo_voc"
    proc = run_tool(
        "demo", f"--workdir={work}", f"--data={real_data / 'coco128-voc'}", "--train_steps=4",
        "--train_batch_size=2", "--model_variant=deeplabv3_mobilenetv2_dm05_mt",
        "--weights=mobilenetv2_dm05_coco_voc_trainaug",  # by name, imported once
        "--train_groups=tag_head", "--num_tune=0", "--report_photos=2",
        "--max_eval_images=3", "--evidence_steps=1", "--evidence_modes=none,prune",
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert results["dataset"] == "pascal_voc_seg" and results["num_images"] == 3
    assert "loaded 272 variables" in proc.stdout and "froze" in proc.stdout
    # The name was resolved (shipped file) and imported once into the workdir, in the
    # release's own layout; the training started from that import.
    release = json.loads((work / "release" / "model_config.json").read_text())
    assert release["imported"]["released_name"] == "mobilenetv2_dm05_coco_voc_trainaug"
    assert "Train deeplabv3_mobilenetv2_dm05_mt from mobilenetv2_dm05_coco_voc_trainaug" \
        in proc.stdout
    # The released model sees these photos (from scratch the demo learns background only).
    assert results["modes"]["none"]["miou"] > 0.2, results["modes"]["none"]["miou"]
    # Full-size photos of different sizes: every prediction saved at its photo's size.
    for row in results["per_image"]:
        assert (work / "eval" / "predictions" / "none" / f"{row['name']}.png").is_file()
    assert (work / "report.html").is_file()


def _run_demo(work, *flags):
    proc = run_tool("demo", f"--workdir={work}", *flags, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    longest = max((proc.stdout + proc.stderr).splitlines(), key=len)
    assert len(longest) <= 500, longest[:2000]
    return proc.stdout


def test_make_demo_is_the_real_photo_job_with_held_out_settings(tmp_path):
    """`make demo` as shipped, on fewer val photos: the shipped release imported by name
    with tags pooled from its segmentation, the table's refit settings (tuned on the
    shipped train photos, not on val) applied without tuning again, the evidence table
    with intervals, the export, a served prediction and a report whose pictures come first."""
    from deeplab_ext.weights import get_entry

    work = tmp_path / "demo"
    out = _run_demo(work, "--max_eval_images=4", "--report_photos=2")
    assert "nothing to train" in out and "Training " not in out and "Tuning" not in out
    assert "released-weights table" in out
    tuned = json.loads((work / "model" / "evidence_tuned.json").read_text())
    recorded = get_entry("mobilenetv2_dm05_coco_voc_trainaug").files[0].evidence
    assert tuned["tune_split"] == recorded["tuned_on"]["split"] == "train"
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert list(results["modes"]) == ["none", "prune", "bp_l2", "bp_l2_prune"]
    assert results["split"] == "val" and results["num_images"] == 4
    for kind, entry in tuned["kinds"].items():  # the recorded settings are what refitted
        assert results["evidence_by_kind"][kind] == entry["evidence"]
    assert "vs" in results["modes"]["bp_l2_prune"]  # paired intervals
    page = (work / "report.html").read_text()
    # The pictures first, then the table; each photo with its tags and per-photo change.
    assert page.index("The photos the evidence changed most") < page.index("<table>")
    assert page.count('<figure class="wide">') == 2 and "per-photo mIoU" in page
    assert "Held out: the refit settings were tuned for the pruned row on" in page
    assert '"pruned": true' in out  # tools.predict served the export's choice
    meta = json.loads((work / "export" / "assets" / "deeplab_export.json").read_text())
    assert meta["evidence_tuned_on"]["tune_split"] == "train"  # the provenance travels
    for line in ("tensorboard --logdir", "python -m tools.predict "
                 "--checkpoint_dir=mobilenetv2_dm05_coco_voc_trainaug"):
        assert line in out


def test_demo_from_a_released_file_tunes_on_train(tmp_path, real_data):
    """`make demo DEMO_ARGS="--weights=<released file>"`: the table has no settings for a
    file given by path, so they are tuned for pruned rows on the train photos, then val is
    scored, exported and served (pruned after the refit); a rerun reuses the import."""
    work = tmp_path / "demo_pooled"
    out = _run_demo(work, f"--weights={DM05}", "--num_tune=3", "--tune_candidates=2",
                    "--max_eval_images=3")
    assert "nothing to train" in out and "Training " not in out
    assert "is the layout of --model_variant=deeplabv3_mobilenetv2_dm05" in out
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert list(results["modes"]) == ["none", "prune", "bp_l2", "bp_l2_prune"]
    assert results["tags"]["f1"] > 0.3  # tags pooled from the released segmentation
    tuned = json.loads((work / "model" / "evidence_tuned.json").read_text())
    assert tuned["objective"] == "pruned" and list(tuned["kinds"]) == ["l2"]
    assert tuned["tune_split"] == "train" and tuned["num_images"] == 3
    meta = json.loads((work / "export" / "assets" / "deeplab_export.json").read_text())
    assert meta["evidence_prune"] is True and meta["model"]["tag_head"] == "segmentation"
    assert '"pruned": true' in out
    assert (work / "report.html").is_file()


def test_demo_fine_tunes_a_release_on_a_folder_with_other_classes(tmp_path, real_data):
    """`make demo DEMO_ARGS="--data=<CamVid folder> --weights=NAME"`: the VOC release
    fine-tuned on CamVid's 11 classes (a new classifier, the trunk loaded, BatchNorm
    frozen), its tags pooled from its segmentation, the evidence table on val."""
    work = tmp_path / "demo_ft"
    out = _run_demo(work, f"--data={real_data / 'camvid-sample'}",
                    "--weights=mobilenetv2_dm05_coco_voc_trainaug", "--train_steps=2",
                    "--train_batch_size=2", "--crop_size=129", "--num_tune=2",
                    "--tune_candidates=2", "--evidence_steps=1")
    assert "skipped 2" in out and "last layer" not in out  # the classifier: other classes
    assert "froze" in out and "pooled from its segmentation" in out
    results = json.loads((work / "eval" / "eval_results.json").read_text())
    assert results["dataset"] == "camvid" and results["num_images"] == 2
    meta = json.loads((work / "train" / "model_config.json").read_text())
    assert meta["model"]["name"] == "deeplabv3_mobilenetv2_dm05"
    assert (work / "report.html").is_file()
