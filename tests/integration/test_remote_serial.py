"""What stays serial on a remote warehouse (iq_etl.warehouse.serial): a dbt build, and an export to one
target, one process at a time per server and database; everything else runs side by side. Real
processes holding real file locks (no server needed: the lock is taken before any connection)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from iq_etl.errors import WarehouseBusy
from iq_etl.settings import load_settings
from iq_etl.warehouse.serial import DBT_BUILD, export_section, patience, section_path, serial

HOLDER = textwrap.dedent("""
    import sys, time
    from iq_etl.settings import load_settings
    from iq_etl.warehouse.serial import serial
    settings = load_settings({"IQ_CLICKHOUSE_DSN": sys.argv[1], "IQ_ETL_HOME": sys.argv[2]}, dotenv=None)
    with serial(settings, sys.argv[3]):
        print("holding", flush=True)
        time.sleep(float(sys.argv[4]))
    print("released", flush=True)
""")


def _settings(tmp_path, dsn="http://u:s3cret@127.0.0.1:8123/iq", **extra):
    return load_settings({"IQ_CLICKHOUSE_DSN": dsn, "IQ_ETL_HOME": str(tmp_path / "home"), **extra},
                         dotenv=tmp_path / "no.env")


def _hold(tmp_path, section: str, seconds: float, dsn="http://u:s3cret@127.0.0.1:8123/iq") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, dsn, str(tmp_path / "home"), section, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_held_section_refuses_a_second_process_at_once_naming_it(tmp_path):
    target = "http://127.0.0.1:9/api/uploads"
    holder = _hold(tmp_path, export_section(target), 60)
    try:
        settings = _settings(tmp_path)
        with pytest.raises(WarehouseBusy) as busy:
            with serial(settings, export_section(target)):
                pass
        text = str(busy.value)
        assert f"pid {holder.pid}" in text and "IQ_WAREHOUSE_LOCK_WAIT" in text and "s3cret" not in text
        # another target, the dbt build, another database or server: not held
        for other_settings, section in ((settings, export_section("file:///tmp/elsewhere")), (settings, DBT_BUILD),
                                        (_settings(tmp_path, "http://u:x@127.0.0.1:8123/other"),
                                         export_section(target)),
                                        (_settings(tmp_path, "http://u:x@127.0.0.2:8123/iq"), export_section(target))):
            with serial(other_settings, section):
                pass
        # the password is not part of the key: the same warehouse under another user's password is held
        assert section_path(_settings(tmp_path, "http://u:other@127.0.0.1:8123/iq"), DBT_BUILD) == \
            section_path(settings, DBT_BUILD)
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_process_gets_its_turn_when_the_holder_ends(tmp_path):
    holder = _hold(tmp_path, DBT_BUILD, 1)
    try:
        with patience(120), serial(_settings(tmp_path), DBT_BUILD):
            assert holder.stdout.readline().strip() == "released"   # it was held when we asked: we waited
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = _hold(tmp_path, DBT_BUILD, 60)
    holder.kill()
    holder.wait()
    with serial(_settings(tmp_path), DBT_BUILD):
        pass


def test_the_embedded_warehouse_takes_no_section_lock(tmp_path):
    settings = _settings(tmp_path, f"chdb://{tmp_path / 'wh'}")
    with serial(settings, DBT_BUILD), serial(settings, export_section("x")):
        pass
    assert not (tmp_path / "home" / "locks").exists()
