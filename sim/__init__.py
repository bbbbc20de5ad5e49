"""Simulation harness: generated Verilog under Verilator/Icarus via cocotb, simulated device."""
