"""`iq-etl demo` (what `make demo` runs) as a user would run it: a fresh folder, default settings (no
DSN, no PREFECT_HOME, no Prefect server), offline, plus a reader backend on loopback. The exported
files match the development chain's manifest, the backend gets each complete upload once, and a
second run exports nothing."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def _demo_env(reader_base_url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_", "PREFECT_", "SOLANA_"))}
    env["IQ_READER_BASE_URL"] = reader_base_url
    env["HOME"] = str(home)   # a fresh machine's user: the default iq-etl home is ~/.iq-etl
    return env


def test_demo_from_a_fresh_folder_twice(tmp_path):
    from iq_etl.devchain.chain import load_manifest
    from iq_etl.devchain.servers.reader_backend import serve_reader_backend
    from iq_etl.export.file_target import METADATA_NAME, session_dirname

    backend = serve_reader_backend()
    try:
        env = _demo_env(backend.base_url, tmp_path / "user")
        iq_home = tmp_path / "user" / ".iq-etl"   # the default home, whatever the current folder
        first = subprocess.run([str(BIN / "iq-etl"), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=900)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        manifest = load_manifest(iq_home / "devchain")
        complete = [u for u in manifest.uploads if u.expected_status == "complete"]
        assert f"all {len(complete)} complete uploads" in first.stdout
        assert "iq-etl status" in first.stdout and str(iq_home / "warehouse") in first.stdout
        assert (iq_home / "prefect").is_dir()   # Prefect's state stays under the iq-etl home
        assert not (tmp_path / ".iq-etl").exists()   # nothing in the current folder but ./exports

        # Every complete upload is a file under ./exports with the bytes the gateway serves: the
        # uploader's original file (all but the short-base64 case, which the gateway keeps as text).
        originals = 0
        for upload in complete:
            folder = tmp_path / "exports" / session_dirname(upload.upload_key)
            (data_file,) = [p for p in folder.iterdir() if p.name != METADATA_NAME]
            digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
            assert digest == upload.file_sha256, upload.upload_key
            originals += digest == upload.original_sha256
            if "short_base64_not_decoded" not in upload.hard_cases:
                assert digest == upload.original_sha256, upload.upload_key
        assert originals >= len(complete) - 1
        # ... and was delivered once to the loopback reader backend.
        assert sorted(b["upload_key"] for b in backend.received) == sorted(u.upload_key for u in complete)

        second = subprocess.run([str(BIN / "iq-etl"), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
        assert "reused" in second.stdout
        assert second.stdout.count(": 0 delivered") == 2      # the folder and the backend: nothing again
        assert len(backend.received) == len(complete)
    finally:
        backend.shutdown()
