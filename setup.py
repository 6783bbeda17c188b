"""Only here to put the dbt project into the built package: it stays at the repository root (where dbt
users expect it), and `iq_etl.transform.runner.find_dbt_project` looks for a checkout first, then for this
copy. Everything else is in pyproject.toml."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithDbtProject(build_py):
    def run(self):
        super().run()
        source = ROOT / "dbt_project"
        if not (source / "dbt_project.yml").is_file():  # building from an sdist made without it
            raise SystemExit(f"dbt project missing at {source}: cannot build a package without it")
        target = Path(self.build_lib) / "iq_etl" / "transform" / "dbt_project"
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("target", "logs", ".user.yml", "*.user.yml", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithDbtProject})
