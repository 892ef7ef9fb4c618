"""Package discovery (everything else is in pyproject.toml): ``bench`` and every package below it, and the root folder
``adapters/`` with any package below it installed as ``bench.adapters``, so a new sub-package is never left out of the
wheel."""

from setuptools import find_packages, setup

setup(
    package_dir={"bench": "bench", "bench.adapters": "adapters"},
    packages=[
        *find_packages(include=["bench", "bench.*"]),
        *(f"bench.{name}" for name in find_packages(include=["adapters", "adapters.*"])),
    ],
)
