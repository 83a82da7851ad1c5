"""Untrusted image URIs: no request reaches an internal address, redirects are checked hop by hop, local
reads are regular files only, fsspec fetches keep the deadline, the byte cap and the retries."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
import uuid

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from http_fault_server import FaultServer

from vlclip_core import schema as S
from vlclip_core.batch import object_column
from vlclip_core.config import ConfigError, ImageConfig, VlclipConfig
from vlclip_core.errors import ItemError
from vlclip_core.images import netpolicy
from vlclip_core.images.fetch import fetch_bytes
from vlclip_core.stages.decode import DecodeStage

METADATA_PATH = "/latest/meta-data/iam/security-credentials/role"


def cfg(**kw) -> ImageConfig:
    base = dict(connect_timeout_s=1.0, read_timeout_s=0.5, retries=0, backoff_s=0.01, max_bytes=100_000)
    base.update(kw)
    return ImageConfig(**base)


def error_of(uri: str, config: ImageConfig) -> ItemError:
    with pytest.raises(ItemError) as info:
        fetch_bytes(uri, config)
    return info.value


@pytest.fixture()
def metadata():
    """Stands in for the cloud metadata service (or any internal service) on loopback."""
    with FaultServer() as srv:
        yield srv


@pytest.fixture()
def fake_dns(monkeypatch):
    """Names under .test resolve through this table (the resolver hook); calls are recorded."""
    table, calls = {}, []

    def resolve(host, port):
        calls.append(host)
        if host not in table:
            raise OSError(f"no such test host {host}")
        return list(table[host])

    monkeypatch.setattr(netpolicy, "resolver", resolve)
    return table, calls


def cdn_redirecting_to(target: str) -> FaultServer:
    return FaultServer(redirect_to=target)


# --- addresses -------------------------------------------------------------------------------


def test_redirect_from_an_allowed_cdn_to_the_metadata_service_sends_it_nothing(metadata):
    with cdn_redirecting_to(metadata.url(METADATA_PATH)) as cdn:
        allow_cdn_only = cfg(allowed_hosts=[f"127.0.0.1:{cdn.port}"])
        assert fetch_bytes(cdn.url("/ok.jpg"), allow_cdn_only) == cdn.jpeg
        err = error_of(cdn.url("/redirect-away"), allow_cdn_only)
        assert cdn.hits["/redirect-away"] == 1
    assert err.error_type == "address_not_allowed"
    assert err.message.startswith("address_not_allowed: 127.0.0.1 is loopback")
    assert sum(metadata.hits.values()) == 0


def test_internal_addresses_are_refused_without_a_connection(metadata):
    port = metadata.port
    for uri, address in [
        (metadata.url(METADATA_PATH), "127.0.0.1"),
        (f"http://[::ffff:127.0.0.1]:{port}{METADATA_PATH}", "::ffff:7f00:1"),  # IPv4-mapped IPv6
        (f"http://2130706433:{port}{METADATA_PATH}", "127.0.0.1"),  # 127.0.0.1 as one decimal number
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
        ("http://10.0.0.7/a.jpg", "10.0.0.7"),
    ]:
        start = time.monotonic()
        err = error_of(uri, cfg(connect_timeout_s=5.0))
        assert (err.error_type, err.message.split(" is ")[0]) == (
            "address_not_allowed",
            f"address_not_allowed: {address}",
        ), uri
        assert time.monotonic() - start < 1.0  # refused before any connection attempt
    assert sum(metadata.hits.values()) == 0


def test_a_name_resolving_to_loopback_is_refused(metadata, fake_dns):
    table, calls = fake_dns
    table["metadata.test"] = ["127.0.0.1"]
    table["mixed.test"] = ["93.184.216.34", "127.0.0.1"]  # one bad record is enough to refuse
    with cdn_redirecting_to(metadata.url(METADATA_PATH, host="metadata.test")) as cdn:
        redirected = error_of(cdn.url("/redirect-away"), cfg(allowed_hosts=[f"127.0.0.1:{cdn.port}"]))
    direct = error_of(metadata.url(METADATA_PATH, host="metadata.test"), cfg())
    mixed = error_of(metadata.url(METADATA_PATH, host="mixed.test"), cfg())
    for err in (redirected, direct, mixed):
        assert err.error_type == "address_not_allowed"
        assert "address_not_allowed: 127.0.0.1 is loopback (host " in err.message
    assert calls == ["metadata.test", "metadata.test", "mixed.test"]
    assert sum(metadata.hits.values()) == 0


def test_an_allowed_name_is_resolved_once_and_the_connection_goes_to_that_address(fake_dns):
    table, calls = fake_dns
    table["images.test"] = ["127.0.0.1"]
    with FaultServer() as srv:
        data = fetch_bytes(srv.url("/ok.jpg", host="images.test"), cfg(allowed_hosts=["images.test"]))
        # the system resolver does not know images.test: only the pinned address can have served it
        assert data == srv.jpeg
        assert srv.hosts == [f"images.test:{srv.port}"]
    assert calls == ["images.test"]


def test_allowed_host_entry_with_a_port_allows_that_port_only(metadata):
    with FaultServer() as other:
        config = cfg(allowed_hosts=[f"127.0.0.1:{other.port}"])
        assert fetch_bytes(other.url("/ok.jpg"), config) == other.jpeg
        assert error_of(metadata.url("/ok.jpg"), config).error_type == "address_not_allowed"
    assert sum(metadata.hits.values()) == 0


def test_allow_private_networks_allows_private_ranges_only():
    kinds = {
        a: netpolicy.refused_kind(ipaddress.ip_address(a), allow_private=True)
        for a in ("10.1.2.3", "192.168.0.9", "fd12::1", "100.64.0.1", "93.184.216.34")
    }
    assert kinds == {a: None for a in kinds}
    refused = {
        a: netpolicy.refused_kind(ipaddress.ip_address(a), allow_private=True)
        for a in ("127.0.0.1", "169.254.169.254", "::1", "::ffff:169.254.169.254", "0.0.0.0", "224.0.0.1",
                  "2002:a9fe:a9fe::", "64:ff9b::a9fe:a9fe", "240.0.0.1", "fe80::1")
    }
    assert refused == {
        "127.0.0.1": "loopback",
        "169.254.169.254": "link-local",
        "::1": "loopback",
        "::ffff:169.254.169.254": "reserved",
        "0.0.0.0": "unspecified",
        "224.0.0.1": "multicast",
        "2002:a9fe:a9fe::": "link-local",  # 6to4 wrapping 169.254.169.254
        "64:ff9b::a9fe:a9fe": "reserved",
        "240.0.0.1": "reserved",
        "fe80::1": "link-local",
    }
    assert netpolicy.refused_kind(ipaddress.ip_address("10.1.2.3")) == "private"


def test_config_rejects_a_bad_allowed_host_entry():
    with pytest.raises(ConfigError, match="images.allowed_hosts.*'cdn:http'"):
        ImageConfig(allowed_hosts=["cdn:http"]).validate()
    with pytest.raises(ConfigError, match="max_redirects"):
        ImageConfig(max_redirects=-1).validate()


# --- redirects -------------------------------------------------------------------------------


def test_redirect_to_another_scheme_is_refused_before_it_is_followed(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"local secret")
    with cdn_redirecting_to(f"file://{secret}") as cdn:
        err = error_of(cdn.url("/redirect-away"), cfg(allowed_hosts=["127.0.0.1"]))
    assert err.error_type == "scheme_not_allowed" and "redirected to a scheme 'file'" in err.message


def test_redirect_loop_stops_at_max_redirects():
    with FaultServer() as srv:
        err = error_of(srv.url("/redirect-loop"), cfg(allowed_hosts=["127.0.0.1"], max_redirects=3))
        assert srv.hits["/redirect-loop"] == 4  # the request and three redirects
    assert err.error_type == "too_many_redirects"


def test_decode_stage_error_row_says_why(metadata):
    with cdn_redirecting_to(metadata.url(METADATA_PATH + "?token=abc")) as cdn:
        images = ImageConfig(allowed_hosts=[f"127.0.0.1:{cdn.port}"], retries=0, max_side=64)
        uris = object_column(1)
        uris[:] = [cdn.url("/redirect-away?sig=zzz")]
        batch = {S.ITEM_ID: object_column(1, "SKU-1"), S.IMAGE_URI: uris}
        out = DecodeStage(VlclipConfig(images=images))(batch)
    assert out[S.ERROR_TYPE][0] == "address_not_allowed"
    assert out[S.ERROR_MESSAGE][0].startswith("address_not_allowed: 127.0.0.1")
    assert "abc" not in out[S.ERROR_MESSAGE][0] and "zzz" not in out[S.ERROR_MESSAGE][0]
    assert sum(metadata.hits.values()) == 0


# --- https: the pinned address keeps the name for SNI and the certificate check -----------------


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory):
    """A self-signed certificate for cdn.test (openssl), used as the server's and as the CA bundle."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=cdn.test", "-addext", "subjectAltName=DNS:cdn.test"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_https_to_a_pinned_address_checks_the_certificate_of_the_name(tls_cert, fake_dns):
    table, _ = fake_dns
    table["cdn.test"] = table["wrong-name.test"] = ["127.0.0.1"]
    config = cfg(
        allowed_schemes=["https"], allowed_hosts=["cdn.test", "wrong-name.test"], ca_bundle=tls_cert[0]
    )
    with FaultServer(tls=tls_cert) as cdn:
        assert fetch_bytes(cdn.url("/ok.jpg", host="cdn.test"), config) == cdn.jpeg
        err = error_of(cdn.url("/ok.jpg", host="wrong-name.test"), config)
        assert cdn.hosts == [f"cdn.test:{cdn.port}"]  # the certificate check failed before any request
    assert err.error_type == "tls_error"


