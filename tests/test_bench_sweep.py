"""The sweep table that BENCHMARKS quotes: paired differences and extra fields."""

from __future__ import annotations

import json

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
