"""IQ_DASK_ADDRESS / --dask-address: a Dask scheduler address, checked at start-up with one line naming
the variable; the epoch cut of a backfill's slot spec."""
from __future__ import annotations

from pathlib import Path

import pytest

from iq_etl.errors import SettingsError
from iq_etl.settings import check_dask_address, load_settings


def test_dask_address_from_the_environment(tmp_path: Path):
    s = load_settings({"IQ_DASK_ADDRESS": "tcp://10.0.0.5:8786"}, dotenv=tmp_path / "none")
    assert s.dask_address == "tcp://10.0.0.5:8786"
    assert load_settings({}, dotenv=tmp_path / "none").dask_address is None


@pytest.mark.parametrize("bad", ["10.0.0.5:8786", "http://host:8786", "tcp://host", "tcp://host:0",
                                 "tcp://host:99999", "tcp://ho st:8786"])
def test_a_malformed_dask_address_is_refused_naming_the_variable(bad, tmp_path: Path):
    with pytest.raises(SettingsError, match="IQ_DASK_ADDRESS"):
        load_settings({"IQ_DASK_ADDRESS": bad}, dotenv=tmp_path / "none")
    with pytest.raises(SettingsError, match="--dask-address"):
        check_dask_address(bad)


def test_tls_and_hostnames_are_accepted():
    assert check_dask_address("tls://scheduler.internal:8786") == "tls://scheduler.internal:8786"
