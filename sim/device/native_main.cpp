// The native simulated device: a SoC top (hw/soc.py: StreamSoC, UartSoC or SpiSoC) compiled by
// Verilator into a C++ model (class Vtop, `--prefix Vtop`), clocked by this loop, its line
// bytes carried over TCP on 127.0.0.1 so the host driver connects with socket://127.0.0.1:PORT.
// It is the C++ twin of the cocotb bridge (sim/tb_soc.py): the same byte stream, the same
// control port, the same pacing of simulated time:
//
// * simulated time advances only while the SoC works (its `idle` output is low) or bytes are
//   in flight; when it is idle and the host has sent nothing, the loop blocks on the socket;
// * inside a request frame with no byte offered (`waiting`) the loop waits up to WAIT_REAL_MS
//   of real time for the host before letting simulated time run (a truncated frame still meets
//   the deframer's watchdog);
// * the UART top gets the host's bytes back to back at the line rate (`--divisor` cycles per
//   bit) and a receiver samples `tx` in the middle of each bit; the SPI top exchanges each
//   host byte on the bus (mode 0, `--sck-cycles` per SCK period) and returns the byte clocked
//   out at the same time.
//
// The top's kind is chosen at compile time: -DDECONVSR_TOP=1 (stream), 2 (uart), 3 (spi). The
// loop only drives the top's ports (clk, rst, the line pins, idle, waiting), so it works with
// whatever engine hw/soc.py puts behind the link.
//
// Arguments: --port-file PATH (written "DATA_PORT CTRL_PORT\n" once listening), --clk-ps N (clock
// period, even), --divisor N (uart), --sck-cycles N (spi, even), --port N (data port, 0: any),
// --ctrl-port N (0: any, -1: the data port + 1), --host ADDR (127.0.0.1), --serve (accept connections one after another until killed; without
// it the device exits when its one host closes), --accept-timeout S (without --serve).
//
// A connection to the control port gets one JSON line {"sim_ps": ..., "cycles": ...,
// "bytes_in": ..., "bytes_out": ..., "connections": ..., "host_waits": ...} and is closed
// (host_waits: the real-time waits for a host that stopped in mid-frame). Between connections
// (--serve) the SoC runs until idle with its replies dropped, as a board does when its host
// goes away (a frame cut short ends at the watchdog), and keeps its state.

#include "Vtop.h"
#include "verilated.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifndef DECONVSR_TOP
#error "compile with -DDECONVSR_TOP=1 (stream), 2 (uart) or 3 (spi)"
#endif

namespace {

constexpr int WAIT_REAL_MS = 250;          // real time granted to a host in mid-frame
constexpr int SPELL_CYCLES = 16;           // `waiting` this long: the host stopped mid-frame
constexpr size_t CHUNK = 65536;            // socket reads, and replies sent at this size
constexpr int POLL_MIN = 16, POLL_MAX = 4096;   // cycles between socket polls while busy
constexpr uint64_t DRAIN_MAX = 1ull << 32;  // cycles to reach idle after a host goes away

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "native device: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

// --- the host side: one data connection at a time, a control port --------------------------

struct Host {
    int srv = -1, ctrl = -1, conn = -1;
    std::vector<uint8_t> rxq;   // host -> device, from rxh on
    size_t rxh = 0;
    std::vector<uint8_t> out;   // device -> host, not yet sent
    uint64_t bytes_in = 0, bytes_out = 0, connections = 0;
    uint64_t waits = 0;         // real-time waits for a host that stopped in mid-frame
    bool closed = true;
    std::string (*status)() = nullptr;

    bool pending() const { return rxh < rxq.size(); }
    uint8_t front() const { return rxq[rxh]; }
    void pop() {
        if (++rxh == rxq.size()) { rxq.clear(); rxh = 0; }
    }

