"""Helpers of the reliability suite: servers on 127.0.0.1, waiting for conditions, the long forms' knobs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from latcomp.service.server import ServerConfig, ServerThread

REPO = Path(__file__).resolve().parents[2]


def serve(engine, **config) -> ServerThread:
    """A ServerThread on 127.0.0.1 with a free port and the given ServerConfig fields."""
    return ServerThread(engine, ServerConfig(host="127.0.0.1", port=0, **config))


def until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"{what} not reached within {timeout} s"
        time.sleep(0.002)


def env_number(name: str, default: float) -> float:
    """A number from the environment (the long forms' knobs), else the default."""
    value = os.environ.get(name)
    return float(value) if value else default


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def inflight_gauge(server: ServerThread) -> float:
    """latcomp_inflight_requests: RPCs the server is handling."""
    return server.server.metrics.inflight._value.get()


def server_tasks(server: ServerThread) -> int:
    """asyncio tasks alive on the server's event loop (handlers, stream readers, batch executions)."""
    import asyncio

    async def count() -> int:
        return len(asyncio.all_tasks())

    return server.call(count())


def start_process(code: str, *args: str, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """python -c code args..., stdout and stderr to log_path, from the repository root."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=REPO,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_port(log_path: Path, process: subprocess.Popen, timeout: float = 60.0) -> int:
    """The port a `latcomp serve` log names ("... on 127.0.0.1:PORT ...")."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        match = re.search(r"on 127\.0\.0\.1:(\d+)", log_path.read_text())
        if match:
            return int(match.group(1))
        assert process.poll() is None, log_path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"server did not start:\n{log_path.read_text()}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def self_signed(directory: Path, stem: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, private, serialization.NoEncryption()))
    return cert_path, key_path
