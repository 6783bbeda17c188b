"""Only here for what pyproject.toml cannot say:

- the dbt project goes into the built package: it stays at the repository root (where dbt users expect
  it), and `iq_etl.transform.runner.find_dbt_project` looks for a checkout first, then for this copy;
- the optional compiled CAR section walker (`iq_etl.ingest.sources.car._walker`, C): built when a
  compiler and the Python headers are there; when the build fails the package installs without it and
  the reader uses its pure-Python walk (`IQ_SCANNER=auto`; docs/DECISIONS.md "CAR scanners").
  `IQ_REQUIRE_NATIVE=1` makes a failed build an error instead (CI, to be sure both walkers are tested).

Everything else is in pyproject.toml."""
import os
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
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


class OptionalBuildExt(build_ext):
    """Build the C walker if possible; never fail the install over it (unless IQ_REQUIRE_NATIVE=1)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - distutils raises several types (no compiler, ...)
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._skip(exc)

    @staticmethod
    def _skip(exc):
        if os.environ.get("IQ_REQUIRE_NATIVE") == "1":
            raise exc
        print(f"iq-etl: the compiled CAR walker was not built ({exc}); the pure-Python reader will be used",
              file=sys.stderr)


WALKER = Extension("iq_etl.ingest.sources.car._walker", ["src/iq_etl/ingest/sources/car/_walker.c"],
                   extra_compile_args=["-O3"])

setup(cmdclass={"build_py": BuildPyWithDbtProject, "build_ext": OptionalBuildExt}, ext_modules=[WALKER])
