"""deconvsr: an FPGA deconvolution engine for CNN image upsampling.

Layout: ``deconvsr`` (this package) holds what gateware and host share (the arithmetic
contract, layer descriptors, the wire protocol); ``deconvsr.hw`` is the Amaranth gateware,
``deconvsr.sw`` the host side, ``deconvsr.sim`` the simulation harness.
"""

__version__ = "0.1.0"
