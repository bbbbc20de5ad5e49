import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A seeded generator, different per test but reproducible."""
    seed = abs(hash(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)
