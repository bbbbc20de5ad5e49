"""The simulated device: a SoC top under Verilator, reached over TCP (``--device sim``).

:mod:`.cocotb_device` builds and starts it; :mod:`.cocotb_bridge` is the cocotb test module the
simulator runs (the bridge between the socket and the SoC's link).
"""

from .cocotb_device import TOPS, SimDevice, SimDeviceError, build, cache_dir

__all__ = ["SimDevice", "SimDeviceError", "cache_dir", "build", "TOPS"]
