"""One redaction function for everything the tool prints or logs: error messages and log lines.

A platform token or a hashed identifier must never reach a terminal, a log collector or a ticket
pasted from either. What "looks like a token" is judged by shape, not by knowing the token: a long
run of token characters mixing upper case, lower case and digits (Meta's ``EAA...`` tokens, Google's
developer tokens), a long hexadecimal run (TikTok's access tokens, SHA-256 hashes of identifiers),
and the well-known prefixes (Google's ``ya29.`` access and ``1//`` refresh tokens, ``Bearer ...``).
File paths, key paths and words stay readable, so a message still names its file, key or row.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_PREFIXED = re.compile(r"(?:\bya29\.[\w.\-]+|\b1//[\w.\-/]+|\bBearer\s+\S+|\bEAA[A-Za-z0-9]{10,})")
_RUN = re.compile(r"[A-Za-z0-9_\-]{20,}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_HEX_RUN = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")


def _looks_like_token(run: str) -> bool:
    if _HEX.fullmatch(run):
        return True
    has_digit = any(c.isdigit() for c in run)
    has_upper = any(c.isupper() for c in run)
    has_lower = any(c.islower() for c in run)
    return has_digit and has_upper and has_lower


def redact(text: str) -> str:
    """``text`` with everything that looks like a token or a hash replaced by ``[redacted]``."""
    text = _PREFIXED.sub(REDACTED, text)
    text = _HEX_RUN.sub(REDACTED, text)
    return _RUN.sub(lambda m: REDACTED if _looks_like_token(m.group(0)) else m.group(0), text)


def looks_like_secret(value: str) -> bool:
    """True when ``value`` could be a token rather than an environment variable's name: anything
    redaction would hide, or anything that is not an upper-case ``NAME_LIKE_THIS``."""
    return redact(value) != value or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value)