def test_https_cdn_redirecting_to_plain_http_metadata_sends_it_nothing(tls_cert, fake_dns, metadata):
    """The prod profile allows [https, s3]: a redirect to http is refused before it is requested."""
    table, _ = fake_dns
    table["cdn.test"] = ["127.0.0.1"]
    config = cfg(
        allowed_schemes=["https", "s3"], allowed_hosts=["cdn.test", "127.0.0.1"], ca_bundle=tls_cert[0]
    )
    with FaultServer(tls=tls_cert, redirect_to=metadata.url(METADATA_PATH)) as cdn:
        err = error_of(cdn.url("/redirect-away", host="cdn.test"), config)
        assert cdn.hits["/redirect-away"] == 1
    assert err.error_type == "scheme_not_allowed"
    assert sum(metadata.hits.values()) == 0


# --- local files -----------------------------------------------------------------------------


def test_fifo_is_an_error_row_not_a_hang(tmp_path):
    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    start = time.monotonic()
    err = error_of(str(fifo), cfg(local_root=str(tmp_path)))
    assert (err.error_type, err.message) == ("not_a_file", f"{fifo} is a FIFO, not a regular file")
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("device", ["/dev/ptmx", "/dev/zero", "/dev/null"])
def test_character_device_is_an_error_row(device):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    err = error_of(device, cfg())
    expected = f"{device} is a character device, not a regular file"
    assert (err.error_type, err.message) == ("not_a_file", expected)