    // A listening socket, or -1 if the port is taken and `may_fail`.
    static int listen_on(const char* host, int port, int backlog, bool may_fail = false) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
            std::fprintf(stderr, "native device: bad address %s\n", host);
            std::exit(2);
        }
        if (bind(s, (sockaddr*)&a, sizeof a) < 0) {
            if (may_fail && errno == EADDRINUSE) {
                close(s);
                return -1;
            }
            die("bind");
        }
        if (listen(s, backlog) < 0) die("listen");
        return s;
    }

    static int port_of(int s) {
        sockaddr_in a{};
        socklen_t n = sizeof a;
        getsockname(s, (sockaddr*)&a, &n);
        return ntohs(a.sin_port);
    }

    void serve_ctrl() {
        int c = accept(ctrl, nullptr, nullptr);
        if (c < 0) return;
        std::string msg = status();
        const char* p = msg.data();
        size_t left = msg.size();
        while (left) {
            ssize_t n = send(c, p, left, MSG_NOSIGNAL);
            if (n <= 0) break;
            p += n;
            left -= n;
        }
        close(c);
    }

    // Wait for a host (serving the control port meanwhile). timeout_s < 0: forever.
    bool accept_host(double timeout_s) {
        for (;;) {
            fd_set r;
            FD_ZERO(&r);
            FD_SET(srv, &r);
            FD_SET(ctrl, &r);
            timeval tv{(time_t)timeout_s, (suseconds_t)((timeout_s - (time_t)timeout_s) * 1e6)};
            int n = select(std::max(srv, ctrl) + 1, &r, nullptr, nullptr,
                           timeout_s < 0 ? nullptr : &tv);
            if (n < 0) {
                if (errno == EINTR) continue;
                die("select");
            }
            if (n == 0) return false;
            if (FD_ISSET(ctrl, &r)) serve_ctrl();
            if (FD_ISSET(srv, &r)) {
                conn = accept(srv, nullptr, nullptr);
                if (conn < 0) continue;
                int one = 1;
                setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
                closed = false;
                connections++;
                return true;
            }
        }
    }

    void take() {
        uint8_t buf[CHUNK];
        ssize_t n = recv(conn, buf, sizeof buf, 0);
        if (n > 0) {
            rxq.insert(rxq.end(), buf, buf + n);
            bytes_in += n;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            closed = true;
        }
    }

    // Take the host's bytes into rxq; wait up to timeout_ms (< 0: until something happens).
    // Returns true if something arrived (bytes or the host closing).
    bool poll(int timeout_ms) {
        if (closed) return true;
        for (;;) {
            fd_set r;
            FD_ZERO(&r);
            FD_SET(conn, &r);
            FD_SET(ctrl, &r);
            timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
            int n = select(std::max(conn, ctrl) + 1, &r, nullptr, nullptr,
                           timeout_ms < 0 ? nullptr : &tv);
            if (n < 0) {
                if (errno == EINTR) continue;
                die("select");
            }
            if (n == 0) return false;
            if (FD_ISSET(ctrl, &r)) {
                serve_ctrl();
                if (!FD_ISSET(conn, &r)) {
                    if (timeout_ms == 0) return false;
                    continue;   // (as the cocotb bridge: the wait starts again)
                }
            }
            take();
            return true;
        }
    }

    // The host stopped in mid-frame: give it WAIT_REAL_MS of real time (counted).
    bool wait_for_host() {
        waits++;
        return poll(WAIT_REAL_MS);
    }

    // Send `out` to the host. While the host's receive window is full keep reading what it
    // sends (a host that writes a long request before reading the replies never deadlocks).
    void flush() {
        if (out.empty()) return;
        bytes_out += out.size();
        size_t off = 0;
        while (off < out.size() && !closed) {
            ssize_t n = send(conn, out.data() + off, out.size() - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += n;
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                closed = true;
                break;
            }
            fd_set r, w;
            FD_ZERO(&r);
            FD_ZERO(&w);
            FD_SET(conn, &r);
            FD_SET(conn, &w);
            FD_SET(ctrl, &r);
            int m = select(std::max(conn, ctrl) + 1, &r, &w, nullptr, nullptr);
            if (m < 0 && errno != EINTR) die("select");
            if (m > 0 && FD_ISSET(ctrl, &r)) serve_ctrl();
            if (m > 0 && FD_ISSET(conn, &r)) take();
        }
        out.clear();
    }

    void hang_up() {
        if (conn >= 0) close(conn);
        conn = -1;
        closed = true;
        rxq.clear();
        rxh = 0;
        out.clear();
    }
};

// --- the SoC model --------------------------------------------------------------------------

struct Soc {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<Vtop> top;
    uint64_t cycles = 0;

    Soc() : ctx(new VerilatedContext), top(new Vtop(ctx.get(), "top")) {}

