"""The bad-input corpus: each case breaks a real file from ../shared/data in a test's folder.

`tests/test_bad_input.py` runs every case in CORPUS through the CLI, engine.api and the upload. The
cases live in rasters.py, containers.py and files.py; importing this package registers them all.
"""

from tests.bad_inputs import containers, files, rasters  # noqa: F401  (each registers its cases)
from tests.bad_inputs.build import CORPUS, Bad, Real, write_tif

__all__ = ["CORPUS", "Bad", "Real", "write_tif"]
