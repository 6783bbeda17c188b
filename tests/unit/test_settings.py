"""Settings: seed-compatible names, defaults, and clear errors naming the variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from iq_etl.errors import SettingsError
from iq_etl.settings import (
    DEFAULT_DSN,
    DEFAULT_PROGRAM_IDS,
    G3_PROGRAM_ID,
    load_settings,
    redact_dsn,
)


def load(env, tmp_path, dotenv_text=None):
    dotenv = tmp_path / ".env"
    if dotenv_text is not None:
        dotenv.write_text(dotenv_text)
    return load_settings(env, dotenv=dotenv)


def test_defaults(tmp_path):
    s = load({}, tmp_path)
    assert DEFAULT_DSN == "chdb://<IQ_ETL_HOME>/warehouse"
    assert s.clickhouse_dsn == f"chdb://{Path('~/.iq-etl').expanduser().resolve()}/warehouse" and s.embedded
    assert s.program_ids == DEFAULT_PROGRAM_IDS and len(DEFAULT_PROGRAM_IDS) == 3
    assert s.reader_mode == "auto"
    assert s.reader_url == "https://api.iqlabs.xyz/api/v2/inscribe/ingest"
    assert s.threads == 1 and s.session_pdas == ()
    assert not s.rpc_url_configured


def test_seed_names(tmp_path):
    pda = "11111111111111111111111111111111"
    s = load({
        "IQ_PROGRAM_ID": f"{G3_PROGRAM_ID}, {G3_PROGRAM_ID}",
        "IQ_SESSION_PDA_LIST": pda,
        "IQ_READER_MODE": "Legacy",
        "IQ_READER_BASE_URL": "http://127.0.0.1:9/",
        "IQ_READER_ENDPOINT_PATH": "ingest",
        "JETSTREAMER_CLICKHOUSE_MODE": "remote",
        "JETSTREAMER_CLICKHOUSE_DSN": "http://default:pw@ch.example:8123/iq",
        "JETSTREAMER_THREADS": "4",
        "SOLANA_RPC_URL": "http://127.0.0.1:8899",
    }, tmp_path)
    assert s.program_ids == (G3_PROGRAM_ID,)  # duplicates folded, order kept
    assert s.session_pdas == (pda,)
    assert s.reader_mode == "legacy"
    assert s.reader_url == "http://127.0.0.1:9/ingest"
    assert s.clickhouse_dsn == "http://default:pw@ch.example:8123/iq" and not s.embedded
    assert s.threads == 4
    assert s.rpc_url == "http://127.0.0.1:8899" and s.rpc_url_configured


def test_iq_dsn_wins(tmp_path):
    s = load({"IQ_CLICKHOUSE_DSN": "chdb:///tmp/x", "JETSTREAMER_CLICKHOUSE_MODE": "remote",
              "JETSTREAMER_CLICKHOUSE_DSN": "http://h:8123"}, tmp_path)
    assert s.clickhouse_dsn == "chdb:///tmp/x"


def test_dotenv_read_and_environment_wins(tmp_path):
    s = load({"JETSTREAMER_THREADS": "3"}, tmp_path,
             "# comment\nexport IQ_READER_MODE='pinocchio'\nJETSTREAMER_THREADS=2\n")
    assert s.reader_mode == "pinocchio"
    assert s.threads == 3


@pytest.mark.parametrize("env,name", [
    ({"IQ_PROGRAM_ID": "not-base58-0OIl"}, "IQ_PROGRAM_ID"),
    ({"IQ_PROGRAM_ID": "1111"}, "IQ_PROGRAM_ID"),  # valid base58, not 32 bytes
    ({"IQ_SESSION_PDA_LIST": "abc,def"}, "IQ_SESSION_PDA_LIST"),
    ({"IQ_READER_MODE": "fast"}, "IQ_READER_MODE"),
    ({"JETSTREAMER_CLICKHOUSE_MODE": "cloud"}, "JETSTREAMER_CLICKHOUSE_MODE"),
    ({"JETSTREAMER_CLICKHOUSE_MODE": "remote"}, "JETSTREAMER_CLICKHOUSE_DSN"),
    ({"IQ_CLICKHOUSE_DSN": "postgres://u:p@h/db"}, "IQ_CLICKHOUSE_DSN"),
    ({"IQ_CLICKHOUSE_DSN": "http://u:p@h:notaport/db"}, "IQ_CLICKHOUSE_DSN"),
    ({"IQ_CLICKHOUSE_DSN": "chdb://"}, "IQ_CLICKHOUSE_DSN"),
    ({"JETSTREAMER_THREADS": "two"}, "JETSTREAMER_THREADS"),
    ({"JETSTREAMER_THREADS": "0"}, "JETSTREAMER_THREADS"),
    ({"IQ_READER_BASE_URL": "ftp://x"}, "IQ_READER_BASE_URL"),
    ({"IQ_CLICKHOUSE_CLUSTER": "a;DROP"}, "IQ_CLICKHOUSE_CLUSTER"),
    ({"IQ_LOG_LEVEL": "loud"}, "IQ_LOG_LEVEL"),
])
def test_bad_values_name_the_variable(tmp_path, env, name):
    with pytest.raises(SettingsError) as err:
        load(env, tmp_path)
    assert str(err.value).startswith(name)


def test_bad_dsn_error_hides_password(tmp_path):
    with pytest.raises(SettingsError) as err:
        load({"IQ_CLICKHOUSE_DSN": "postgres://user:hunter2@h/db"}, tmp_path)
    assert "hunter2" not in str(err.value)


def test_redact_dsn():
    assert redact_dsn("https://u:s3cret@h:8443/db?password=x&a=1") == "https://u:***@h:8443/db?password=***&a=1"
    assert redact_dsn("chdb://./.iq-etl/warehouse") == "chdb://./.iq-etl/warehouse"


def test_repr_never_shows_secrets(tmp_path):
    s = load({"IQ_CLICKHOUSE_DSN": "http://u:s3cret@h:8123", "IQ_READER_TOKEN": "tok123"}, tmp_path)
    assert "s3cret" not in repr(s) and "tok123" not in repr(s)


# --- DSN typos never change the target silently (operations issue, item 8) ---------------------

@pytest.mark.parametrize("dsn, says", [
    ("chdb:/x", "write chdb://PATH (two slashes)"),        # used to become a remote server on localhost:8123
    ("chdb:x", "write chdb://PATH (two slashes)"),
    ("clickhouse://host:9000", "clickhouse:// in 'clickhouse://host:9000' is not supported"),
    ("http://host:9000", "port 9000 in 'http://host:9000' is ClickHouse's native protocol"),
    ("https://host:9440", "native protocol"),
    ("http:/host", "has no host; supported: chdb://PATH"),
    ("ftp://host", "unsupported scheme 'ftp'"),
])
def test_dsn_typos_are_refused_with_what_is_supported(dsn, says, tmp_path):
    with pytest.raises(SettingsError, match="IQ_CLICKHOUSE_DSN") as err:
        load({"IQ_CLICKHOUSE_DSN": dsn}, tmp_path)
    assert says in str(err.value)


def test_dsn_errors_hide_passwords(tmp_path):
    with pytest.raises(SettingsError) as err:
        load({"IQ_CLICKHOUSE_DSN": "clickhouse://u:hunter2@host:9000"}, tmp_path)
    assert "hunter2" not in str(err.value)


# --- issue 21: the warehouse is the same whatever the current folder; typos are not ignored --------

def test_the_default_warehouse_does_not_depend_on_the_current_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    seen = set()
    for folder in (tmp_path / "a", tmp_path / "b"):
        folder.mkdir()
        monkeypatch.chdir(folder)
        seen.add(load({"IQ_ETL_HOME": str(home)}, tmp_path).clickhouse_dsn)
    assert seen == {f"chdb://{home.resolve()}/warehouse"}
    monkeypatch.chdir(tmp_path / "a")
    rel = load({"IQ_ETL_HOME": "relhome"}, tmp_path)     # relative: read once, made absolute
    assert rel.home == (tmp_path / "a" / "relhome").resolve() and rel.home.is_absolute()
    explicit = load({"IQ_CLICKHOUSE_DSN": "chdb://./w"}, tmp_path)
    assert explicit.clickhouse_dsn == f"chdb://{(tmp_path / 'a' / 'w').resolve()}"
    assert explicit.warehouse_name == f"embedded chDB at {(tmp_path / 'a' / 'w').resolve()}"
    remote = load({"IQ_CLICKHOUSE_DSN": "http://u:s3cret@ch.example:8123/iq"}, tmp_path)
    assert remote.warehouse_name == "ClickHouse at http://u:***@ch.example:8123/iq"


def test_unknown_names_are_warned_once_with_the_nearest_known_name(tmp_path, caplog):
    import logging

    from iq_etl import settings as st

    st._WARNED_UNKNOWN.discard("IQ_CLICKHOUSE_DNS")
    st._WARNED_UNKNOWN.discard("JETSTREAMER_THREDS")
    with caplog.at_level(logging.WARNING, logger="iq_etl.settings"):
        load({"IQ_CLICKHOUSE_DNS": "chdb:///x"}, tmp_path, "JETSTREAMER_THREDS=2\n")
        load({"IQ_CLICKHOUSE_DNS": "chdb:///x"}, tmp_path, "JETSTREAMER_THREDS=2\n")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings.count("unknown setting IQ_CLICKHOUSE_DNS in the environment is ignored; did you mean "
                          "IQ_CLICKHOUSE_DSN?") == 1
    assert sum("JETSTREAMER_THREDS in " in w and "did you mean JETSTREAMER_THREADS?" in w for w in warnings) == 1


def test_legacy_warehouse_in_the_current_folder_is_pointed_out(tmp_path, monkeypatch, caplog):
    import logging

    from iq_etl import settings as st

    st._WARNED_UNKNOWN.discard("legacy")
    (tmp_path / ".iq-etl" / "warehouse").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="iq_etl.settings"):
        load({}, tmp_path)
    assert any("a warehouse from an earlier iq-etl is in" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("mode,embedded", [("auto", True), ("local", True), ("embedded", True)])
def test_jetstreamer_clickhouse_modes(tmp_path, mode, embedded):
    assert load({"JETSTREAMER_CLICKHOUSE_MODE": mode}, tmp_path).embedded is embedded
    auto_remote = load({"JETSTREAMER_CLICKHOUSE_MODE": "auto", "JETSTREAMER_CLICKHOUSE_DSN": "http://h:8123"}, tmp_path)
    assert not auto_remote.embedded


def test_jetstreamer_off_and_s3_are_refused_in_one_line(tmp_path):
    with pytest.raises(SettingsError, match="JETSTREAMER_CLICKHOUSE_MODE: 'off' is not possible"):
        load({"JETSTREAMER_CLICKHOUSE_MODE": "off"}, tmp_path)
    with pytest.raises(SettingsError, match=r"IQ_CAR_URL: s3:// locations are not supported"):
        load({"IQ_CAR_URL": "s3://bucket/{epoch}/epoch-{epoch}.car"}, tmp_path)
    with pytest.raises(SettingsError, match=r"JETSTREAMER_ARCHIVE_BASE: s3:// .* in IQ_CAR_URL"):
        load({"JETSTREAMER_ARCHIVE_BASE": "s3://bucket"}, tmp_path)


def test_jetstreamer_archive_base_is_honoured(tmp_path):
    s = load({"JETSTREAMER_ARCHIVE_BASE": "http://127.0.0.1:9/mirror/"}, tmp_path)
    assert s.car_url == "http://127.0.0.1:9/mirror/{epoch}/epoch-{epoch}.car"
    assert load({"JETSTREAMER_HTTP_BASE_URL": "https://m.example", "IQ_CAR_URL": "/data/{epoch}.car"},
                tmp_path).car_url == "/data/{epoch}.car"


@pytest.mark.parametrize("name,value", [("IQ_WAREHOUSE_LOCK_WAIT", "nan"), ("IQ_WAREHOUSE_LOCK_WAIT", "inf"),
                                        ("JETSTREAMER_THREADS", "100000"), ("JETSTREAMER_THREADS", "\u0663")])
def test_non_finite_and_out_of_range_numbers_are_refused(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        load({name: value}, tmp_path)


def test_logging_and_dbt_home_are_read_with_the_settings(tmp_path):
    """Issue 23 item 1: IQ_LOG_* / RUST_LOG and IQ_DBT_HOME are read by iq_etl.settings (also from .env)."""
    from iq_etl.settings import logging_settings

    dotenv = tmp_path / ".env"
    dotenv.write_text("IQ_LOG_FORMAT=json\nRUST_LOG=debug,hyper=info\n")
    assert logging_settings({}, dotenv) == ("debug", "json")
    assert logging_settings({"IQ_LOG_LEVEL": "warn"}, dotenv) == ("warn", "json")
    assert logging_settings({}, tmp_path / "none") == ("info", "text")
    with pytest.raises(SettingsError, match="IQ_LOG_LEVEL"):
        logging_settings({"IQ_LOG_LEVEL": "loud"}, tmp_path / "none")
    s = load({"IQ_DBT_HOME": str(tmp_path / "dbt-here")}, tmp_path)
    assert s.dbt_home == (tmp_path / "dbt-here").resolve()
    from iq_etl.transform.runner import dbt_home

    assert dbt_home(s) == s.dbt_home and dbt_home(load({}, tmp_path)) == load({}, tmp_path).home / "dbt"
