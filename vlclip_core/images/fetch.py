"""The one place images are fetched: scheme allow-list, local-root confinement, size caps, HTTP retries."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from urllib3.exceptions import ReadTimeoutError

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_RETRY_4XX = (408, 429)  # request timeout / too many requests: transient, worth a retry
_USERINFO = re.compile(r"//[^/@\s'\"]+@")
_QUERY = re.compile(r"\?[^\s'\")]*")
_local = threading.local()


class _Transient(Exception):
    """A failure worth retrying; becomes an ItemError with this type when retries run out."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def fetch_bytes(uri: str, cfg: ImageConfig) -> bytes:
    """Return the bytes at `uri` (a local path, file://, http(s):// or an fsspec URL), or raise ItemError.

    Plain paths count as scheme "file"; relative ones resolve against the working directory, and with
    cfg.local_root set the real path (symlinks and .. resolved) must lie under it. HTTP 5xx, 408, 429,
    connection errors and timeouts are retried cfg.retries times (backoff cfg.backoff_s, doubling);
    other 4xx are not. Messages never carry URL user info or query strings.
    Error types: scheme_not_allowed, scheme_unavailable, path_not_allowed, missing_file, not_a_file,
    read_error, too_large, empty_file, http_<code>, connection_error, timeout.
    """
    scheme = uri_scheme(uri)
    if not _allowed(scheme, cfg):
        raise ItemError(
            "scheme_not_allowed", f"scheme {scheme!r} is not in images.allowed_schemes: {redact_uri(uri)}"
        )
    if scheme == "file":
        data = _read_local(_local_path(uri, cfg), cfg)
    elif scheme in ("http", "https"):
        data = _fetch_http(uri, cfg)
    else:
        data = _fetch_fsspec(uri, scheme, cfg)
    if not data:
        raise ItemError("empty_file", f"zero bytes at {redact_uri(uri)}")
    return data


def _allowed(scheme: str, cfg: ImageConfig) -> bool:
    return scheme in {s.lower() for s in cfg.allowed_schemes}


def uri_scheme(uri: str) -> str:
    """Lower-case scheme of `uri`; plain paths (including Windows drive paths) are 'file'."""
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError as err:
        raise ItemError("bad_uri", f"unparseable URI: {err}") from err
    return "file" if len(scheme) <= 1 else scheme


def redact_uri(uri: str) -> str:
    """`uri` without user info, query string and fragment, safe to log or store."""
    try:
        parts = urlsplit(uri)
        if len(parts.scheme) <= 1:
            return uri
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable URI>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def scrub(text: str) -> str:
    """Remove URL user info and query strings from a library's error text."""
    return _QUERY.sub("", _USERINFO.sub("//", text))


# --- local files -----------------------------------------------------------------------------


def _local_path(uri: str, cfg: ImageConfig) -> str:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise ItemError("path_not_allowed", f"file URI names a remote host: {redact_uri(uri)}")
        path = unquote(parts.path)
    else:
        path = uri
    if "\x00" in path:
        raise ItemError("bad_uri", "path contains a NUL byte")
    real = os.path.realpath(path)
    if cfg.local_root and not _is_under(real, os.path.realpath(cfg.local_root)):
        raise ItemError("path_not_allowed", f"{path} resolves outside images.local_root")
    return real


