"""HTTP(S) GET for untrusted image URLs: each hop's address checked and pinned, redirects followed by hand.

Every hop (the URL and each redirect target) is checked before any byte is sent to it: its scheme must be
http or https and in images.allowed_schemes, its host must resolve to allowed addresses
(images/netpolicy.py), and the connection goes to the checked address, with the URL's host in the Host
header and as the TLS server name (SNI and certificate check). Proxies from the environment are not
used: the address check is only meaningful on a direct connection.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from requests.utils import requote_uri

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError
from vlclip_core.images import netpolicy
from vlclip_core.redact import redact_uri

_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_POOLS = 32  # per thread: pools (keep-alive connections) of the most recent hosts
_USER_AGENT = "vlclip-image-fetch"
_local = threading.local()


@dataclass(frozen=True)
class Hop:
    """One checked request: where to connect (address) and what to ask for (host header, target)."""

    scheme: str
    host: str  # IDNA-encoded name or IP literal, no brackets
    port: int
    address: str  # the checked address the connection goes to
    target: str  # path and query
    auth: Optional[str]  # an Authorization header value from the URL's user info

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == netpolicy.default_port(self.scheme) else f"{name}:{self.port}"


def get(uri: str, cfg: ImageConfig) -> urllib3.BaseHTTPResponse:
    """The streamed response of the last hop of GET `uri`, redirects followed (at most
    images.max_redirects), every hop checked first. The caller reads and then `release`s it.

    Raises ItemError: bad_uri, scheme_not_allowed, address_not_allowed, too_many_redirects;
    netpolicy.UnresolvableHost (an OSError) and urllib3's exceptions pass through for the caller to map.
    """
    hop = check_hop(uri, cfg, redact_uri(uri))
    for redirects in range(cfg.max_redirects + 1):
        resp = _send(hop, cfg)
        location = resp.headers.get("Location") if resp.status in _REDIRECTS else None
        if location is None:
            return resp
        release(resp)
        if redirects == cfg.max_redirects:
            break
        hop = _next_hop(hop, uri, location, cfg)
    raise ItemError(
        "too_many_redirects", f"{redact_uri(uri)}: more than images.max_redirects={cfg.max_redirects}"
    )


def _next_hop(hop: Hop, uri: str, location: str, cfg: ImageConfig) -> Hop:
    current = f"{hop.scheme}://{hop.host_header}{hop.target}"
    target = urljoin(current, location.strip())
    where = f"{redact_uri(uri)} redirected to {redact_uri(target)}"
    nxt = check_hop(target, cfg, where, redirected=True)
    same_origin = (nxt.scheme, nxt.host, nxt.port) == (hop.scheme, hop.host, hop.port)
    if nxt.auth is None and same_origin:
        return Hop(nxt.scheme, nxt.host, nxt.port, nxt.address, nxt.target, hop.auth)
    return nxt


def check_hop(url: str, cfg: ImageConfig, where: str, redirected: bool = False) -> Hop:
    """`url` as a Hop whose scheme, host and address are allowed; ItemError otherwise."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as err:
        raise ItemError("bad_uri", f"{where}: {err}") from err
    allowed = {s.lower() for s in cfg.allowed_schemes}
    if scheme not in ("http", "https") or scheme not in allowed:
        label = "redirected to a scheme" if redirected else "scheme"
        raise ItemError("scheme_not_allowed", f"{where}: {label} {scheme!r} not in images.allowed_schemes")
    if not host:
        raise ItemError("bad_uri", f"{where}: no host")
    host = _idna(host, where)
    port = port or netpolicy.default_port(scheme)
    address = netpolicy.pinned_address(host, port, cfg, where)
    target = requote_uri((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    return Hop(scheme, host, port, address, target, _basic_auth(parts))


def _idna(host: str, where: str) -> str:
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError as err:
        raise ItemError("bad_uri", f"{where}: host is not a valid name") from err


def _basic_auth(parts) -> Optional[str]:
    if parts.username is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("utf-8")
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _send(hop: Hop, cfg: ImageConfig) -> urllib3.BaseHTTPResponse:
    headers: Dict[str, str] = {
        "Host": hop.host_header,
        "User-Agent": _USER_AGENT,
        "Accept": "image/*, */*;q=0.5",
        "Accept-Encoding": "gzip, deflate",
    }
    if hop.auth:
        headers["Authorization"] = hop.auth
    return _pool(hop, cfg).urlopen(
        "GET",
        hop.target,
        headers=headers,
        redirect=False,
        retries=False,
        preload_content=False,
        assert_same_host=False,
        timeout=urllib3.Timeout(connect=cfg.connect_timeout_s, read=cfg.read_timeout_s),
    )


def _pool(hop: Hop, cfg: ImageConfig) -> urllib3.HTTPConnectionPool:
    """A per-thread pool for (address, port, host): keep-alive reuse never mixes hosts or addresses."""
    pools = getattr(_local, "pools", None)
    if pools is None:
        pools = _local.pools = OrderedDict()
    key = (hop.scheme, hop.address, hop.port, hop.host, cfg.ca_bundle)
    pool = pools.pop(key, None) or _new_pool(hop, cfg)
    pools[key] = pool
    while len(pools) > _MAX_POOLS:
        pools.popitem(last=False)[1].close()
    return pool


def _new_pool(hop: Hop, cfg: ImageConfig) -> urllib3.HTTPConnectionPool:
    if hop.scheme == "http":
        return urllib3.HTTPConnectionPool(hop.address, hop.port, maxsize=2)
    return urllib3.HTTPSConnectionPool(
        hop.address,
        hop.port,
        maxsize=2,
        cert_reqs="CERT_REQUIRED",
        ca_certs=cfg.ca_bundle or _default_ca_bundle(),
        server_hostname=hop.host,
        assert_hostname=hop.host,
    )


def _default_ca_bundle() -> Optional[str]:
    try:
        import certifi

        return certifi.where()
    except ImportError:
        return None  # urllib3 then loads the system's default certificates


def release(resp: urllib3.BaseHTTPResponse) -> None:
    """Give the connection back. After a fully read body urllib3 has already returned it to its pool
    (kept alive); after a partly read one (an error, a redirect) it is closed first."""
    resp.close()
    resp.release_conn()
