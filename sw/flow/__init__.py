"""The FPGA flow: bitstream builds and the figures of a finished build."""
