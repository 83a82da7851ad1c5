"""Which network addresses an image fetch may connect to: resolve once, refuse internal ranges by default.

An image URL comes from the catalog, so it is untrusted: without a check it could make the job request
cloud metadata (169.254.169.254), a service on the node (127.0.0.1) or the data platform's internal
network. `pinned_address` resolves the host once and returns the one address the request must connect
to, after checking every resolved address; connecting to that address (not to the name) leaves no
DNS-rebinding window between the check and the connection.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable, List, Optional, Tuple

from vlclip_core.config import ImageConfig
from vlclip_core.config.checks import parse_host_entry
from vlclip_core.errors import ItemError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: internal, like RFC 1918
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UnresolvableHost(OSError):
    """The host does not resolve (an OSError, so a fetch retries it like a connection error)."""


def system_resolver(host: str, port: int) -> List[str]:
    """Every address `host` resolves to (getaddrinfo), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


# The resolver every fetch uses; tests replace it to map a name to a loopback address without DNS.
resolver: Callable[[str, int], List[str]] = system_resolver


def pinned_address(host: str, port: int, cfg: ImageConfig, where: str) -> str:
    """The address to connect to for `host`: an IP literal as is, else the first resolved address.

    Raises ItemError("address_not_allowed") when any resolved address is in a refused range (and the
    host is not in images.allowed_hosts), UnresolvableHost when the name does not resolve.
    """
    addresses = _resolve(host, port, where)
    if not host_is_allowed(host, port, cfg.allowed_hosts):
        for address in addresses:
            check_address(address, cfg.allow_private_networks, host, where)
    return str(addresses[0])


def default_port(scheme: str) -> int:
    return _DEFAULT_PORTS[scheme]


def _resolve(host: str, port: int, where: str) -> List[Address]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    except (OSError, UnicodeError, ValueError) as err:
        raise UnresolvableHost(f"cannot resolve {host}: {type(err).__name__}: {err}") from err
    if not found:
        raise UnresolvableHost(f"{host} resolves to no address")
    return found


def _literal(host: str) -> Optional[Address]:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(address: Address, allow_private: bool, host: str, where: str) -> None:
    """Raise ItemError("address_not_allowed: <address>") when `address` is in a refused range."""
    kind = refused_kind(address, allow_private)
    if kind is not None:
        opt_in = "images.allowed_hosts" + (" or images.allow_private_networks" if kind == "private" else "")
        raise ItemError(
            "address_not_allowed",
            f"address_not_allowed: {address} is {kind} (host {host}; {opt_in} can allow it): {where}",
        )


def refused_kind(address: Address, allow_private: bool = False) -> Optional[str]:
    """Why `address` is refused (loopback, link-local, ...), or None when it may be connected to.

    IPv4 addresses embedded in IPv6 (IPv4-mapped, 6to4, NAT64, Teredo) are checked as IPv4 too.
    `allow_private` allows the private ranges (RFC 1918, fc00::/7, 100.64.0.0/10) only: loopback,
    link-local (cloud metadata), multicast, unspecified and reserved stay refused.
    """
    for candidate in (address, *_embedded_ipv4(address)):
        kind = _kind(candidate)
        if kind is not None and not (allow_private and kind == "private"):
            return kind
    return None


def _kind(address: Address) -> Optional[str]:
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private or address in _SHARED),
        ("not globally routable", not address.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def _embedded_ipv4(address: Address) -> Tuple[Address, ...]:
    if address.version == 4:
        return ()
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return tuple(a for a in found if a is not None)


def host_is_allowed(host: str, port: int, allowed: Iterable[str]) -> bool:
    """`host` (and `port`) match an images.allowed_hosts entry: "name", "name:port", "[v6]:port"."""
    host = host.strip("[]").lower()
    entries = (parse_host_entry(e) for e in allowed)
    return any(name == host and entry_port in (None, port) for name, entry_port in entries)
