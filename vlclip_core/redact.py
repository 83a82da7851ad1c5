"""The one redaction helper: URLs without credentials or query strings, error texts without secrets."""

from __future__ import annotations

import re
from typing import Iterable, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
_USERINFO = re.compile(r"//[^/@\s'\"]+@")
_QUERY = re.compile(r"\?[^\s'\")]*")
_AUTH = re.compile(r"(?i)\b(bearer\s+|authorization[\"']?\s*[:=]\s*[\"']?(?:basic\s+|bearer\s+)?)[^\s\"',}]+")


def redact_uri(uri: str) -> str:
    """`uri` without user info, query string and fragment, safe to log or store.

    >>> redact_uri("https://u:p@cdn.example.com:8443/a.jpg?sig=1#f")
    'https://cdn.example.com:8443/a.jpg'

    Plain paths are returned as they are; a URI that does not parse becomes "<unparseable URI>".
    """
    try:
        parts = urlsplit(uri)
        if len(parts.scheme) <= 1:
            return uri
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable URI>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def scrub(text: str, secrets: Iterable[Optional[str]] = ()) -> str:
    """`text` (a library's error message, a server's reply) without URL user info, query strings,
    Authorization header values and each of `secrets` (also in its percent-decoded form)."""
    text = _AUTH.sub(lambda m: m.group(1) + MASK, _QUERY.sub("", _USERINFO.sub("//", str(text))))
    for secret in secrets:
        for form in {secret, unquote(secret)} if secret else ():
            if len(form) >= 4:
                text = text.replace(form, MASK)
    return text


def url_secrets(url: Optional[str]) -> tuple:
    """The user name, password and query string of `url`: the parts `scrub` must also remove when a
    message quotes them without the URL around them."""
    if not url:
        return ()
    try:
        parts = urlsplit(url)
        user, found = parts.username, (parts.password, parts.query)
    except ValueError:
        return ()
    if user and len(user) >= 8:  # a token sent as the user name; short names are left readable
        found += (user,)
    return tuple(s for s in found if s)
