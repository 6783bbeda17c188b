"""A built wheel works on its own: installed into a new virtualenv (dependencies from the lock) and run
from an empty folder, far from any checkout, `iq-etl demo` finds its migrations and dbt project as
package data and delivers every complete upload of the development chain."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, f"{args[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_in_a_new_venv_runs_the_demo_from_an_empty_folder(tmp_path):
    # Build from a clean copy of the working tree: an in-tree build leaves build/lib behind, and a
    # stale build/lib (a module since moved) would end up in the next wheel.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", ".iq-etl", "exports", ".cache", "__pycache__",
        ".pytest_cache", ".hypothesis", "target", "logs"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(source)], timeout=600)
    (wheel,) = dist.glob("iq_etl-*.whl")
    names = _run([sys.executable, "-m", "zipfile", "-l", str(wheel)]).stdout
    assert "iq_etl/warehouse/migrations/002_raw_instructions.sql" in names
    assert "iq_etl/transform/dbt_project/dbt_project.yml" in names
    assert "iq_etl/transform/dbt_project/models/marts/session_completeness.sql" in names

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # As `make install` does: the pip venv bundles is older and refuses the lock's extras under
    # --require-hashes ("httpx[http2] ... must have their versions pinned with ==").
    _run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], timeout=600)
    _run([str(py), "-m", "pip", "install", "--quiet", "--require-hashes", "-r", str(REPO / "requirements.lock")],
         timeout=1800)
    _run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], timeout=600)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "PREFECT_", "PYTHON"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["HOME"] = str(tmp_path / "user")   # a fresh machine's user: the demo's warehouse is ~/.iq-etl
    demo = _run([str(env_dir / "bin" / "iq-etl"), "demo"], cwd=empty, env=env, timeout=1800)
    assert "40 delivered, 0 failed, 0 refused (of 40 waiting)" in demo.stdout
    assert "all 40 complete uploads of the development chain match its manifest" in demo.stdout
    # the package ran from site-packages, not from this checkout
    where = _run([str(py), "-c", "import iq_etl, sys; print(iq_etl.__file__)"], cwd=empty, env=env).stdout
    assert str(env_dir) in where and str(REPO) not in where
