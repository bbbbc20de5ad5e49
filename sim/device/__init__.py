"""The simulated device: a SoC top under Verilator, reached over TCP (``--device sim``).

:mod:`.native` is the one the CLI uses: the Verilog compiled by Verilator into a C++ model,
clocked by a C++ loop (``native_main.cpp``). :mod:`.cocotb_device` runs the same tops (and the
board top) under cocotb; :mod:`.cocotb_bridge` is the cocotb test module that simulator runs
(the bridge between the socket and the SoC's link). Both speak the same byte stream and
control port.
"""

from .cocotb_device import TOPS, SimDevice, SimDeviceError, build, cache_dir
from .native import NATIVE_TOPS, NativeDevice, NativeDeviceError, build_native

__all__ = ["SimDevice", "SimDeviceError", "cache_dir", "build", "TOPS",
           "NativeDevice", "NativeDeviceError", "build_native", "NATIVE_TOPS"]
