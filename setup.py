"""Build hook: generates the protobuf stubs from protos/ whenever setuptools builds the Python files.

All metadata lives in pyproject.toml. `build_py` runs for wheels, sdist-to-wheel builds and (in editable
mode) `pip install -e .`; in every case the stubs are written into the source tree's
`latcomp/service/_proto/`, where an editable install imports them and a regular build copies them from.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _stubgen():
    # Loaded by path: importing the `latcomp` package here would need its runtime dependencies.
    spec = importlib.util.spec_from_file_location("_latcomp_stubgen", HERE / "latcomp/service/_stubgen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithStubs(build_py):
    def run(self):
        stubgen = _stubgen()
        out_dir = stubgen.generate(HERE / "protos")
        package = "latcomp.service._proto"
        if self.packages is not None and package not in self.packages:
            # A fresh checkout has no _proto/ when packages are discovered; add it now that it exists.
            self.packages.append(package)
        self.announce(f"generated protobuf stubs in {out_dir}", level=2)
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
