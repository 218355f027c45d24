"""The README's second chain of snippets (converters, imports, model info, the label
structure example): see tests/test_readme.py."""

from __future__ import annotations

from tests.test_readme import run_chain, tools_of


def test_readme_data_and_import_snippets_run(tmp_path, real_data):
    from tests.test_cityscapes import _write_layout

    _write_layout(tmp_path / "cityscapes")  # the README's /tmp/cityscapes: a tiny layout
    ran = run_chain("data", tmp_path)
    assert {"tools.model_info", "tools.build_voc2012_data", "tools.build_camvid_data",
            "tools.import_weights", "tools.eval", "tools.train_label_autoencoder",
            "tools.train", "tools.build_cityscapes_data"} <= tools_of(ran)
    scene = [out for c, out in ran if "/tmp/scene_run" in c and "tools.eval" in c][0]
    assert "instance: offset_error_px" in scene and "depth: mae" in scene
    info = [out for c, out in ran if "tools.model_info" in c][0]
    assert '"macs"' in info and '"params"' in info
    assert (tmp_path / "mnv2_seg" / "model_config.json").is_file()
