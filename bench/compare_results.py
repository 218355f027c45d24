"""Two results files (``eval_results.json``, ``evidence_tuned.json``) compared key for key,
floats with ``==``, what differs between two runs by nature left out (seconds, the run's
own paths): the "same numbers" check of a refactoring (BENCHMARKS.md 21).

    python -m bench.compare_results BEFORE.json AFTER.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

IGNORED = ("seconds", "dataset_dir", "checkpoint", "checkpoint_dir", "eval_logdir")


def differences(a: Any, b: Any, path: str = "", roots: tuple[str, ...] = ()) -> list[str]:
    """Every place ``a`` and ``b`` differ; strings under one of ``roots`` (the two runs'
    folders) are taken as equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in IGNORED or "seconds" in k:
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'the second' if k in b else 'the first'}")
            else:
                out += differences(a[k], b[k], f"{path}/{k}", roots)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in
                differences(x, y, f"{path}[{i}]", roots)]
    if a != b and not (isinstance(a, str) and any(r in a for r in roots)):
        return [f"{path}: {a!r} vs {b!r}"]
    return []


def main(argv: list[str]) -> int:
    first, second = (json.load(open(p)) for p in argv[:2])
    found = differences(first, second, roots=tuple(argv[2:]) or ("/work/", "/tmp/"))
    print(f"{len(found)} differences")
    print("\n".join(found[:50]))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
