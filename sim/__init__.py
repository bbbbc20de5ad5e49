"""Simulation: generated Verilog under Verilator/Icarus via cocotb.

* ``device``: the simulated device, a runtime the host uses (``--device sim``);
* ``harness``, ``engine_sim``, ``board_top``: building and running designs (the engine's
  programs, the board top with FPGA primitive models);
* ``tb``: cocotb testbenches and the link models the tests use (never imported by ``sw``).
"""
