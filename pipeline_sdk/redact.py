"""Credentials out of messages: every URL or text that reaches an error, a repr or the terminal.

An InfluxDB URL can carry secrets two ways: userinfo (``https://user:pass@host``)
and query values (``?token=...``).  :func:`redact` replaces the userinfo with
``***`` and the value of every query key that looks like a credential (a name
containing token, pass, pwd, secret, key, sig, auth or credential, in any case)
with ``***``, in a URL or anywhere in free text (an exception's message quoting
one).  It keeps the scheme, host, port, path and the other query values, so a
message still says where it went.
"""

from __future__ import annotations

import re

# scheme://userinfo@ : to the last "@" of the URL, so a password holding "@" or "/" is masked whole
# (a path holding "@" is masked with it: hiding too much is the safe side)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s'\"]*@")
# user:password@host with the scheme left out (an email address has no ":" before its "@")
_BARE_USERINFO = re.compile(r"(?<![\w.+\-:/@])[^\s/?#@:'\"]+:(?!//)[^\s'\"]*@(?=[\w\[])")
# a query value whose key names a credential: to the next "&", ";", "#", space or quote
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;][^=&;#\s'\"]*(?:token|pass|pwd|secret|key|sig|auth|credential)[^=&;#\s'\"]*=)"
    r"[^&;#\s'\"]*",
    re.IGNORECASE,
)
MASK = "***"
SECRET_MIN = 8  # characters of a known secret before it is masked by its text (a short one is everywhere)


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it replaced by ``***``."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _BARE_USERINFO.sub(f"{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_secret(text: str, secret: str | None) -> str:
    """:func:`redact`, and any occurrence of ``secret`` (a token sent in a header) masked too."""
    if secret is not None and len(secret) >= SECRET_MIN:
        text = text.replace(secret, MASK)
    return redact(text)


def without_userinfo(url: str) -> str:
    """``url`` without its userinfo: what an HTTP library that ignores userinfo would send anyway."""
    return _URL_USERINFO.sub(lambda m: m["scheme"], url)
