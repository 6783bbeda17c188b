"""Which section walker the CAR reader uses: `IQ_SCANNER=python|native|auto` (default `auto`).

- `python`: the pure-Python walk in reader.py (`_SlotWalk.run`);
- `native`: the compiled walker `_walker` (C, built by `pip install` when a compiler is there) runs
  the hot loop; the Python walk still handles every section it stops at (candidates, blocks, frames,
  anomalies), so both give the same candidates, rows and errors. It is used when the key
  pre-filter is on with few keys and CIDs are not verified (what ingest does); other scans use the
  Python walk. Asking for `native` when it was not built is an error;
- `auto`: `native` when it was built, else `python`.
"""
from __future__ import annotations

from typing import Callable

from iq_etl.errors import SettingsError

SCANNERS = ("auto", "python", "native")
ENV = "IQ_SCANNER"

try:
    from iq_etl.ingest.sources.car._walker import walk as _native_walk
except ImportError as exc:  # not built (no compiler at install time) or built for another Python
    _native_walk = None
    NATIVE_MISSING: str | None = str(exc)
else:
    NATIVE_MISSING = None


def native_available() -> bool:
    return _native_walk is not None


def native_walk() -> Callable | None:
    return _native_walk


def resolve(requested: str | None = None) -> str:
    """'python' or 'native' for a requested scanner (None: the `IQ_SCANNER` setting, from the
    environment over `.env`, read by iq_etl.settings like every setting)."""
    from_env = requested is None
    if from_env:
        from iq_etl.settings import load_settings

        value = load_settings().scanner
    else:
        value = (requested or "").strip().lower() or "auto"
    if value not in SCANNERS:
        where = f"{ENV}={value!r}" if from_env else f"scanner {value!r}"
        raise SettingsError(f"{where}: expected one of {', '.join(SCANNERS)}")
    if value == "auto":
        return "native" if _native_walk is not None else "python"
    if value == "native" and _native_walk is None:
        where = f"{ENV}=native" if from_env else "scanner 'native'"
        raise SettingsError(f"{where}: the compiled CAR walker is not built ({NATIVE_MISSING}); reinstall with a C "
                            "compiler and the Python headers (`pip install -e .`), or use python/auto")
    return value
