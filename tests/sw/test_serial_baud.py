"""The rate a ``serial:PORT`` device opens at: ``@BAUD``, else ``--board``'s (boards.toml),
else 3 Mbaud; a port that gets no valid reply names each board's rate."""

import pytest

import deconvsr.sw.cli.main as cli
from deconvsr.hw.boards import BOARDS
from deconvsr.sw.host import device as device_mod
from deconvsr.sw.host.device import DEFAULT_BAUD, DeviceError, open_device
from deconvsr.sw.host.transport import TransportError


@pytest.fixture
def opened(monkeypatch):
    """Records (url, baud) of every SerialTransport opened, and refuses it."""
    calls = []

    def fake(url, *, baud):
        calls.append((url, baud))
        raise TransportError(f"cannot open {url}: test")
    monkeypatch.setattr(device_mod, "SerialTransport", fake)
    return calls


@pytest.mark.parametrize("name, baud, want", [
    ("serial:/dev/ttyX", None, DEFAULT_BAUD),
    ("serial:/dev/ttyX", 8_000_000, 8_000_000),
    ("serial:/dev/ttyX@6000000", 8_000_000, 6_000_000),     # the name's rate wins
    ("serial:/dev/ttyX@12000000", None, 12_000_000),
])
def test_open_device_baud(opened, name, baud, want):
    with pytest.raises(DeviceError, match="cannot open /dev/ttyX: test"):
        open_device(name, baud=baud)
    assert opened == [("/dev/ttyX", want)]


@pytest.mark.parametrize("board", list(BOARDS))
def test_cli_board_sets_the_baud(opened, capsys, board):
    assert cli.main(["info", "--device", "serial:/dev/ttyX", "--board", board]) == \
        cli.EXIT_DEVICE
    assert cli.main(["info", "--device", "serial:/dev/ttyX"]) == cli.EXIT_DEVICE
    assert opened == [("/dev/ttyX", BOARDS[board].baud), ("/dev/ttyX", DEFAULT_BAUD)]
    capsys.readouterr()
    args = cli.build_parser().parse_args(["upscale", "x.png", "-o", "y.png", "--board", board])
    assert cli.board_baud(args) == BOARDS[board].baud


def test_no_reply_names_the_boards_rates():
    # loop:// echoes the request: never a valid reply, as from a board at another rate
    with pytest.raises(DeviceError) as e:
        open_device("serial:loop://@6000000", timeout=0.02)
    msg = str(e.value)
    assert "IDENTIFY" in msg and "opened at 6000000 baud" in msg
    for name, board in BOARDS.items():
        assert f"{name} {board.baud}" in msg
    assert "\n" not in msg
