"""Package layout only (metadata and dependencies are in pyproject.toml).

The Alembic scripts stay at the repository top (`migrations/`, so `alembic` run from the
repository works) and ship inside the package as `worker.migrations`: a wheel or a plain
`pip install .` carries them, and `worker.store.migrations` finds them by import, installed or editable.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["worker", "worker.*"]),
        "worker.migrations",
        "worker.migrations.versions",
    ],
    package_dir={"worker.migrations": "migrations"},
    package_data={"worker.migrations": ["script.py.mako"]},
)
