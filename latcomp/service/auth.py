"""Bearer tokens: what a usable token is, and checking `authorization` headers in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

MIN_TOKEN_CHARS = 16  # shorter tokens are refused at start-up: guessable


def check_token(token: str, source: str = "the token") -> str:
    """The token if it is usable as a bearer token, else ValueError naming `source` and the problem."""
    if not token or not token.strip():
        raise ValueError(f"{source} is empty" if not token else f"{source} holds only whitespace")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{source} has {len(token)} characters; at least {MIN_TOKEN_CHARS} are required")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ValueError(f"{source} must be printable ASCII without spaces (it travels in an HTTP header)")
    return token


def configured_token(token_file: str | Path | None) -> str | None:
    """The bearer token a command is configured with: the content of `token_file` (without its trailing
    newline), else env LATCOMP_AUTH_TOKEN, else None. ValueError naming the file (or variable) and the
    problem when it is unusable, so a bad token configuration never silently means "no auth"."""
    if token_file is not None:
        source = f"--auth-token-file {token_file}"
        try:
            text = Path(token_file).read_text()
        except FileNotFoundError:
            raise ValueError(f"{source}: no such file") from None
        except IsADirectoryError:
            raise ValueError(f"{source}: is a directory, not a file") from None
        except PermissionError:
            raise ValueError(f"{source}: not readable (permission denied)") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"{source}: cannot be read ({type(error).__name__})") from None
        return check_token(text.removesuffix("\n").removesuffix("\r"), source)
    if "LATCOMP_AUTH_TOKEN" in os.environ:
        return check_token(os.environ["LATCOMP_AUTH_TOKEN"], "env LATCOMP_AUTH_TOKEN")
    return None


class BearerToken:
    """The expected token, kept as its SHA-256 digest: comparing digests (equal lengths) with
    hmac.compare_digest takes the same time whatever the caller sent, its length included."""

    def __init__(self, token: str):
        self._digest = _digest(check_token(token).encode())

    def matches(self, header: str | bytes) -> bool:
        """Whether an `authorization` header value is exactly `Bearer <token>`."""
        given = header.encode() if isinstance(header, str) else bytes(header)
        scheme, _, token = given.partition(b" ")
        # the digest comparison runs whatever the scheme, so a wrong scheme takes as long as a wrong token
        return hmac.compare_digest(_digest(token), self._digest) and scheme == b"Bearer"


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
