"""Tests for vlclip_core.images.fetch against real files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from http_fault_server import FaultServer, closed_port

from vlclip_core.config import ImageConfig
from vlclip_core.errors import ItemError
from vlclip_core.images.fetch import fetch_bytes, redact_uri, uri_scheme


def fast_cfg(**kw) -> ImageConfig:
    """Short timeouts; the loopback test servers allowed by name (every other internal address is not)."""
    base = dict(
        connect_timeout_s=1.0,
        read_timeout_s=0.3,
        retries=2,
        backoff_s=0.01,
        max_bytes=100_000,
        allowed_hosts=["127.0.0.1"],
    )
    base.update(kw)
    return ImageConfig(**base)


def error_of(uri: str, cfg: ImageConfig) -> ItemError:
    with pytest.raises(ItemError) as info:
        fetch_bytes(uri, cfg)
    return info.value


@pytest.fixture(scope="module")
def server():
    with FaultServer(slow_s=3.0, big_bytes=150_000) as srv:
        yield srv


# --- local files -------------------------------------------------------------------------------


def test_local_path_and_file_uri_return_the_exact_bytes(tmp_path):
    path = tmp_path / "an image.jpg"
    path.write_bytes(b"\xff\xd8payload")
    assert fetch_bytes(str(path), fast_cfg()) == b"\xff\xd8payload"
    assert fetch_bytes("file://" + str(path).replace(" ", "%20"), fast_cfg()) == b"\xff\xd8payload"


def test_local_root_allows_inside_and_rejects_dotdot_and_symlink_escapes(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "secret.txt"
    root.mkdir()
    (root / "in.jpg").write_bytes(b"inside")
    outside.write_bytes(b"outside")
    os.symlink(outside, root / "link.jpg")
    cfg = fast_cfg(local_root=str(root))
    assert fetch_bytes(str(root / "in.jpg"), cfg) == b"inside"
    assert error_of(str(root / ".." / "secret.txt"), cfg).error_type == "path_not_allowed"
    assert error_of(str(root / "link.jpg"), cfg).error_type == "path_not_allowed"
    assert error_of("file://" + str(outside), cfg).error_type == "path_not_allowed"
    assert fetch_bytes(str(root / "link.jpg"), fast_cfg()) == b"outside"  # no root: symlinks are fine


def test_file_uri_with_a_remote_host_is_refused(tmp_path):
    assert error_of("file://fileserver/share/a.jpg", fast_cfg()).error_type == "path_not_allowed"


def test_missing_file_directory_and_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert error_of(str(tmp_path / "nope.jpg"), fast_cfg()).error_type == "missing_file"
    assert error_of(str(tmp_path), fast_cfg()).error_type == "not_a_file"
    assert error_of(str(tmp_path / "empty.jpg"), fast_cfg()).error_type == "empty_file"


def test_local_size_cap_is_exact(tmp_path):
    (tmp_path / "max.bin").write_bytes(b"a" * 1000)
    (tmp_path / "over.bin").write_bytes(b"a" * 1001)
    assert len(fetch_bytes(str(tmp_path / "max.bin"), fast_cfg(max_bytes=1000))) == 1000
    assert error_of(str(tmp_path / "over.bin"), fast_cfg(max_bytes=1000)).error_type == "too_large"


def test_endless_special_file_is_not_read():
    err = error_of("/dev/zero", fast_cfg(max_bytes=4096))
    assert err.error_type == "not_a_file" and "character device" in err.message


# --- schemes -------------------------------------------------------------------------------------


def test_uri_scheme():
    assert uri_scheme("/data/a.jpg") == "file"
    assert uri_scheme("relative/a.jpg") == "file"
    assert uri_scheme("C:\\images\\a.jpg") == "file"
    assert uri_scheme("HTTPS://example.com/a.jpg") == "https"
    assert uri_scheme("s3://bucket/key.jpg") == "s3"


def test_scheme_not_in_allow_list_is_refused_without_a_request(server):
    err = error_of(server.url("/ok.jpg?probe=1"), fast_cfg(allowed_schemes=["file"]))
    assert err.error_type == "scheme_not_allowed"
    assert "probe" not in err.message
    before = server.hits["/ok.jpg"]
    error_of(server.url("/ok.jpg"), fast_cfg(allowed_schemes=["file"]))
    assert server.hits["/ok.jpg"] == before
    assert error_of("ftp://example.com/a.jpg", fast_cfg()).error_type == "scheme_not_allowed"


def test_fsspec_memory_scheme_when_allowed():
    import fsspec

    key = f"memory://vlclip-test/{uuid.uuid4().hex}.jpg"
    with fsspec.open(key, "wb") as fh:
        fh.write(b"from memory")
    cfg = fast_cfg(allowed_schemes=["memory"])
    assert fetch_bytes(key, cfg) == b"from memory"
    assert error_of("memory://vlclip-test/absent.jpg", cfg).error_type == "missing_file"
    assert error_of(key, fast_cfg(allowed_schemes=["memory"], max_bytes=5)).error_type == "too_large"


def test_allowed_scheme_without_its_library_is_unavailable():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    err = error_of("s3://key:secret@bucket/a.jpg?X-Amz-Signature=zzz", fast_cfg(allowed_schemes=["s3"]))
    assert err.error_type == "scheme_unavailable"
    assert "secret" not in err.message and "zzz" not in err.message
    unknown = error_of("nosuchproto://x/a.jpg", fast_cfg(allowed_schemes=["nosuchproto"]))
    assert unknown.error_type == "scheme_unavailable"


# --- HTTP ----------------------------------------------------------------------------------------


def test_http_ok_and_redirect(server):
    assert fetch_bytes(server.url("/ok.jpg"), fast_cfg()) == server.jpeg
    assert fetch_bytes(server.url("/redirect-ok"), fast_cfg()) == server.jpeg


def test_404_is_not_retried(server):
    before = server.hits["/404"]
    assert error_of(server.url("/404"), fast_cfg(retries=3)).error_type == "http_404"
    assert server.hits["/404"] - before == 1


def test_500_is_retried_then_reported(server):
    before = server.hits["/500"]
    assert error_of(server.url("/500"), fast_cfg(retries=2)).error_type == "http_500"
    assert server.hits["/500"] - before == 3


def test_flaky_succeeds_on_the_third_try_with_exponential_backoff():
    with FaultServer(flaky_failures=2) as srv:
        start = time.monotonic()
        assert fetch_bytes(srv.url("/flaky"), fast_cfg(retries=2, backoff_s=0.1)) == srv.jpeg
        elapsed = time.monotonic() - start
        assert srv.hits["/flaky"] == 3
    assert elapsed >= 0.3  # 0.1 + 0.2 of backoff


def test_flaky_with_too_few_retries_fails():
    with FaultServer(flaky_failures=2) as srv:
        assert error_of(srv.url("/flaky"), fast_cfg(retries=1)).error_type == "http_500"
        assert srv.hits["/flaky"] == 2


def test_slow_headers_time_out_after_bounded_retries(server):
    before = server.hits["/slow"]
    start = time.monotonic()
    assert error_of(server.url("/slow"), fast_cfg(read_timeout_s=0.2, retries=1)).error_type == "timeout"
    assert time.monotonic() - start < 2.0
    assert server.hits["/slow"] - before == 2


def test_stalled_body_times_out(server):
    err = error_of(server.url("/slow-body"), fast_cfg(read_timeout_s=0.2, retries=0))
    assert err.error_type == "timeout"


def test_slow_drip_is_cut_by_the_total_timeout(server):
    start = time.monotonic()
    err = error_of(server.url("/drip"), fast_cfg(read_timeout_s=1.0, total_timeout_s=0.3, retries=0))
    assert err.error_type == "timeout"
    assert time.monotonic() - start < 1.5


def test_content_length_over_the_cap_is_rejected_early(server):
    before = server.hits["/big"]
    err = error_of(server.url("/big"), fast_cfg(max_bytes=100_000, retries=2))
    assert err.error_type == "too_large"
    assert "Content-Length 150000" in err.message
    assert server.hits["/big"] - before == 1


def test_chunked_body_over_the_cap_is_cut_while_streaming(server):
    err = error_of(server.url("/big-chunked"), fast_cfg(max_bytes=100_000))
    assert err.error_type == "too_large"
    assert "body is over" in err.message


def test_empty_body_and_non_image_body(server):
    assert error_of(server.url("/empty"), fast_cfg()).error_type == "empty_file"
    assert fetch_bytes(server.url("/text"), fast_cfg()) == b"hello, I am not an image"


def test_connection_refused_is_retried_then_reported():
    err = error_of(f"http://127.0.0.1:{closed_port()}/a.jpg", fast_cfg(retries=1))
    assert err.error_type == "connection_error"


def test_credentials_never_appear_in_messages(server):
    host_port = server.url("").split("//", 1)[1]
    err = error_of(f"http://alice:s3cr3t@{host_port}/404?token=abc123", fast_cfg())
    assert err.error_type == "http_404"
    assert "s3cr3t" not in err.message and "abc123" not in err.message and "/404" in err.message
    refused = error_of(f"http://bob:hunter2@127.0.0.1:{closed_port()}/x.jpg?sig=zzz999", fast_cfg(retries=0))
    assert "hunter2" not in refused.message and "zzz999" not in refused.message


def test_malformed_uris_are_item_errors():
    assert error_of("http://[::1/a.jpg", fast_cfg()).error_type == "bad_uri"
    assert error_of("/tmp/a\x00.jpg", fast_cfg()).error_type == "bad_uri"
    assert error_of("http://127.0.0.1:notaport/a.jpg", fast_cfg(retries=0)).error_type == "bad_uri"


def test_redact_uri():
    redacted = redact_uri("https://u:p@cdn.example.com:8443/a/b.jpg?sig=1#frag")
    assert redacted == "https://cdn.example.com:8443/a/b.jpg"
    assert redact_uri("/data/images/a.jpg") == "/data/images/a.jpg"
    assert redact_uri("http://host:notaport/a.jpg?sig=1") == "<unparseable URI>"