def test_decode_stage_turns_a_fifo_into_an_error_row(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    uris = object_column(2)
    uris[:] = [str(fifo), "/dev/ptmx"]
    stage = DecodeStage(VlclipConfig(images=ImageConfig(max_side=64)))
    out = stage({S.ITEM_ID: object_column(2, "SKU"), S.IMAGE_URI: uris})
    assert list(out[S.ERROR_TYPE]) == ["not_a_file", "not_a_file"]


# --- fsspec ------------------------------------------------------------------------------------


class FlakyMemoryFS(MemoryFileSystem):
    """memory:// with faults: the first `fail` opens raise ConnectionError, then reads stall `stall_s`."""

    protocol = "vlclip-flaky"
    fail = 0
    stall_s = 0.0
    opens = 0
    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        if "r" not in mode:
            return super()._open(path, mode, **kwargs)
        type(self).opens += 1
        if type(self).opens <= type(self).fail:
            raise ConnectionError("object store unreachable")
        fh = super()._open(path, mode, **kwargs)
        stall, counter = type(self).stall_s, type(self)

        class Stalling:
            size = None  # like a backend that does not know the size up front

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

            def read(self, n=-1):
                time.sleep(stall)
                chunk = fh.read(n)
                counter.bytes_read += len(chunk)
                return chunk

        return Stalling()


@pytest.fixture()
def flaky_fs():
    fsspec.register_implementation(FlakyMemoryFS.protocol, FlakyMemoryFS, clobber=True)
    FlakyMemoryFS.fail, FlakyMemoryFS.stall_s, FlakyMemoryFS.opens, FlakyMemoryFS.bytes_read = 0, 0.0, 0, 0
    key = f"vlclip-flaky://bucket/{uuid.uuid4().hex}.jpg"
    with fsspec.open(key, "wb") as fh:
        fh.write(b"object bytes")
    yield key
    FlakyMemoryFS.stall_s = 0.0


def test_fsspec_transient_failures_are_retried(flaky_fs):
    FlakyMemoryFS.fail = 2
    config = cfg(allowed_schemes=["vlclip-flaky"], retries=2)
    assert fetch_bytes(flaky_fs, config) == b"object bytes"
    assert FlakyMemoryFS.opens == 3
    FlakyMemoryFS.fail, FlakyMemoryFS.opens = 2, 0
    err = error_of(flaky_fs, cfg(allowed_schemes=["vlclip-flaky"], retries=1))
    assert err.error_type == "read_error" and "ConnectionError" in err.message
    assert FlakyMemoryFS.opens == 2


def test_fsspec_read_that_stalls_ends_at_the_total_timeout(flaky_fs):
    FlakyMemoryFS.stall_s = 5.0
    start = time.monotonic()
    err = error_of(flaky_fs, cfg(allowed_schemes=["vlclip-flaky"], total_timeout_s=0.3, retries=1))
    elapsed = time.monotonic() - start
    assert err.error_type == "timeout"
    assert FlakyMemoryFS.opens == 2  # the timed-out attempt was retried once
    assert elapsed < 1.5


def test_fsspec_object_over_the_cap_is_refused_from_its_size_unread():
    key = f"memory://vlclip-test/{uuid.uuid4().hex}.jpg"
    with fsspec.open(key, "wb") as fh:
        fh.write(b"z" * 50_000)
    fs = fsspec.filesystem("memory")
    reads = []
    original = type(fs.open(key, "rb")).read

    def counting_read(self, *args):
        data = original(self, *args)
        reads.append(len(data))
        return data

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(fs.open(key, "rb")), "read", counting_read)
        err = error_of(key, cfg(allowed_schemes=["memory"], max_bytes=1000))
    assert err.error_type == "too_large" and "size 50000" in err.message
    assert reads == []


def test_fsspec_stream_without_a_size_stops_at_the_cap(flaky_fs):
    key = flaky_fs.rsplit("/", 1)[0] + "/big.jpg"
    with fsspec.open(key, "wb") as fh:
        fh.write(b"z" * 500_000)
    err = error_of(key, cfg(allowed_schemes=["vlclip-flaky"], max_bytes=1000))
    assert err.error_type == "too_large"
    assert FlakyMemoryFS.bytes_read <= 1001


def test_a_name_that_does_not_resolve_is_retried_as_a_connection_error(fake_dns):
    _, calls = fake_dns
    err = error_of("http://nowhere.test/a.jpg?sig=s3cr3t", cfg(retries=2))
    assert err.error_type == "connection_error" and "cannot resolve nowhere.test" in err.message
    assert "s3cr3t" not in err.message
    assert calls == ["nowhere.test"] * 3
