"""Host side, by role (a subpackage never imports ``cli``):

* ``model``: the float network, kernel transforms, quantiser, importers, ONNX rewrite, model zoo
  (with the shipped networks as package data), training;
* ``golden``: reference loops, the five deconvolution algorithms, the bit-exact integer model,
  the cost model;
* ``host``: the program compiler, devices, driver, transports, image I/O;
* ``flow``: bitstream builds (yosys, nextpnr) and the figures of a build (``report``);
* ``bench``: benchmark logic (measured figures) that ``deconvsr bench`` runs;
* ``cli``: the ``deconvsr`` command line (argument parsing and printing only).
"""
