"""The one place images are fetched: scheme allow-list, address checks, regular local files, caps, retries."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

import urllib3.exceptions

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError
from vlclip_core.images import netpolicy, safe_http
from vlclip_core.redact import redact_uri, scrub

__all__ = ["fetch_bytes", "redact_uri", "uri_scheme"]

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_FSSPEC_BLOCK = 1024 * 1024  # fsspec read-ahead: a small multiple of the chunk, never the whole object
_RETRY_4XX = (408, 429)  # request timeout / too many requests: transient, worth a retry
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(
    os, "O_CLOEXEC", 0
)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class _Transient(Exception):
    """A failure worth retrying; becomes an ItemError with this type when retries run out."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def fetch_bytes(uri: str, cfg: ImageConfig) -> bytes:
    """Return the bytes at `uri` (a local path, file://, http(s):// or an fsspec URL), or raise ItemError.

    Plain paths count as scheme "file"; relative ones resolve against the working directory, and with
    cfg.local_root set the real path (symlinks and .. resolved) must lie under it; only regular files
    are read (never FIFOs, devices, sockets or directories). HTTP(S) goes through images/safe_http.py:
    every hop's address is checked and pinned, redirects are followed by hand. HTTP 5xx, 408, 429,
    connection errors and timeouts are retried cfg.retries times (backoff cfg.backoff_s, doubling);
    other 4xx are not; fsspec URLs (s3://, gs://, ...) get the same retries, the byte cap and a total
    deadline of cfg.total_timeout_s per attempt. Messages never carry URL user info or query strings.
    Error types: scheme_not_allowed, scheme_unavailable, path_not_allowed, missing_file, not_a_file,
    read_error, too_large, empty_file, http_<code>, connection_error, timeout, address_not_allowed,
    too_many_redirects, tls_error, bad_uri.
    """
    scheme = uri_scheme(uri)
    if not _allowed(scheme, cfg):
        raise ItemError(
            "scheme_not_allowed", f"scheme {scheme!r} is not in images.allowed_schemes: {redact_uri(uri)}"
        )
    if scheme == "file":
        data = _read_local(_local_path(uri, cfg), cfg)
    elif scheme in ("http", "https"):
        data = _retrying(uri, cfg, lambda: _http_once(uri, cfg))
    else:
        fs = _filesystem(scheme, uri, cfg)
        data = _retrying(uri, cfg, lambda: _fsspec_once(fs, uri, cfg))
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


def _retrying(uri: str, cfg: ImageConfig, attempt_once: Callable[[], bytes]) -> bytes:
    for attempt in range(cfg.retries + 1):
        try:
            return attempt_once()
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
    """Read a regular file: checked with stat before opening (opening a device can have effects of its
    own), opened non-blocking and without following a symlink, and checked again on the open file."""
    try:
        _check_regular(os.stat(path), path)
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as err:
        raise ItemError("missing_file", f"no such file: {path}") from err
    except OSError as err:
        raise ItemError("read_error", f"{path}: {type(err).__name__}: {err.strerror or err}") from err
    with os.fdopen(fd, "rb") as fh:
        return _read_open_file(fh, path, cfg)


def _read_open_file(fh, path: str, cfg: ImageConfig) -> bytes:
    try:
        info = os.fstat(fh.fileno())
        _check_regular(info, path)
        if info.st_size > cfg.max_bytes:
            raise ItemError("too_large", f"{path} is over images.max_bytes={cfg.max_bytes}")
        data = fh.read(cfg.max_bytes + 1)
    except OSError as err:
        raise ItemError("read_error", f"{path}: {type(err).__name__}: {err.strerror or err}") from err
    return _capped(data, path, cfg)


