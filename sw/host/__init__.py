"""Talking to a device: program compiler, devices, driver, transports, image I/O."""
