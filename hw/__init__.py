"""Amaranth gateware. Never imports deconvsr.sw (host-only code)."""
