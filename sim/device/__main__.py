"""``python -m deconvsr.sim.device BUILD_DIR TOPLEVEL TEST_DIR``: the simulator process that
:class:`~deconvsr.sim.device.SimDevice` starts."""

import sys

from .cocotb_device import serve

sys.exit(serve(*sys.argv[1:4]))
