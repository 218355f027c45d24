"""The sweep table that BENCHMARKS quotes: paired differences and extra fields."""

from __future__ import annotations

import json

import pytest

from bench.sweep import _summarize, summary


def _rows():
    rows = {}
    for arm, mious, paths in (("base", (0.30, 0.26, 0.35), (None, None, None)),
                              ("dec", (0.31, 0.28, 0.35), (0.25, None, 0.27))):
        for seed, (m, p) in enumerate(zip(mious, paths, strict=True)):
            rows[f"{arm}_seed{seed}"] = {"run": f"{arm}_seed{seed}", "arm": arm, "seed": seed,
                                         "miou": m, "path": p}
    return rows


def test_summary_pairs_by_seed_and_averages_fields_over_rows_that_have_them():
    lines = summary(_rows(), ["base", "dec"], fields=["path"]).splitlines()
    assert lines[2].startswith("| base | 3 | 30.33 +- 4.51 |  | |")
    # Paired differences +1, +2, 0 points: mean +1, sd 1, t(2) 4.303 / sqrt(3) = 2.484.
    assert "+1.00 [-1.48, +3.48] (3 seeds)" in lines[3]
    assert lines[3].endswith(" 26.00 +- 1.41 (2) |")


def test_summarize_cli_reads_a_results_file_in_first_seen_order(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(list(_rows().values()))))
    _summarize([str(path), "--baseline=base"])
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| dec | 3 |") and "vs base" in out[0]
    # The baseline's rows in one file, the other arm's in another: one paired table.
    rows = list(_rows().values())
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    _summarize([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--baseline=base"])
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("| base | 3 |") and "+1.00 [-1.48, +3.48] (3 seeds)" in out[3]


def test_segnet_trivial_reference_scores_train_majority_and_mean_box_on_val(monkeypatch):
    """The heads' floor in BENCHMARKS 17: train's most frequent class and train's mean box
    (frames without an object excluded from both), scored on val by hand."""
    import numpy as np

    from bench import bench_segnet_mtan

    data = {
        # Classes: 2 is the majority among frames with an object (-1 = none).
        "train": (np.array([2, 0, 2, -1, -1, -1]),
                  np.array([[1, 0.0, 0.0, 0.5, 0.5], [1, 0.2, 0.2, 0.6, 0.6],
                            [1, 0.1, 0.0, 0.4, 0.5], [0, 0.9, 0.9, 1.0, 1.0],
                            [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])),
        "val": (np.array([2, 1, -1, 2, 0]),
                np.array([[1, 0.1, 0.0666, 0.5, 0.5333], [1, 0.6, 0.6, 1.0, 1.0],
                          [0, 0, 0, 0, 0], [1, 0.1, 0.0666, 0.5, 0.5333],
                          [1, 0.1, 0.0666, 0.3, 0.5333]])),
    }
    monkeypatch.setattr(bench_segnet_mtan, "_targets", lambda shards, split, size: data[split])
    ref = bench_segnet_mtan.trivial_reference("unused", 161)
    assert ref["majority_class"] == 2
    assert ref["class_accuracy"] == 0.5  # val frames with an object: 2, 1, 2, 0
    # Mean of the three train boxes present: [0.1, 0.0667, 0.5, 0.5333].
    np.testing.assert_allclose(ref["mean_train_box"], [0.1, 0.0667, 0.5, 0.5333], atol=1e-4)
    # Val IoUs with that box: ~1, 0 (disjoint), ~1, 0.5 (half its height); mean 0.625.
    assert abs(ref["box_iou"] - 0.625) < 1e-3
    assert ref["val_frames_with_object"] == 4


def test_train_scalars_averages_each_finished_runs_steps_then_over_seeds(tmp_path):
    import tensorflow as tf

    from bench import train_scalars

    def run(name, values, finished=True):
        train = tmp_path / name / "train" / "train"
        with tf.summary.create_file_writer(str(train)).as_default():
            for step, v in enumerate(values):
                tf.summary.scalar("train/network_grad_norm", v, step=50 * step)
        if finished:
            (tmp_path / name / "eval").mkdir()
            (tmp_path / name / "eval" / "eval_results.json").write_text("{}")

    run("edges_seed0", [4.0, 2.0, 1.0, 1.0])  # mean 2, halves 3 and 1
    run("edges_seed1", [2.0, 2.0, 1.0, 3.0])  # mean 2, halves 2 and 2
    run("aux_seed0", [9.0, 9.0], finished=False)  # still training: left out
    means = train_scalars.run_means([tmp_path], "train/network_grad_norm")
    assert set(means) == {"edges"}
    assert means["edges"] == {0: (2.0, 3.0, 1.0), 1: (2.0, 2.0, 2.0)}
    line = train_scalars.table(means, ["edges", "aux"], "t").splitlines()[2]
    assert line == "| edges | 2 | 2.000 +- 0.000 | 2.500 +- 0.707 | 1.500 +- 0.707 |"


def test_delta_m_is_the_sign_corrected_mean_relative_change():
    from bench.common import delta_m

    single = {"miou": 0.50, "f1": 0.80, "depth_err": 0.40}
    better = {"miou": 0.55, "f1": 0.80, "depth_err": 0.30}  # +10 %, 0, +25 % (lower wins)
    sense = {"miou": True, "f1": True, "depth_err": False}
    assert delta_m(better, single, sense) == pytest.approx(100 * (0.10 + 0 + 0.25) / 3)
    assert delta_m(single, single, sense) == 0.0
    with pytest.raises(ValueError, match="metric 'f1' missing"):
        delta_m({"miou": 0.5}, single, {"miou": True, "f1": True})
