import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A seeded generator, different per test but reproducible. The seed comes from the test's
    file name and test name, not its folder (``tests/test_x.py::name``, as before the tests were
    sorted into tests/hw, tests/sw, ...), so moving a test file keeps its data."""
    path, sep, name = request.node.nodeid.partition("::")
    seed = zlib.crc32(f"tests/{path.rsplit('/', 1)[-1]}{sep}{name}".encode())
    return np.random.default_rng(seed)
