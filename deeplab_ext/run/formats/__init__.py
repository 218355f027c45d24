"""Export formats, one file per format: what ``tools.export_model --format=NAME`` writes
into an export directory, and how ``tools.predict`` / ``tools.eval --model=FILE`` load it
back.

Every module of this package is discovered (``base.FORMATS``) and registers its format
(:func:`register_format`): adding a format is adding a file (or, outside the tree,
registering an :class:`ExportFormat` from a module of one's own). ``--format``'s names
and help, the files an earlier export may hold, the formats that need a fixed input size
or take ``--quantize`` are all read from the registry.
"""

from __future__ import annotations

from deeplab_ext.run.formats.base import (
    FORMATS,
    METADATA_FILE,
    ExportFormat,
    ExportJob,
    Runtime,
    file_formats,
    format_for_file,
    format_help,
    model_files_help,
    open_runtime,
    register_format,
)

__all__ = ["FORMATS", "METADATA_FILE", "ExportFormat", "ExportJob", "Runtime", "file_formats",
           "format_for_file", "format_help", "model_files_help", "open_runtime",
           "register_format"]