def _is_under(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _read_local(path: str, cfg: ImageConfig) -> bytes:
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > cfg.max_bytes:
                raise ItemError("too_large", f"{path} is over images.max_bytes={cfg.max_bytes}")
            data = fh.read(cfg.max_bytes + 1)
    except FileNotFoundError as err:
        raise ItemError("missing_file", f"no such file: {path}") from err
    except IsADirectoryError as err:
        raise ItemError("not_a_file", f"{path} is a directory") from err
    except OSError as err:
        raise ItemError("read_error", f"{path}: {type(err).__name__}: {err.strerror or err}") from err
    return _capped(data, path, cfg)


def _capped(data: bytes, where: str, cfg: ImageConfig) -> bytes:
    if len(data) > cfg.max_bytes:
        raise ItemError("too_large", f"{where} is over images.max_bytes={cfg.max_bytes}")
    return data


# --- HTTP ----------------------------------------------------------------------------------


def _fetch_http(uri: str, cfg: ImageConfig) -> bytes:
    for attempt in range(cfg.retries + 1):
        try:
            return _http_once(uri, cfg)
        except _Transient as err:
            if attempt == cfg.retries:
                raise ItemError(err.error_type, err.message) from err
            delay = cfg.backoff_s * (2**attempt)
            log.info(
                "fetch %s: %s (attempt %d of %d), retrying in %.2fs",
                redact_uri(uri),
                err.error_type,
                attempt + 1,
                cfg.retries + 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the retry loop returns or raises")


def _http_once(uri: str, cfg: ImageConfig) -> bytes:
    where = redact_uri(uri)
    try:
        with _session().get(uri, stream=True, timeout=(cfg.connect_timeout_s, cfg.read_timeout_s)) as resp:
            _check_response(resp, where, cfg)
            return _read_body(resp, where, cfg)
    except (requests.Timeout, ReadTimeoutError) as err:
        raise _Transient("timeout", f"{where}: {type(err).__name__}") from err
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as err:
        raise ItemError("bad_uri", f"{where}: {type(err).__name__}") from err
    except requests.ConnectionError as err:
        if _is_read_timeout(err):
            raise _Transient("timeout", f"{where}: read timed out") from err
        raise _Transient("connection_error", f"{where}: {type(err).__name__}: {_reason(err)}") from err
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        raise _Transient("connection_error", f"{where}: {type(err).__name__}: {_reason(err)}") from err


def _session() -> requests.Session:
    """One session per thread, so that a batch reuses connections."""
    if getattr(_local, "session", None) is None:
        session = requests.Session()
        session.max_redirects = 5
        _local.session = session
    return _local.session


def _check_response(resp: requests.Response, where: str, cfg: ImageConfig) -> None:
    if not _allowed(uri_scheme(resp.url), cfg):
        raise ItemError("scheme_not_allowed", f"{where} redirected to a scheme not in images.allowed_schemes")
    code = resp.status_code
    if code >= 500 or code in _RETRY_4XX:
        raise _Transient(f"http_{code}", f"{where}: HTTP {code}")
    if code >= 400:
        raise ItemError(f"http_{code}", f"{where}: HTTP {code}")
    length = _content_length(resp)
    if length is not None and length > cfg.max_bytes:
        raise ItemError(
            "too_large", f"{where}: Content-Length {length} is over images.max_bytes={cfg.max_bytes}"
        )


def _content_length(resp: requests.Response) -> Optional[int]:
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _read_body(resp: requests.Response, where: str, cfg: ImageConfig) -> bytes:
    """Read the (decoded) body one socket read at a time, so that the size cap and the total
    deadline are checked after every read (a slow drip ends after total + read timeout at most)."""
    deadline = time.monotonic() + cfg.total_timeout_s
    chunks, size = [], 0
    while chunk := resp.raw.read1(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > cfg.max_bytes:
            raise ItemError("too_large", f"{where}: body is over images.max_bytes={cfg.max_bytes}")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _Transient(
                "timeout", f"{where}: download took over images.total_timeout_s={cfg.total_timeout_s}"
            )
    return b"".join(chunks)


def _is_read_timeout(err: requests.ConnectionError) -> bool:
    return any(isinstance(arg, ReadTimeoutError) for arg in err.args)


def _reason(err: Exception) -> str:
    """The innermost cause's text, without URLs' secrets (requests' messages repeat the URL)."""
    inner: BaseException = err
    for _ in range(8):
        if inner.__context__ is None:
            break
        inner = inner.__context__
    return scrub(str(inner))[:300]


# --- other schemes through fsspec -----------------------------------------------------------


def _fetch_fsspec(uri: str, scheme: str, cfg: ImageConfig) -> bytes:
    fs = _filesystem(scheme, uri)
    try:
        with fs.open(uri, "rb") as fh:
            data = fh.read(cfg.max_bytes + 1)
    except FileNotFoundError as err:
        raise ItemError("missing_file", f"no such object: {redact_uri(uri)}") from err
    except Exception as err:  # noqa: BLE001 - every backend raises its own types
        detail = f"{type(err).__name__}: {scrub(str(err))[:300]}"
        raise ItemError("read_error", f"{redact_uri(uri)}: {detail}") from err
    return _capped(data, redact_uri(uri), cfg)


def _filesystem(scheme: str, uri: str):
    try:
        import fsspec

        return fsspec.filesystem(scheme)
    except ImportError as err:
        raise ItemError(
            "scheme_unavailable",
            f"scheme {scheme!r} needs a library that is not installed "
            f"({scrub(str(err))[:200]}): {redact_uri(uri)}",
        ) from err
    except ValueError as err:
        raise ItemError(
            "scheme_unavailable", f"no filesystem known for scheme {scheme!r}: {redact_uri(uri)}"
        ) from err
