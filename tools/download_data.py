"""Download a dataset's official archive, verify it, unpack it and build TFRecords.

    python -m tools.download_data --dataset=pascal_voc_seg \\
        --download_dir=data/downloads --output_dir=data/pascal_voc_seg/tfrecord

Re-running resumes an interrupted download and reuses verified archives.
Mirrors or your own data in the same layout: `--url=... --sha256=...`.
Without internet: put the archive into --download_dir yourself and re-run.
"""

from __future__ import annotations

from absl import app, flags, logging

from deeplab_ext.data import download

from . import common_flags

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", "pascal_voc_seg", sorted(download.SOURCES), "Dataset to fetch.")
flags.DEFINE_string("download_dir", None, "Where the archive and its unpacked copy go.")
flags.DEFINE_string(
    "output_dir",
    None,
    "Where the TFRecord shards go (the --dataset_dir of "
    "training). Leave empty to only download and unpack.",
)
flags.DEFINE_string("url", None, "Override the archive URL (mirror or own data, same layout).")
flags.DEFINE_string(
    "sha256",
    None,
    "Expected sha256 of the archive (overrides the built-in "
    "one; required to verify a custom --url).",
)
flags.DEFINE_integer("max_retries", 5, "Resume attempts after an interrupted transfer.")
flags.DEFINE_float("timeout", 60.0, "Socket timeout in seconds.")
flags.DEFINE_bool("list", False, "List the known datasets with URL and checksum, then exit.")


class _Progress:
    """Logs every ~5% so a 2 GB download shows life without flooding the terminal."""

    def __init__(self) -> None:
        self._last = -1

    def __call__(self, done: int, total: int | None) -> None:
        if total:
            pct = int(100 * done / total) // 5 * 5
            if pct != self._last:
                self._last = pct
                logging.info("downloaded %d%% (%.1f / %.1f MB)", pct, done / 1e6, total / 1e6)
        elif done // (50 << 20) != self._last:
            self._last = done // (50 << 20)
            logging.info("downloaded %.1f MB", done / 1e6)


def main() -> int:
    if FLAGS.list:
        for name, src in sorted(download.SOURCES.items()):
            print(f"{name}: {src.url}\n  sha256={src.sha256 or '(not pinned)'}  {src.note}")
        return 0
    if not FLAGS.download_dir:
        raise app.UsageError("--download_dir is required (where the archive is stored).")
    result = download.download_and_convert(
        FLAGS.dataset,
        FLAGS.download_dir,
        FLAGS.output_dir or None,
        url=FLAGS.url,
        sha256=FLAGS.sha256,
        max_retries=FLAGS.max_retries,
        timeout=FLAGS.timeout,
        progress=_Progress(),
    )
    print(f"archive:   {result.archive}  sha256={result.sha256}")
    print(f"data root: {result.data_root}")
    if result.output_dir is not None:
        print(f"tfrecords: {result.output_dir}")
    return 0


def cli() -> None:
    """The console script (pyproject.toml's [project.scripts])."""
    common_flags.run(main)


if __name__ == "__main__":
    cli()
