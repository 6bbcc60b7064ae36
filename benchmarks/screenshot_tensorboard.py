"""Screenshots of TensorBoard's custom-scalars page (the Health view) in headless Chromium.

For each NAME=RUN_DIR: start the venv's TensorBoard on RUN_DIR (localhost, a free port), wait
until it serves the run list, take a full-page PNG of the custom-scalars page with Debian's
`chromium` (`apt-get install -y chromium` where it is missing), stop TensorBoard. The PNGs go
to --out (default docs/img/) as tensorboard_health_<NAME>.png.

    python benchmarks/screenshot_tensorboard.py default=runs/CartPole-v1/cartpole__seed0__... \
        layernorm=... batchnorm=... [--out docs/img] [--height 1750]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(name: str, logdir: str, port: int) -> subprocess.Popen:
    """TensorBoard on one run folder, named `name` (its siblings: name/policy, name/value)."""
    exe = Path(sys.executable).with_name("tensorboard")
    argv = [str(exe), "--logdir_spec", f"{name}:{logdir}", "--port", str(port)]
    argv += ["--host", "127.0.0.1"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data/runs"
    for _ in range(120):  # TensorBoard loads the event files after it starts serving
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if len(json.load(r)) >= 1:
                    time.sleep(3)  # the first scan reads every run; give it a moment more
                    return server
        except OSError:
            pass
        time.sleep(1)
    server.terminate()
    raise RuntimeError(f"TensorBoard on {logdir} did not serve its runs within 2 minutes")


def screenshot(port: int, png: Path, width: int, height: int) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: `apt-get install -y chromium` (Debian)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # running as root in a container
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--virtual-time-budget=20000",  # let the page's scripts fetch and draw charts
                f"--screenshot={png}",
                f"http://127.0.0.1:{port}/?darkMode=false#custom_scalars",
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=1750)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for item in args.runs:
        name, _, run_dir = item.partition("=")
        port = free_port()
        server = start_tensorboard(name, run_dir, port)
        try:
            png = out / f"tensorboard_health_{name}.png"
            screenshot(port, png, args.width, args.height)
            print(f"{png} ({png.stat().st_size // 1024} KiB) from {run_dir}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
