"""Tests of the one redaction helper (vlclip_core/redact.py)."""

from vlclip_core.redact import redact_uri, scrub, url_secrets


def test_redact_uri_drops_user_info_query_and_fragment():
    redacted = redact_uri("https://u:p@cdn.example.com:8443/a/b.jpg?sig=1#frag")
    assert redacted == "https://cdn.example.com:8443/a/b.jpg"
    assert redact_uri("http://[::1]:8080/x?token=t") == "http://[::1]:8080/x"
    assert redact_uri("/data/images/a.jpg") == "/data/images/a.jpg"
    assert redact_uri("http://host:notaport/a.jpg?sig=1") == "<unparseable URI>"


def test_scrub_removes_urls_secrets_and_authorization_values():
    text = (
        "POST http://svc:hunter22@llm:8000/v1?key=abc failed; Authorization: Bearer sk-123, "
        "echo 'hunter22' and hunter%32%32; basic plan"
    )
    cleaned = scrub(text, ("hunter%32%32", "sk-123"))  # as the URL holds it: both forms go
    assert cleaned == (
        "POST http://llm:8000/v1 failed; Authorization: Bearer ***, echo '***' and ***; basic plan"
    )


def test_url_secrets_names_password_query_and_a_token_like_user():
    assert url_secrets("http://svc:pw@h/v1") == ("pw",)
    assert url_secrets("http://ghp_0123456789@h/v1?k=v") == ("k=v", "ghp_0123456789")
    assert url_secrets("http://h/v1") == () and url_secrets(None) == ()