def _check_regular(info: os.stat_result, path: str) -> None:
    if stat.S_ISREG(info.st_mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a regular file")
    raise ItemError("not_a_file", f"{path} is {kind}, not a regular file")


def _capped(data: bytes, where: str, cfg: ImageConfig) -> bytes:
    if len(data) > cfg.max_bytes:
        raise ItemError("too_large", f"{where} is over images.max_bytes={cfg.max_bytes}")
    return data


# --- HTTP ----------------------------------------------------------------------------------


def _http_once(uri: str, cfg: ImageConfig) -> bytes:
    where = redact_uri(uri)
    deadline = time.monotonic() + cfg.total_timeout_s
    try:
        resp = safe_http.get(uri, cfg)
        try:
            _check_response(resp, where, cfg)
            return _read_body(resp, where, cfg, deadline)
        finally:
            safe_http.release(resp)
    except netpolicy.UnresolvableHost as err:
        raise _Transient("connection_error", f"{where}: {scrub(str(err))[:300]}") from err
    except urllib3.exceptions.NewConnectionError as err:  # a subclass of ConnectTimeoutError in urllib3 2
        raise _Transient("connection_error", f"{where}: {type(err).__name__}: {_reason(err)}") from err
    except urllib3.exceptions.TimeoutError as err:
        raise _Transient("timeout", f"{where}: {type(err).__name__}") from err
    except urllib3.exceptions.SSLError as err:
        raise ItemError("tls_error", f"{where}: {_reason(err)}") from err
    except urllib3.exceptions.LocationParseError as err:
        raise ItemError("bad_uri", f"{where}: {type(err).__name__}") from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise _Transient("connection_error", f"{where}: {type(err).__name__}: {_reason(err)}") from err


def _check_response(resp, where: str, cfg: ImageConfig) -> None:
    code = resp.status
    if code >= 500 or code in _RETRY_4XX:
        raise _Transient(f"http_{code}", f"{where}: HTTP {code}")
    if code >= 400:
        raise ItemError(f"http_{code}", f"{where}: HTTP {code}")
    length = _content_length(resp)
    if length is not None and length > cfg.max_bytes:
        raise ItemError(
            "too_large", f"{where}: Content-Length {length} is over images.max_bytes={cfg.max_bytes}"
        )


def _content_length(resp) -> Optional[int]:
    try:
        return int(resp.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _read_body(resp, where: str, cfg: ImageConfig, deadline: float) -> bytes:
    """Read the (decoded) body one socket read at a time, so that the size cap and the total
    deadline are checked after every read (a slow drip ends after total + read timeout at most)."""
    chunks, size = [], 0
    while chunk := resp.read1(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > cfg.max_bytes:
            raise ItemError("too_large", f"{where}: body is over images.max_bytes={cfg.max_bytes}")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise _Transient(
                "timeout", f"{where}: download took over images.total_timeout_s={cfg.total_timeout_s}"
            )
    return b"".join(chunks)


def _reason(err: BaseException) -> str:
    """The innermost cause's text, without URLs' secrets (library messages repeat the URL)."""
    inner: BaseException = err
    for _ in range(8):
        if inner.__context__ is None:
            break
        inner = inner.__context__
    return scrub(str(inner))[:300]


# --- other schemes through fsspec -----------------------------------------------------------


def _fsspec_once(fs, uri: str, cfg: ImageConfig) -> bytes:
    """One attempt, run in a helper thread so that a read that never returns still ends the attempt
    after images.total_timeout_s (the thread is abandoned; the backend's own timeouts end it)."""
    outcome: dict = {}
    worker = threading.Thread(
        target=_read_object_into, args=(fs, uri, cfg, outcome), name="vlclip-fsspec-read", daemon=True
    )
    worker.start()
    worker.join(cfg.total_timeout_s)
    if worker.is_alive():
        limit = f"images.total_timeout_s={cfg.total_timeout_s}"
        raise _Transient("timeout", f"{redact_uri(uri)}: no complete read within {limit}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["data"]


def _read_object_into(fs, uri: str, cfg: ImageConfig, outcome: dict) -> None:
    try:
        outcome["data"] = _read_object(fs, uri, cfg)
    except (ItemError, _Transient) as err:
        outcome["error"] = err
    except BaseException as err:  # noqa: BLE001 - every backend raises its own types
        outcome["error"] = _fsspec_error(err, uri)


def _read_object(fs, uri: str, cfg: ImageConfig) -> bytes:
    deadline = time.monotonic() + cfg.total_timeout_s
    where = redact_uri(uri)
    with fs.open(uri, "rb", block_size=_FSSPEC_BLOCK) as fh:
        size = getattr(fh, "size", None)
        if isinstance(size, int) and size > cfg.max_bytes:
            raise ItemError("too_large", f"{where}: size {size} is over images.max_bytes={cfg.max_bytes}")
        chunks, total = [], 0
        while total <= cfg.max_bytes and (chunk := fh.read(min(_CHUNK, cfg.max_bytes + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
            if time.monotonic() > deadline:
                raise _Transient("timeout", f"{where}: read took over images.total_timeout_s")
    return _capped(b"".join(chunks), where, cfg)


_PERMANENT = (PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError)


def _fsspec_error(err: BaseException, uri: str) -> Exception:
    """An fsspec backend's exception as an ItemError (permanent) or a _Transient (worth a retry)."""
    where = redact_uri(uri)
    detail = f"{type(err).__name__}: {scrub(str(err))[:300]}"
    if isinstance(err, FileNotFoundError):
        return ItemError("missing_file", f"no such object: {where}")
    if isinstance(err, TimeoutError):
        return _Transient("timeout", f"{where}: {detail}")
    if isinstance(err, _PERMANENT) or not isinstance(err, Exception):
        return ItemError("read_error", f"{where}: {detail}")
    return _Transient("read_error", f"{where}: {detail}")


def _storage_options(scheme: str, cfg: ImageConfig) -> dict:
    """Per-request timeouts for the object stores whose fsspec backend takes them; one attempt per
    call, so that images.retries counts the attempts."""
    if scheme in ("s3", "s3a"):
        config = {
            "connect_timeout": cfg.connect_timeout_s,
            "read_timeout": cfg.read_timeout_s,
            "retries": {"max_attempts": 1},
        }
        return {"config_kwargs": config}
    return {}


def _filesystem(scheme: str, uri: str, cfg: ImageConfig):
    try:
        import fsspec

        return fsspec.filesystem(scheme, **_storage_options(scheme, cfg))
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
