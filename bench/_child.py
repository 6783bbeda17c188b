"""Entry point of a measurement's child process: `python bench/_child.py module:function '{json}'`.

Calls the function with the JSON keyword arguments and prints its dict result as one
`BENCH-RESULT {json}` line, with the process's peak RSS added (see common.run_child)."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULT_MARK, peak_rss_mb  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2 or ":" not in argv[0]:
        print("usage: _child.py module:function '{json kwargs}'", file=sys.stderr)
        return 2
    module, function = argv[0].split(":", 1)
    result = getattr(importlib.import_module(module), function)(**json.loads(argv[1]))
    result["peak_rss_mb"] = peak_rss_mb()
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
