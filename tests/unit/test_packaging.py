"""What a built package and a deployment depend on stays consistent: the lock pins what pyproject asks
for, prefect.yaml names the Prefect that installs, and package data holds the migrations."""
from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s\\]+)", text, re.M)}


def test_prefect_yaml_names_the_locked_and_installed_prefect():
    declared = re.search(r"^prefect-version:\s*([0-9][^\s#]*)", (REPO / "prefect.yaml").read_text(), re.M)
    assert declared, "prefect.yaml has no prefect-version"
    assert declared.group(1) == _locked()["prefect"] == version("prefect")


def test_lock_pins_every_dependency_of_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    names = {re.match(r"[A-Za-z0-9_.\-]+", w).group(0).lower() for w in wanted}
    missing = names - set(_locked())
    assert not missing, f"requirements.lock lacks {missing}: run `make lock`"
    assert "protobuf" not in {n for n in names}, "protobuf is not used by iq-etl (dbt brings its own)"


def test_migrations_are_package_data():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "migrations/*.sql" in project["tool"]["setuptools"]["package-data"]["iq_etl.warehouse"]
    assert sorted((REPO / "src/iq_etl/warehouse/migrations").glob("0*.sql")), "migrations moved?"
