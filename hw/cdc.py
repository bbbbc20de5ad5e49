"""A stream across two clock domains, one transfer at a time.

:class:`StreamCDC` is for a slow stream between unrelated (or related) clocks where a FIFO
would cost more than the traffic is worth: the host bus between a link running on a slower
clock and the engine (:mod:`deconvsr.hw.soc`, ``link_clock="own"``). Amaranth's
:class:`~amaranth.lib.fifo.AsyncFIFO` needs a memory of ``depth`` x width plus Gray-coded
pointers, and on the iCE40UP5K every block RAM is taken and each flip-flop is a logic cell;
the link issues a bus command every few hundred engine cycles at most.
"""

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["StreamCDC"]


class StreamCDC(wiring.Component):
    """Stream ``i`` (in ``i_domain``) -> stream ``o`` (in ``o_domain``), by a toggle handshake.

    The transfer on ``i`` is captured in a register (``i_domain``) and a request toggles; once
    the toggle has passed a ``stages``-flop synchroniser, ``o.valid`` rises with the captured
    payload on ``o.payload`` (held unchanged until the transfer on ``o``); that transfer toggles
    an acknowledgement back through a synchroniser, and ``i.ready`` rises again. One transfer in
    flight: about ``stages + 1`` cycles of each domain per transfer. ``i.ready`` and ``o.valid``
    come from register compares; ``o.payload`` is the ``i_domain`` register, stable from
    ``stages`` ``o_domain`` cycles before ``o.valid`` until after the transfer.

    ``busy`` (``i_domain``): a transfer has been taken and its acknowledgement has not come back.

    Raises
    ------
    ValueError
        if ``stages`` < 2 or the two domains are the same.
    """

    def __init__(self, shape, *, i_domain: str, o_domain: str, stages: int = 2):
        if not isinstance(stages, int) or stages < 2:
            self._MustUse__silence = True  # not built: no 'never used' warning
            raise ValueError(f"stages must be an integer >= 2, not {stages!r}")
        if i_domain == o_domain:
            self._MustUse__silence = True
            raise ValueError(f"i_domain and o_domain must differ, not both {i_domain!r}")
        self._i_domain, self._o_domain, self._stages = i_domain, o_domain, stages
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape)),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        di, do = self._i_domain, self._o_domain
        data = Signal.like(self.i.payload, reset_less=True)     # in i_domain
        req = Signal()        # i_domain: toggles with each transfer taken
        ack = Signal()        # o_domain: toggles with each transfer given
        req_o = Signal()      # req, synchronised to o_domain
        ack_i = Signal()      # ack, synchronised to i_domain
        m.submodules.req_sync = FFSynchronizer(req, req_o, o_domain=do, stages=self._stages)
        m.submodules.ack_sync = FFSynchronizer(ack, ack_i, o_domain=di, stages=self._stages)
        m.d.comb += [
            self.i.ready.eq(req == ack_i),
            self.busy.eq(req != ack_i),
            self.o.valid.eq(req_o != ack),
            self.o.payload.eq(data),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d[di] += [data.eq(self.i.payload), req.eq(~req)]
        with m.If(self.o.valid & self.o.ready):
            m.d[do] += ack.eq(~ack)
        return m
