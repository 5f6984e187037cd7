"""hearth calls an HTTPS upstream: rustls with the platform's trust store (SSL_CERT_FILE is
honoured), and a certificate nobody vouches for is refused with a clear 502."""

from __future__ import annotations

import openai
import pytest
import trustme

from conftest import start_fake, stop_fake
from hearth_proc import KEY, Hearth


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory):
    """The fake upstream over HTTPS, with a certificate for `localhost` from a throwaway CA;
    yields (https base URL, path of the CA's PEM)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    d = tmp_path_factory.mktemp("tls")
    cert, key, ca_pem = d / "cert.pem", d / "key.pem", d / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_pem))
    proc, base = start_fake("--tls-cert", str(cert), "--tls-key", str(key))
    try:
        yield base.replace("http://127.0.0.1", "https://localhost"), str(ca_pem)
    finally:
        stop_fake(proc)


@pytest.mark.parametrize("provider,upstream_model", [("openai", "gpt-tls"), ("anthropic", "claude-tls")])
def test_a_turn_through_an_https_upstream_whose_ca_is_trusted(tls_upstream, provider, upstream_model) -> None:
    base, ca_pem = tls_upstream
    with Hearth(base, SSL_CERT_FILE=ca_pem) as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        whole = client.chat.completions.create(
            model=f"{provider}/{upstream_model}", messages=[{"role": "user", "content": "over tls"}])
        assert whole.choices[0].message.content == "echo: over tls"
        stream = client.chat.completions.create(
            model=f"{provider}/{upstream_model}", messages=[{"role": "user", "content": "streamed"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "echo: streamed"


def test_an_upstream_certificate_nobody_vouches_for_is_refused(tls_upstream) -> None:
    base, _ = tls_upstream
    with Hearth(base, HEARTH_UPSTREAM_RETRIES="0") as h:
        client = openai.OpenAI(base_url=h.base_url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="openai/gpt-tls", messages=[{"role": "user", "content": "x"}])
        assert refused.value.status_code == 502
        assert "certificate" in str(refused.value.message), refused.value.message
