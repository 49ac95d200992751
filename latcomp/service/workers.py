"""`latcomp serve --workers N`: N serving processes on one machine sharing the gRPC port (SO_REUSEPORT).

Each worker is a whole `latcomp serve` (its own engine, batcher, admission, health and metrics); the kernel
spreads new connections over them, so N Python processes take N GILs' worth of decoding, compositing and
encoding. The supervisor here starts them with the same flags, worker i's metrics on --metrics-port + i
(each worker labels its log lines), forwards SIGTERM/SIGINT so every worker drains as a single server would,
and exits with the worst status. If a worker dies on its own, the others are drained and stopped and the
supervisor exits 1, so the orchestrator restarts the whole set.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

WORKER_ENV = "LATCOMP_WORKER"  # set in each worker: its index, shown in its log lines


def free_port(host: str) -> int:
    """A port free on host right now (for --port 0: every worker must bind the same one)."""
    address = host[1:-1] if host.startswith("[") else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def worker_argv(argv: list[str], port: int, metrics_port: int | None, index: int) -> list[str]:
    """`latcomp serve` arguments of worker `index`: argv without --workers, --port, --metrics-port and
    --reuse-port, then those set for this worker."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--workers", "--port", "--metrics-port"):
            skip = "=" not in arg
            continue
        if name == "--reuse-port":
            continue
        kept.append(arg)
    kept += ["--port", str(port), "--reuse-port"]
    if metrics_port is not None:
        kept += ["--metrics-port", str(metrics_port + index if metrics_port else 0)]
    return kept


def supervise(argv: list[str], workers: int, host: str, port: int, metrics_port: int | None) -> int:
    """Runs `workers` copies of `latcomp serve argv` on one port until SIGTERM/SIGINT; their worst status."""
    port = port or free_port(host)
    print(f"latcomp serve: {workers} workers on port {port} (SO_REUSEPORT)", file=sys.stderr, flush=True)
    processes = []
    for index in range(workers):
        env = {**os.environ, WORKER_ENV: str(index)}
        command = [sys.executable, "-m", "latcomp", "serve", *worker_argv(argv, port, metrics_port, index)]
        processes.append(subprocess.Popen(command, env=env))
    stopping = []

    def forward(number, _frame) -> None:
        stopping.append(number)
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, forward)
    status = 0
    while any(process.poll() is None for process in processes):
        if not stopping and any(process.poll() is not None for process in processes):
            dead = [index for index, process in enumerate(processes) if process.poll() is not None]
            print(f"latcomp serve: worker {dead[0]} exited ({processes[dead[0]].returncode}); stopping the "
                  "others", file=sys.stderr, flush=True)  # fmt: skip
            status = 1
            forward(signal.SIGTERM, None)
        time.sleep(0.1)
    codes = [process.returncode for process in processes]
    return max([status, *(code if code >= 0 else 1 for code in codes)])
