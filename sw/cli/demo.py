"""``deconvsr demo``: upscale a sample photograph through the simulated RTL.

A crop of scikit-image's ``astronaut`` (CC0) is downscaled by the model's factor (bicubic, as
in training) and upscaled back on the simulated accelerator (``--device sim``: the link and
the engine in Verilator, driven over a TCP socket by the same host driver a board uses).
Writes the low-resolution input, the output and a labelled side-by-side comparison (bicubic |
accelerator | difference, enlarged for viewing), shows the simulation's progress in cycles per
second, checks the output bit for bit against the integer golden model and prints timing and
PSNR against the original crop.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..host.compare import labelled_comparison, viewing_scale
from ..host.device import DeviceError, open_device
from ..host.imaging import bicubic_resize, psnr, rgb_to_ycbcr, to_u8
from .main import EXIT_DEVICE, EXIT_INPUT, CLIError
from .progress import sim_progress
from .upscale import load_qlayers, upscale_rgb

__all__ = ["register", "run"]


def register(subparsers):
    p = subparsers.add_parser("demo", help="upscale a sample photograph through the RTL",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="demo-output", help="output directory")
    p.add_argument("--model", default="espcn-paper-x3", help="shipped model name or file")
    p.add_argument("--device", default="sim", help="golden, sim, sim-uart, sim-cocotb, "
                   "serial:PORT")
    p.add_argument("--size", type=int, default=64,
                   help="low-resolution side in pixels (default 64: a 192 x 192 output)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def sample_photo(lr_side: int, scale: int):
    """(HR RGB crop, LR RGB) of the astronaut's face."""
    try:
        from skimage import data    # optional (the test extra ships the photographs)
    except ImportError:
        raise CLIError("the demo needs scikit-image (pip install scikit-image)", EXIT_INPUT) \
            from None
    img = np.asarray(data.astronaut())[..., :3]
    hr = lr_side * scale
    if hr > min(img.shape[:2]):
        raise CLIError(f"--size {lr_side} is too large for the sample photo", EXIT_INPUT)
    y0, x0 = max(0, 150 - hr // 2), max(0, 240 - hr // 2)   # the face
    crop = img[y0:y0 + hr, x0:x0 + hr]
    lr = np.asarray(Image.fromarray(crop).resize((lr_side, lr_side),
                                                 Image.Resampling.BICUBIC))
    return crop, lr


def run(args) -> int:
    if not 4 <= args.size <= 170:
        raise CLIError(f"--size must be in 4..170, not {args.size}", EXIT_INPUT)
    net, qlayers = load_qlayers(args.model)
    hr, lr = sample_photo(args.size, net.scale)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lr).save(out_dir / "input.png")
    # The integer golden model's Y plane, computed meanwhile (the simulator is another process).
    golden = {}
    golden_thread = threading.Thread(target=_golden_y, args=(qlayers, net.scale, lr, golden))
    golden_thread.start()
    t0 = time.perf_counter()
    try:
        device = open_device(args.device)
        t_open = time.perf_counter() - t0
        try:
            t1 = time.perf_counter()
            expected = _expected_cycles(net, qlayers, device, lr.shape[:2])
            with sim_progress(device, expected, desc="simulated RTL",
                              enable=False if args.json else None):
                out, y_hr, ycc = upscale_rgb(device, qlayers, net.scale, lr)
            t_run = time.perf_counter() - t1
            counters = device.counters()
        finally:
            device.close()
    except DeviceError as e:
        raise CLIError(str(e), EXIT_DEVICE) from None
    finally:
        golden_thread.join()
    # The accelerator's Y plane must equal the integer golden model's, bit for bit.
    y_golden = golden["y"]
    bit_exact = bool(np.array_equal(y_golden, y_hr))
    Image.fromarray(out).save(out_dir / "output.png")
    side = max(out.shape[:2])
    Image.fromarray(labelled_comparison(lr, out, diff_gain=4, enlarge=viewing_scale(side))).save(
        out_dir / "compare.png")
    y_ref = to_u8(rgb_to_ycbcr(hr)[..., 0])
    y_bic = to_u8(bicubic_resize(to_u8(ycc[..., 0]), y_hr.shape[::-1]))
    s = net.scale
    summary = {"model": net.name, "device": args.device, "input": list(lr.shape[1::-1]),
               "output": list(out.shape[1::-1]), "bit_exact_with_golden": bit_exact,
               "device_start_s": round(t_open, 2),
               "upscale_s": round(t_run, 2),
               "psnr_y_db": {"accelerator": round(psnr(y_ref, y_hr, border=s), 3),
                             "bicubic": round(psnr(y_ref, y_bic, border=s), 3)},
               "files": [str(out_dir / n) for n in ("input.png", "output.png", "compare.png")],
               "counters": counters}
    stats = getattr(device, "stats", None)
    if stats:
        summary["transfer"] = stats
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(f"upscaled a {args.size}x{args.size} crop of skimage 'astronaut' x{s} with "
              f"{net.name} on {args.device}")
        print(f"  device start {t_open:.1f} s (includes the Verilator build on a fresh clone), "
              f"upscale {t_run:.1f} s")
        if "cycles_busy" in counters:
            print(f"  engine cycles {counters['cycles_busy']:,}")
        sim_ps = sum(stats["sim_ps"].values()) if stats and "sim_ps" in stats else 0
        if sim_ps and t_run > 0:
            cycles = sim_ps * 1e-12 * device.info.describe()["link_clk_hz"]
            print(f"  simulated {cycles:,.0f} cycles in {t_run:.1f} s: "
                  f"{cycles / t_run:,.0f} cycles/s")
        p = summary["psnr_y_db"]
        print(f"  PSNR (Y) vs the original: accelerator {p['accelerator']:.2f} dB, "
              f"bicubic {p['bicubic']:.2f} dB")
        print(f"  bit-exact with the integer golden model: {'yes' if bit_exact else 'NO'}")
        print(f"  wrote {', '.join(summary['files'])}")
    if not bit_exact:
        raise CLIError(f"the {args.device} output differs from the golden model in "
                       f"{int(np.count_nonzero(y_golden != y_hr))} pixels", EXIT_DEVICE)
    return 0


def _golden_y(qlayers, scale, lr, result):
    golden = open_device("golden")
    try:
        result["y"] = upscale_rgb(golden, qlayers, scale, lr)[1]
    finally:
        golden.close()


def _expected_cycles(net, qlayers, device, shape) -> int | None:
    """About how many cycles the simulated device will run: the engine's MACs over its lanes
    (it keeps them ~97% busy) and a byte a cycle for the program's setup, input and output
    (the stream top). Only the progress bar's total."""
    info = getattr(device, "info", None)
    if info is None:
        return None
    h, w = shape
    engine = net.macs_per_lr_pixel * h * w / info.spec.lanes / 0.97
    weights = sum(q.weight.size for q in qlayers)
    return int(engine + weights + h * w * (1 + net.scale ** 2))
