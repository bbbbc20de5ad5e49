"""Byte transports under the host driver: write bytes, read bytes with a timeout.

* :class:`SerialTransport`: pyserial ``serial_for_url``: a real port (``/dev/ttyUSB1``),
  ``loop://`` or ``socket://HOST:PORT`` (the simulated device);
* :class:`SpiTransport`: full-duplex exchanges over an :class:`SpiPort`; every byte written
  returns one byte; reads clock out :data:`~deconvsr.protocol.FIDLE` fillers. Ports:
  :class:`FtdiSpiPort` (FTDI MPSSE through pyftdi, for the board) and :class:`SocketSpiPort`
  (the simulated SPI device: the bridge exchanges each byte on the RTL's SPI pins).
"""

from __future__ import annotations

import abc
import logging
import socket
import time

import serial

from ...protocol import FIDLE

__all__ = ["TransportError", "Transport", "SerialTransport", "SpiPort", "FtdiSpiPort",
           "SocketSpiPort", "SpiTransport", "open_transport"]

log = logging.getLogger(__name__)


def _failed(what: str, e: Exception) -> str:
    text = str(e)
    return text if text.startswith(f"{what} failed") else f"{what} failed: {text}"


class TransportError(OSError):
    """The transport cannot be opened or used (port missing, connection refused, closed)."""


class Transport(abc.ABC):
    name = "transport"
    #: Seconds one byte takes on the line (10 / baud for a UART); 0 when unknown or
    #: instantaneous (sockets, in-process models). The driver's reply deadlines use it.
    byte_time = 0.0

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Up to ``max_bytes`` bytes; waits at most ``timeout`` s for the first; ``b""`` if none."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    def __init__(self, url: str, *, baud: int = 3_000_000):
        self.name = url
        # A URL (socket://, loop://) has no line rate; a port runs 10 bits per byte (8N1).
        self.byte_time = 0.0 if "://" in url else 10.0 / baud
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0)
        except (serial.SerialException, ValueError, OSError) as e:
            raise TransportError(f"cannot open {url}: {e}") from None

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except (serial.SerialException, OSError) as e:
            raise TransportError(_failed("write", e)) from None

    def read(self, max_bytes: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        port = self._port
        try:
            while True:
                waiting = port.in_waiting
                if waiting:
                    # (timeout 0: what has arrived, up to max_bytes; a socket:// port's
                    # in_waiting says only 0 or 1)
                    return port.read(max_bytes)
                left = deadline - time.monotonic()
                if left <= 0:
                    return b""
                port.timeout = min(left, 0.05)
                data = port.read(1)
                port.timeout = 0
                if data:
                    return data + (port.read(max_bytes - 1) if max_bytes > 1 else b"")
        except (serial.SerialException, OSError) as e:
            raise TransportError(_failed("read", e)) from None

    def close(self) -> None:
        self._port.close()


class SpiPort(abc.ABC):
    """Full duplex: ``exchange(data)`` clocks ``data`` out and returns the bytes clocked in."""

    byte_time = 0.0     #: seconds per byte at the port's clock (0: unknown)

    @abc.abstractmethod
    def exchange(self, data: bytes) -> bytes: ...

    def close(self) -> None:
        pass


class FtdiSpiPort(SpiPort):
    """FTDI MPSSE SPI master (mode 0) through pyftdi (optional dependency ``spi``).

    ``url`` is a pyftdi URL such as ``ftdi://ftdi:2232h/1``; ``cs`` the chip select line.
    """

    def __init__(self, url: str, *, freq: float = 6e6, cs: int = 0):
        try:
            from pyftdi.spi import SpiController   # optional (the spi extra)
        except ImportError:
            raise TransportError("SPI needs pyftdi: pip install 'deconvsr[spi]'") from None
        self._ctrl = SpiController()
        self.byte_time = 8 / freq
        try:
            self._ctrl.configure(url)
            self._port = self._ctrl.get_port(cs=cs, freq=freq, mode=0)
        except Exception as e:  # pyftdi raises USB and value errors of several kinds
            raise TransportError(f"cannot open {url}: {e}") from None

    def exchange(self, data: bytes) -> bytes:
        return bytes(self._port.exchange(data, duplex=True))

    def close(self) -> None:
        self._ctrl.terminate()


class SocketSpiPort(SpiPort):
    """The simulated SPI device (``deconvsr.sim.device.cocotb_bridge`` with the SPI top): each byte sent is
    exchanged on the RTL's pins and the byte received comes back, one for one."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0):
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise TransportError(f"cannot connect to {host}:{port}: {e}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def exchange(self, data: bytes) -> bytes:
        out = bytearray()
        try:        # (a device that stops answering: the socket's timeout, one line)
            self._sock.sendall(data)
            while len(out) < len(data):
                chunk = self._sock.recv(len(data) - len(out))
                if not chunk:
                    raise TransportError("the simulated SPI device closed the connection")
                out += chunk
        except TransportError:
            raise
        except OSError as e:
            raise TransportError(_failed("SPI exchange", e)) from None
        return bytes(out)

    def close(self) -> None:
        self._sock.close()


class SpiTransport(Transport):
    """A byte transport over an SPI master. Bytes clocked in while writing are kept for
    :meth:`read`; reading with nothing kept clocks out ``poll_bytes`` fillers at a time."""

    def __init__(self, port: SpiPort, *, name="spi", poll_bytes: int = 64):
        self.name = name
        self.byte_time = port.byte_time
        self._port = port
        self._rx = bytearray()
        self._poll = poll_bytes

    def write(self, data: bytes) -> None:
        self._rx += self._port.exchange(data)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            # Fillers carry no information: drop them here (the protocol allows it anywhere).
            if self._rx:
                kept = bytes(b for b in self._rx if b != FIDLE)
                self._rx.clear()
                if kept:
                    self._rx += kept[max_bytes:]
                    return kept[:max_bytes]
            if time.monotonic() >= deadline:
                return b""
            self._rx += self._port.exchange(bytes([FIDLE]) * self._poll)

    def close(self) -> None:
        self._port.close()


def open_transport(url: str, *, baud: int = 3_000_000) -> Transport:
    """``spi:FTDI_URL`` (pyftdi) or anything pyserial's ``serial_for_url`` takes."""
    if url.startswith("spi:"):
        return SpiTransport(FtdiSpiPort(url[4:]), name=url)
    return SerialTransport(url, baud=baud)
