"""Settings: seed-compatible names, defaults, and clear errors naming the variable."""
from __future__ import annotations

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
    assert s.clickhouse_dsn == DEFAULT_DSN and s.embedded
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
