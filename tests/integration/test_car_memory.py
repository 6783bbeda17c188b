"""Peak memory of a scan stays flat as the file grows: a CAR 10x larger must not need more memory
(the reader streams through a fixed buffer and keeps one slot at a time)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

_PROBE = r"""
import json, resource, sys
from iq_etl.ingest.sources.car.source import CarSource
path, first, last, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keys = None if mode == "all" else [bytes.fromhex(mode)]
src = CarSource(path, wanted_keys=keys, read_size=1 << 20)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
seen = kept = 0
for block in src.iter_blocks(first, last):
    seen += block.transactions_seen
    kept += len(block.transactions)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "seen": seen, "kept": kept}))
"""


def _peak(chain, mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, str(chain.car_path), str(chain.first_slot),
                          str(chain.last_slot), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    small = build_synthetic_car(tmp_path_factory.mktemp("small"), 4_000, epoch=8, tx_per_slot=200)
    large = build_synthetic_car(tmp_path_factory.mktemp("large"), 40_000, epoch=8, tx_per_slot=200)
    return small, large


@pytest.mark.parametrize("mode", ["filtered", "all"])
def test_peak_memory_is_flat_for_a_10x_larger_file(chains, mode):
    small, large = chains
    assert large.car_path.stat().st_size > 9 * small.car_path.stat().st_size
    key = "all" if mode == "all" else PROGRAM_KEY.hex()
    s, l = _peak(small, key), _peak(large, key)
    assert l["seen"] == 40_000 and s["seen"] == 4_000
    file_kib = large.car_path.stat().st_size // 1024
    # flat: the larger scan's peak is within 20% of the small one's and grows by far less than the file
    assert l["peak_kib"] <= 1.2 * s["peak_kib"], (s, l)
    assert l["peak_kib"] - s["peak_kib"] < file_kib // 4, (s, l, file_kib)