    // Inputs are applied with the clock low, and outputs read once they settled: they are
    // exactly what the next rising edge samples.
    void settle() {
        top->clk = 0;
        top->eval();
    }
    void edge() {
        top->clk = 1;
        top->eval();
        cycles++;
    }
    void step() {
        settle();
        edge();
    }
    void run(uint64_t n) {
        for (uint64_t k = 0; k < n; k++) step();
    }
    void reset() {
        top->rst = 1;
        run(4);
        top->rst = 0;
        run(2);
    }
};

// A spell of `waiting` (inside a request frame, no byte offered): the host stopped in
// mid-frame once it lasted `need` checks in a row, and it is granted one real-time wait. (The
// deframer also shows `waiting` for the cycle in which it checks a frame's CRC, after the
// frame's last byte: that is no reason to wait for the host.)
struct Spell {
    int need, held = 0;
    bool used = false;
    explicit Spell(int need_) : need(need_) {}
    bool wait_now(bool waiting) {
        if (!waiting) {
            held = 0;
            used = false;
            return false;
        }
        if (used || ++held < need) return false;
        used = true;
        return true;
    }
};

// Socket polls while the SoC is busy: often at first, less and less while nothing happens.
struct Poller {
    int interval = POLL_MIN, left = POLL_MIN;
    bool due() { return --left <= 0; }
    void result(bool got) {
        interval = got ? POLL_MIN : std::min(interval * 2, POLL_MAX);
        left = interval;
    }
    void soon() { interval = left = POLL_MIN; }
};

struct Options {
    const char* port_file = nullptr;
    const char* host = "127.0.0.1";
    uint64_t clk_ps = 20834;
    int divisor = 16, sck_cycles = 8, port = 0;
    int ctrl_port = 0;          // 0: any free port; -1: the data port + 1
    bool serve = false;
    double accept_timeout = 120.0;
};

Soc* g_soc = nullptr;
Host* g_host = nullptr;
uint64_t g_clk_ps = 0;

std::string status_json() {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "{\"sim_ps\": %" PRIu64 ", \"cycles\": %" PRIu64 ", \"bytes_in\": %" PRIu64
                  ", \"bytes_out\": %" PRIu64 ", \"connections\": %" PRIu64
                  ", \"host_waits\": %" PRIu64 "}\n",
                  g_soc->cycles * g_clk_ps, g_soc->cycles, g_host->bytes_in, g_host->bytes_out,
                  g_host->connections, g_host->waits);
    return buf;
}

// --- one connection, per top ----------------------------------------------------------------

#if DECONVSR_TOP == 1
// (Verilator escapes the double underscore of Amaranth's flattened stream ports)
#define I_VALID i___05Fvalid
#define I_PAYLOAD i___05Fpayload
#define I_READY i___05Fready
#define O_VALID o___05Fvalid
#define O_PAYLOAD o___05Fpayload
#define O_READY o___05Fready

// Byte-stream top: one host byte per cycle into `i` while there are any; `o` always ready.
void session(Soc& soc, Host& host, const Options&) {
    Vtop& t = *soc.top;
    Poller poller;
    Spell spell(SPELL_CYCLES);
    uint64_t gap = 0;           // cycles since the last reply byte
    t.O_READY = 1;
    while (!host.closed) {
        bool have = host.pending();
        t.I_VALID = have;
        if (have) t.I_PAYLOAD = host.front();
        soc.settle();
        bool o_valid = t.O_VALID, i_ready = t.I_READY;
        uint8_t o_byte = t.O_PAYLOAD;
        bool idle = t.idle, waiting = t.waiting;
        soc.edge();
        if (have && i_ready) host.pop();
        if (o_valid) {
            host.out.push_back(o_byte);
            gap = 0;
            if (host.out.size() >= CHUNK) host.flush();
        } else if (!host.out.empty() && ++gap >= 64) {
            host.flush();   // a reply's end (the lean pipeline spaces its bytes ~10 cycles)
        }
        bool pending = host.pending();
        bool spell_over = spell.wait_now(waiting && !pending);
        if (pending) {
            if (host.rxq.size() - host.rxh < 64 && poller.due()) poller.result(host.poll(0));
            continue;
        }
        if (o_valid) continue;
        if (idle) {
            host.flush();
            host.poll(-1);
            poller.soon();
        } else if (spell_over) {
            host.flush();
            poller.result(host.wait_for_host());
        } else if (poller.due()) {
            poller.result(host.poll(0));
        }
    }
    host.flush();
}

