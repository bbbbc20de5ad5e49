import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A seeded generator, different per test but reproducible."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
