"""Frames streamed to the native simulated device (the stream top: link + the real engine,
Verilator) through the host driver's STEP requests, with bits flipped on the line at random
both ways: every damaged request or reply ends in a retry, never in a wrong pixel."""

import random

import numpy as np
import pytest

from deconvsr.sim.device import NativeDevice
from deconvsr.sim.harness import available_simulators
from deconvsr.sw.golden.intmodel import run_network
from deconvsr.sw.host.device import LinkDevice
from deconvsr.sw.host.driver import Driver
from deconvsr.sw.host.transport import SerialTransport, Transport
from deconvsr.sw.model.zoo import load_quantized

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="verilator not installed")


class Noisy(Transport):
    """Line noise: every byte either way has a bit flipped with probability ``p``."""

    def __init__(self, inner, p, seed):
        self.inner, self.p = inner, p
        self.rng = random.Random(seed)
        self.name = "noisy"
        self.faults = 0

    def _noise(self, data):
        out = bytearray(data)
        for i in range(len(out)):
            if self.rng.random() < self.p:
                self.faults += 1
                out[i] ^= 1 << self.rng.randrange(8)
        return bytes(out)

    def write(self, data):
        self.inner.write(self._noise(data))

    def read(self, max_bytes, timeout):
        return self._noise(self.inner.read(max_bytes, timeout))

    def close(self):
        self.inner.close()


def test_streamed_frames_survive_a_noisy_line():
    _, layers = load_quantized("edge-x2")
    rng = np.random.default_rng(3)
    with NativeDevice(top="stream", engine="engine", spec="sim") as sim:
        noisy = Noisy(SerialTransport(sim.url), p=0.0005, seed=1)
        dev = LinkDevice(Driver(noisy, timeout=20.0, retries=8), name="noisy")
        try:
            for h, w in [(37, 23), (40, 41)]:
                y = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
                np.testing.assert_array_equal(dev.upscale(layers, y),
                                              run_network(y[None], layers)[0])
        finally:
            noisy.close()
    assert noisy.faults >= 5
    assert dev.driver.stats["retries"] >= 5
