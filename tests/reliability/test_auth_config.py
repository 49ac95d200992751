"""Auth that cannot silently switch off, and a metrics port bounded like the gRPC port.

`latcomp serve` with a token file that is empty, whitespace, missing, unreadable or too short refuses to
start (exit 2, naming the file and the problem); the start-up log always states the auth and TLS mode;
tokens are compared with hmac.compare_digest; /metrics binds to the serving host, requires the token, and
slow or half-sent HTTP requests time out without piling up threads.
"""

from __future__ import annotations

import hmac
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from unittest import mock

import pytest

from latcomp.service import metrics as metrics_module
from latcomp.service.admission import Admission
from latcomp.service.auth import MIN_TOKEN_CHARS

from .support import REPO, serve, start_process, stop_process, until, wait_for_port

TOKEN = "auth-config-test-token-42"


def _serve_command(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "LATCOMP_AUTH_TOKEN"}
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "latcomp", "serve", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_a_bad_token_file_refuses_to_start(small_bundle, tmp_path):
    files = {
        "is empty": "",
        "holds only whitespace": "  \n\t \n",
        f"has 5 characters; at least {MIN_TOKEN_CHARS}": "short\n",
        "without spaces": "a token with spaces in it\n",
    }
    cases = {}
    for problem, content in files.items():
        path = tmp_path / f"token-{len(cases)}"
        path.write_text(content)
        cases[str(path)] = problem
    cases[str(tmp_path / "missing")] = "no such file"
    cases[str(tmp_path)] = "is a directory"
    if os.geteuid() != 0:  # root reads any file
        unreadable = tmp_path / "unreadable"
        unreadable.write_text(TOKEN)
        unreadable.chmod(0)
        cases[str(unreadable)] = "not readable"
    for path, problem in cases.items():
        result = _serve_command(str(small_bundle), "--port", "0", "--auth-token-file", path)
        assert result.returncode == 2, (path, result.stderr)
        assert path in result.stderr and problem in result.stderr, (problem, result.stderr)
        assert "Traceback" not in result.stderr
    result = _serve_command(str(small_bundle), "--port", "0", env={"LATCOMP_AUTH_TOKEN": "too-short"})
    assert result.returncode == 2 and "LATCOMP_AUTH_TOKEN" in result.stderr, result.stderr


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_the_start_up_log_states_auth_and_tls(small_bundle, tmp_path, monkeypatch, auth):
    monkeypatch.delenv("LATCOMP_AUTH_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    log_path = tmp_path / "serve.log"
    args = ["serve", str(small_bundle), "--host", "127.0.0.1", "--port", "0", "--drain-delay-s", "0"]
    if auth:
        args += ["--auth-token-file", str(token_file)]
    code = "import sys\nfrom latcomp.cli import main\nsys.exit(main(sys.argv[1:]))"
    process = start_process(code, *args, log_path=log_path)
    try:
        wait_for_port(log_path, process)
        until(lambda: "TLS off" in log_path.read_text(), 30, "the security line")
    finally:
        stop_process(process)
    log = log_path.read_text()
    assert ("auth on (bearer token)" if auth else "auth OFF") in log and "TLS off (plaintext)" in log, log


def test_tokens_are_compared_with_compare_digest(engine):
    admission = Admission(token=TOKEN)
    with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
        assert admission.authenticated((("authorization", f"Bearer {TOKEN}"),))
        assert not admission.authenticated((("authorization", "Bearer x"),))
        assert not admission.authenticated((("authorization", f"Basic {TOKEN}"),))
        # every header is compared (digests of equal length), the scheme only after
        assert compare.call_count == 3
        assert all(len(call.args[0]) == len(call.args[1]) == 32 for call in compare.call_args_list)
    with serve(engine, auth_token=TOKEN, metrics_port=0) as server:
        url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
        with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as compare:
            _scrape(url, TOKEN)
            assert compare.call_count == 1


def _scrape(url: str, token: str | None, timeout: float = 10.0) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # closed at once: the slots are full
        return 0, ""


def _threads(prefix: str = "") -> int:
    return sum(thread.name.startswith(prefix) for thread in threading.enumerate())


def test_the_metrics_port_binds_the_serving_host_requires_the_token_and_bounds_slow_clients(engine):
    with serve(engine, auth_token=TOKEN, metrics_port=0) as server:
        port = server.server.metrics_port
        assert server.server.metrics._http.server_address[0] == "127.0.0.1"  # the serving host
        url = f"http://127.0.0.1:{port}/metrics"
        assert _scrape(url, None)[0] == 401 and _scrape(url, "wrong-token-xxxxxxxxxx")[0] == 401
        status, text = _scrape(url, TOKEN)
        assert status == 200 and "latcomp_requests_total" in text
        baseline = threading.active_count()
        slow = []
        for _ in range(4 * metrics_module.MAX_HTTP_CONNECTIONS):  # half-sent requests
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            slow.append(connection)
        time.sleep(0.5)
        # the handler threads are bounded, the rest of the connections closed at once
        assert threading.active_count() <= baseline + metrics_module.MAX_HTTP_CONNECTIONS
        started = time.monotonic()
        timeout = metrics_module.HTTP_TIMEOUT_S
        until(lambda: _scrape(url, TOKEN, timeout=2)[0] == 200, timeout + 10, "a scrape")
        assert time.monotonic() - started < metrics_module.HTTP_TIMEOUT_S + 5  # the slow ones timed out
        for connection in slow:  # every one closed by the server: at once, or after the timeout
            connection.settimeout(metrics_module.HTTP_TIMEOUT_S + 5)
            try:
                assert connection.recv(1024) == b""
            except ConnectionResetError:
                pass
            connection.close()
        assert threading.active_count() <= baseline + 1
    open_metrics = {"metrics_port": 0, "metrics_auth": False, "metrics_host": "127.0.0.1"}
    with serve(engine, auth_token=TOKEN, **open_metrics) as server:
        assert _scrape(f"http://127.0.0.1:{server.server.metrics_port}/metrics", None)[0] == 200
