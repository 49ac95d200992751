"""No lock-out before auth: idle streams held by other connections (EditStream, health Watch, reflection,
with and without a token) never keep a health Check or an edit from a new connection from being answered
in their usual time; the stream limits (global, per connection, without a token) and the idle timeout hold.

Short form: 200 idle streams over 8 connections; long form (-m long): 1,000 over 20.
"""

from __future__ import annotations

import statistics
import time

import pytest

from latcomp.service.admission import AdmissionLimits
from latcomp.service.client import Client

from .streams import StreamHolder, raise_fd_limit
from .support import image, serve, until

TOKEN = "lockout-test-token-0123456789"
BEARER = (("authorization", f"Bearer {TOKEN}"),)


def _timed(call, repeats: int = 5) -> float:
    """Median seconds of `repeats` calls (each must succeed)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _usual_latency(target: str, token: str | None, picture) -> tuple[float, float]:
    with Client(target, token=token, timeout=10) as client:  # a connection of its own
        assert client.health() == "SERVING"
        client.inpaint(picture)
        return _timed(client.health), _timed(lambda: client.inpaint(picture))


def _held_streams(count: int, channels: int, auth: bool, engine) -> None:
    raise_fd_limit(4 * count + 256)
    picture = image(engine.resolution, engine.resolution)
    limits = AdmissionLimits(max_streams=count + 64)
    with serve(engine, auth_token=TOKEN if auth else None, admission=limits) as server:
        admission = server.server.admission
        token = TOKEN if auth else None
        health_before, edit_before = _usual_latency(server.target, token, picture)
        with StreamHolder(server.target, channels) as holder:
            kinds = ("edit", "watch", "reflection")
            for index, kind in enumerate(kinds):
                share = count // len(kinds) + (index < count % len(kinds))
                held, ended = holder.open(share, kind, BEARER if auth else ())
                assert held == share and not ended, (kind, held, ended)
            if auth:  # callers without a token on top: refused, or a few anonymous Watches at most
                for kind in kinds:
                    held, ended = holder.open(40, kind, refused=24 if kind == "watch" else 40)
                    if kind == "watch":
                        assert held == limits.max_anonymous_streams, (held, ended)
                        assert ended == {"RESOURCE_EXHAUSTED": 40 - held}, ended
                    else:
                        assert held == 0 and ended == {"UNAUTHENTICATED": 40}, (kind, ended)
            expected = count + (limits.max_anonymous_streams if auth else 0)
            until(lambda: admission.streams == expected, 30, f"{expected} streams held by the server")
            health_during, edit_during = _usual_latency(server.target, token, picture)
            codes = {"open": expected}
            if auth:
                codes.update(RESOURCE_EXHAUSTED=40 - limits.max_anonymous_streams, UNAUTHENTICATED=80)
            assert holder.codes() == codes
        until(lambda: admission.streams == 0, 30, "the streams closed")
    print(f"{expected} idle streams over {channels} connections (auth {'on' if auth else 'off'}): health "
          f"{health_before * 1000:.1f} -> {health_during * 1000:.1f} ms, inpaint {edit_before * 1000:.1f} -> "
          f"{edit_during * 1000:.1f} ms (medians of 5, a new connection)")  # fmt: skip
    # the usual latency: the same order as without the streams (loose: the machine is shared)
    assert health_during < max(0.25, 10 * health_before), (health_before, health_during)
    assert edit_during < max(0.5, 10 * edit_before), (edit_before, edit_during)


@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_idle_streams_do_not_lock_out_health_or_edits(engine, auth):
    _held_streams(200, 8, auth, engine)


@pytest.mark.long
@pytest.mark.parametrize("auth", [False, True], ids=["auth-off", "auth-on"])
def test_a_thousand_idle_streams_do_not_lock_out_health_or_edits(engine, auth):
    _held_streams(1000, 20, auth, engine)


def test_stream_limits_per_connection_in_all_and_without_a_token(engine):
    limits = AdmissionLimits(max_streams=12, max_streams_per_connection=5, max_anonymous_streams=3)
    picture = image(engine.resolution, engine.resolution)
    with serve(engine, auth_token=TOKEN, admission=limits) as server:
        with StreamHolder(server.target, 1) as one:
            # per connection, then in all, then without a token
            assert one.open(7, "edit", BEARER, refused=2) == (5, {"RESOURCE_EXHAUSTED": 2})
            with StreamHolder(server.target, 4) as four:
                assert four.open(8, "reflection", BEARER, refused=1) == (7, {"RESOURCE_EXHAUSTED": 1})
                with Client(server.target, token=TOKEN) as client:  # unary calls are never counted
                    assert client.health() == "SERVING" and client.inpaint(picture).image is not None
                assert server.server.metrics.refused.labels("streams")._value.get() == 1
        with StreamHolder(server.target, 5) as anonymous:
            assert anonymous.open(5, "watch", refused=2) == (3, {"RESOURCE_EXHAUSTED": 2})
            assert anonymous.open(2, "watch", BEARER) == (2, {})  # with one: not anonymous
        until(lambda: server.server.admission.streams == 0, 10, "the streams closed")


def test_idle_streams_end(engine):
    with serve(engine, admission=AdmissionLimits(stream_idle_s=0.5)) as server:
        with StreamHolder(server.target, 2) as holder:
            holder.open(1, "edit")
            holder.open(1, "watch")
            holder.open(1, "reflection")
            until(lambda: all(call.done() for call in holder.calls), 10, "idle streams ended")
            # a Watch only receives: it ends OK after the idle time and the watcher opens a new one
            assert holder.codes() == {"DEADLINE_EXCEEDED": 2, "OK": 1}
        assert server.server.admission.streams == 0
