"""The host's device path (:class:`deconvsr.sw.host.device.LinkDevice`: setup once, then per tile
input, run, wait, output, and the tiles put together) against the device written from the
protocol's text (:class:`deconvsr.sim.device.fault.WireDevice`, the engine's twin behind it), in
process: tiled frames equal the integer model in every pixel."""

import numpy as np
import pytest

from deconvsr.bus import Space
from deconvsr.sim.device.fault import OP, WireDevice, tiny_spec
from deconvsr.sw.host.device import GoldenDevice, LinkDevice
from deconvsr.sw.host.driver import Driver
from deconvsr.sw.host.program import frame_programs
from deconvsr.sw.model.quantize import quantize
from deconvsr.sw.host.transport import Transport
from deconvsr.sw.model.zoo import load_model


class InProcess(Transport):
    """A :class:`WireDevice` as a transport: what the host writes is answered at once."""

    name = "wire-device"

    def __init__(self, device):
        self.device = device
        self.inbox = bytearray()

    def write(self, data):
        self.inbox += self.device.receive(data)

    def read(self, max_bytes, timeout):
        data = bytes(self.inbox[:max_bytes])
        del self.inbox[:max_bytes]
        return data


@pytest.mark.parametrize("model, shape", [("edge-x2", (21, 26)), ("edge-x3", (13, 10))])
def test_tiled_frames_equal_the_integer_model(model, shape, rng):
    layers = quantize(load_model(model))
    y = rng.integers(0, 256, shape, dtype=np.uint8)
    y[:, : shape[1] // 2] //= 4                 # (not a uniform field: halves differ)
    spec = tiny_spec()
    progs, ext = frame_programs(layers, y, spec)
    assert ext is not None and len(progs) > 4   # tiled, in more than one row and column
    assert len({t.cy0 for t, _ in progs}) > 1 and len({t.cx0 for t, _ in progs}) > 1
    wire = WireDevice(spec)
    dev = LinkDevice(Driver(InProcess(wire), timeout=1.0))
    got = dev.upscale(layers, y)
    np.testing.assert_array_equal(got, GoldenDevice().upscale(layers, y))
    assert dev.stats["tiles"] == len(progs) and wire.runs == len(progs)
    again = dev.upscale(layers, y[::-1].copy())     # the kernels are not sent again
    np.testing.assert_array_equal(again, GoldenDevice().upscale(layers, y[::-1].copy()))
    weights = [d for space, _, d in progs[0][1].setup if space == Space.WEIGHT]
    sent = sum(len(r["payload"]) for r in wire.requests
               if r["opcode"] == OP["WRITE"] and r["space"] == Space.WEIGHT.value)
    assert sent == sum(map(len, weights))