void drain(Soc& soc) {
    Vtop& t = *soc.top;
    t.I_VALID = 0;
    t.O_READY = 1;
    for (uint64_t k = 0; k < DRAIN_MAX; k++) {
        soc.settle();
        bool idle = t.idle;
        soc.edge();
        if (idle) return;
    }
    soc.reset();
}

#elif DECONVSR_TOP == 2
// UART top: the host's UART sends bytes back to back at the line rate; a receiver samples
// `tx` in the middle of each bit.
void session(Soc& soc, Host& host, const Options& opt) {
    Vtop& t = *soc.top;
    const int div = opt.divisor;
    Poller poller;
    Spell spell(SPELL_CYCLES);
    // sender: the 10 bits of `frame` (start, 8 data LSB first, stop), `bit_left` cycles each
    bool sending = false;
    int bit = 0, bit_left = 0;
    uint16_t frame = 0;
    // receiver
    bool receiving = false;
    int rx_bit = 0, rx_left = 0;
    uint8_t rx_byte = 0;
    bool tx_prev = true;
    t.rx = 1;
    while (!host.closed) {
        if (!sending && host.pending()) {
            frame = (uint16_t)((1u << 9) | ((unsigned)host.front() << 1));
            host.pop();
            sending = true;
            bit = 0;
            bit_left = div;
        }
        t.rx = sending ? (frame >> bit) & 1 : 1;
        soc.step();
        if (sending && --bit_left == 0) {
            if (++bit == 10) sending = false;
            else bit_left = div;
        }
        bool tx = t.tx;
        if (!receiving) {
            if (tx_prev && !tx) {
                receiving = true;
                rx_bit = -1;            // the start bit, sampled in its middle
                rx_left = div / 2;
                rx_byte = 0;
            }
        } else if (--rx_left == 0) {
            if (rx_bit == -1) {
                if (tx) receiving = false;      // a glitch, not a start bit
                else { rx_bit = 0; rx_left = div; }
            } else if (rx_bit < 8) {
                rx_byte |= (uint8_t)(tx << rx_bit);
                rx_bit++;
                rx_left = div;
            } else {                            // the middle of the stop bit
                host.out.push_back(rx_byte);
                receiving = false;
            }
        }
        tx_prev = tx;
        bool idle = t.idle, waiting = t.waiting;
        bool quiet = !sending && !receiving && !host.pending();
        if (!host.out.empty() && (quiet || host.out.size() >= 4096)) host.flush();
        bool spell_over = spell.wait_now(waiting && quiet);
        if (host.pending() || sending) {
            // keep the line busy: ask for more once per byte time when little is queued
            if (host.rxq.size() - host.rxh < 64 && poller.due()) {
                poller.result(host.poll(0));
                poller.interval = poller.left = std::min(poller.interval, 10 * div);
            }
        } else if (idle && quiet) {
            host.poll(-1);
            poller.soon();
        } else if (spell_over) {
            poller.result(host.wait_for_host());
        } else if (poller.due()) {
            poller.result(host.poll(0));
        }
    }
    host.flush();
}

void drain(Soc& soc) {
    Vtop& t = *soc.top;
    t.rx = 1;
    for (uint64_t k = 0; k < DRAIN_MAX; k++) {
        soc.step();
        if (t.idle) return;
    }
    soc.reset();
}

#elif DECONVSR_TOP == 3
// SPI top (mode 0): each host byte is exchanged on the bus, MSB first, and the byte clocked
// out of `cipo` at the same time goes back to the host (one for one).
void session(Soc& soc, Host& host, const Options& opt) {
    Vtop& t = *soc.top;
    const int half = std::max(1, opt.sck_cycles / 2);
    bool selected = false;
    Spell spell(2);             // (checked every 64 cycles)
    t.sck = 0;
    t.copi = 0;
    t.cs_n = selected ? 0 : 1;
    while (!host.closed) {
        if (!host.pending()) {
            // (the pins settle before idle/waiting are read)
            soc.settle();
            bool idle = t.idle, waiting = t.waiting;
            bool spell_over = spell.wait_now(waiting);
            if (idle) {
                t.cs_n = 1;
                selected = false;
                host.poll(-1);
            } else if (spell_over) {
                host.wait_for_host();
            } else {
                host.poll(0);
            }
            if (!host.pending()) {
                soc.run(64);
                continue;
            }
        }
        if (!selected) {
            t.cs_n = 0;
            selected = true;
            soc.run(4);
        }
        size_t n = std::min<size_t>(4096, host.rxq.size() - host.rxh);
        for (size_t k = 0; k < n; k++) {
            uint8_t byte = host.front(), got = 0;
            host.pop();
            for (int i = 7; i >= 0; i--) {
                t.copi = (byte >> i) & 1;
                soc.run(half);
                got = (uint8_t)((got << 1) | (t.cipo & 1));
                t.sck = 1;
                soc.run(half);
                t.sck = 0;
            }
            host.out.push_back(got);
        }
        host.flush();
        host.poll(0);
    }
    host.flush();
}

