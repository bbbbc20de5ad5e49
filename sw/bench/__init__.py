"""Benchmark logic (measured figures as plain data, and their rendering); ``deconvsr bench``
runs it (:mod:`deconvsr.sw.cli.bench`)."""
