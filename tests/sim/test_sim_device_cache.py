"""The simulated device's build cache: a stale build (the simulator it holds no longer starts:
a toolchain change, a half-deleted directory) is rebuilt once, not reported in 21 lines."""

import pytest

from deconvsr.sim.device import SimDevice, SimDeviceError
from deconvsr.sim.harness import available_simulators
from deconvsr.sw.host.driver import Driver
from deconvsr.sw.host.transport import SerialTransport

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("verilator" not in available_simulators(),
                                 reason="Verilator not installed")]


def _identify(sim):
    with SerialTransport(sim.url) as t:
        return Driver(t, timeout=60.0).identify()


def test_stale_build_is_rebuilt_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DECONVSR_CACHE", str(tmp_path))
    with SimDevice(top="stream", engine="twin") as sim:
        assert _identify(sim).describe()["link"] == "stream"
    (bdir,) = (tmp_path / "verilator").iterdir()
    binary = bdir / "sim_build" / "deconvsr_stream"
    binary.unlink()                                  # the cache still says "built"
    assert (bdir / "built").exists()
    with SimDevice(top="stream", engine="twin") as sim:
        assert _identify(sim).describe()["link"] == "stream"
    assert binary.exists()
    # A failure that a rebuild does not cure is one line naming the kept log.
    monkeypatch.setenv("PATH", "/nonexistent")      # (no compiler: the rebuild fails too)
    binary.unlink()
    with pytest.raises(SimDeviceError) as e:
        SimDevice(top="stream", engine="twin").open()
    assert len(str(e.value).splitlines()) == 1