void drain(Soc& soc) {
    Vtop& t = *soc.top;
    t.sck = 0;
    t.cs_n = 1;
    for (uint64_t k = 0; k < DRAIN_MAX; k++) {
        soc.step();
        if (t.idle) return;
    }
    soc.reset();
}
#else
#error "DECONVSR_TOP must be 1, 2 or 3"
#endif

Options parse(int argc, char** argv) {
    Options o;
    for (int k = 1; k < argc; k++) {
        std::string a = argv[k];
        auto value = [&]() -> const char* {
            if (k + 1 >= argc) {
                std::fprintf(stderr, "native device: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++k];
        };
        if (a == "--port-file") o.port_file = value();
        else if (a == "--host") o.host = value();
        else if (a == "--clk-ps") o.clk_ps = std::strtoull(value(), nullptr, 10);
        else if (a == "--divisor") o.divisor = std::atoi(value());
        else if (a == "--sck-cycles") o.sck_cycles = std::atoi(value());
        else if (a == "--port") o.port = std::atoi(value());
        else if (a == "--ctrl-port") o.ctrl_port = std::atoi(value());
        else if (a == "--accept-timeout") o.accept_timeout = std::atof(value());
        else if (a == "--serve") o.serve = true;
        else if (a.rfind("+verilator", 0) == 0) continue;
        else {
            std::fprintf(stderr, "native device: unknown argument %s\n", a.c_str());
            std::exit(2);
        }
    }
    if (o.clk_ps == 0 || o.divisor < 2 || o.sck_cycles < 2) {
        std::fprintf(stderr, "native device: bad clock, divisor or sck-cycles\n");
        std::exit(2);
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse(argc, argv);
    prctl(PR_SET_PDEATHSIG, SIGTERM);   // never outlive the process that started us
    Soc soc;
    soc.ctx->commandArgs(argc, argv);
    Host host;
    g_soc = &soc;
    g_host = &host;
    g_clk_ps = opt.clk_ps;
    host.status = status_json;
    soc.reset();
    if (opt.ctrl_port >= 0) {
        host.srv = Host::listen_on(opt.host, opt.port, 1);
        host.ctrl = Host::listen_on(opt.host, opt.ctrl_port, 4);
    } else {
        // the control port beside the data port (a host that knows one finds the other)
        for (int tries = 0; host.ctrl < 0; tries++) {
            host.srv = Host::listen_on(opt.host, opt.port, 1);
            int next = Host::port_of(host.srv) + 1;
            host.ctrl = next < 65536 ? Host::listen_on(opt.host, next, 4, true) : -1;
            if (host.ctrl < 0) {
                close(host.srv);
                if (opt.port != 0 || tries == 50) {
                    std::fprintf(stderr, "native device: port %d is taken\n", next);
                    return 1;
                }
            }
        }
    }
    char ports[64];
    std::snprintf(ports, sizeof ports, "%d %d\n", Host::port_of(host.srv),
                  Host::port_of(host.ctrl));
    if (opt.port_file) {
        std::string tmp = std::string(opt.port_file) + ".tmp";
        FILE* f = std::fopen(tmp.c_str(), "w");
        if (!f) die("port file");
        std::fputs(ports, f);
        std::fclose(f);
        if (std::rename(tmp.c_str(), opt.port_file) != 0) die("port file");
    } else {
        std::fputs(ports, stdout);
        std::fflush(stdout);
    }
    do {
        if (!host.accept_host(opt.serve ? -1.0 : opt.accept_timeout)) {
            std::fprintf(stderr, "native device: no host connected\n");
            return 1;
        }
        session(soc, host, opt);
        host.hang_up();
        if (opt.serve) drain(soc);
    } while (opt.serve);
    soc.top->final();
    return 0;
}
