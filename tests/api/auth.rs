//! Authentication and tenancy on the runs API: service keys, user JWTs, organizations, user
//! isolation, rate limits, body limits and request errors in OpenAI's shape.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::runs::{Api, assert_error, cli, echo, header, options, with};
use crate::support::Options;

/// The HS256 secret of the test servers.
const SECRET: &str = "auth-test-jwt-secret-0123456789-abcdef";

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A server with the static key, the test tools and the JWT secret.
fn jwt_options() -> Options {
    options().env("HEARTH_JWT_SECRET", SECRET)
}

/// An HS256 token with these claims, signed with `secret`.
fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

/// A valid user token for `sub`, with extra claims.
fn user_token(sub: &str, extra: &Value) -> String {
    sign(&with(json!({"sub": sub, "exp": now_s() + 600}), extra), SECRET)
}

/// Base64url without padding (RFC 4648 §5).
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// An unsigned `alg: none` token.
fn unsigned_token(claims: &Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64url(claims.to_string().as_bytes()))
}

/// The secret printed on the last line of `hearth keys create`.
fn create_key(hearth: &crate::support::Hearth, org: &str, name: &str) -> String {
    let stdout = cli(hearth, &["keys", "create", "--org", org, "--name", name]);
    stdout.lines().last().expect("keys create prints the secret").trim().to_owned()
}

#[test]
fn the_base64url_encoder_matches_rfc_4648() {
    assert_eq!(b64url(b""), "");
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(b"foobar"), "Zm9vYmFy");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}

#[tokio::test]
async fn missing_or_wrong_service_keys_are_401() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let run = api.start(&echo("mine")).await;
    let id = run["id"].as_str().unwrap();

    let anonymous = api.anonymous();
    let wrong = Api::with_key(&hearth, "runs-test-static-key-5d1d");
    let fake_db_key = Api::with_key(&hearth, "hk_notarealkeyatallnotarealkey");
    for client in [&anonymous, &wrong, &fake_db_key] {
        let response = client.post_run(&echo("x")).await;
        assert_eq!(header(response.headers(), "www-authenticate"), Some("Bearer"));
        assert_error(response, 401, "invalid_api_key").await;
        for path in [format!("/v1/runs/{id}"), format!("/v1/runs/{id}/events"), "/v1/sessions".into()] {
            let response = client.request(Method::GET, &path).send().await.unwrap();
            assert_error(response, 401, "invalid_api_key").await;
        }
        let response = client.request(Method::POST, &format!("/v1/runs/{id}/cancel")).send().await.unwrap();
        assert_error(response, 401, "invalid_api_key").await;
    }
    let basic =
        api.anonymous().request(Method::GET, "/v1/sessions").header("Authorization", "Basic Zm9vOmJhcg==");
    assert_error(basic.send().await.unwrap(), 401, "invalid_api_key").await;
    assert_eq!(api.run(id).await["id"], id, "the right key still works");
}

#[tokio::test]
async fn a_revoked_database_key_is_refused_at_once() {
    let hearth = options().start().await;
    let secret = create_key(&hearth, "default", "ci");
    assert!(secret.starts_with("hk_"), "{secret}");
    let api = Api::with_key(&hearth, &secret);
    let run = api.start(&echo("with a db key")).await;
    assert_eq!(run["resolved_profile"]["auth_mode"], "api-key", "{run}");
    let id = run["id"].as_str().unwrap();
    assert_eq!(api.wait_end(id).await["status"], "completed");

    let keys: Value =
        serde_json::from_str(&cli(&hearth, &["keys", "list", "--org", "default", "--json"])).unwrap();
    let key_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .and_then(|k| k["id"].as_str())
        .expect("the key is listed")
        .to_owned();
    cli(&hearth, &["keys", "revoke", &key_id]);

    assert_error(api.post_run(&echo("after revoke")).await, 401, "invalid_api_key").await;
    let response = api.request(Method::GET, &format!("/v1/runs/{id}")).send().await.unwrap();
    assert_error(response, 401, "invalid_api_key").await;
    // The static key of the same organization still sees the run.
    assert_eq!(Api::new(&hearth).run(id).await["status"], "completed");
}

#[tokio::test]
async fn a_valid_user_jwt_runs_as_that_user() {
    let hearth = jwt_options().start().await;
    let api = Api::new(&hearth);
    let alice = api.as_user(&user_token("alice", &json!({})));
    let run = alice.start(&echo("hi as alice")).await;
    assert_eq!(run["resolved_profile"]["auth_mode"], "user-jwt", "{run}");
    let id = run["id"].as_str().unwrap();
    assert_eq!(alice.wait_end(id).await["output"]["content"], "hi as alice");

    // The legacy header name is accepted too, and names the same user.
    let legacy = api
        .request(Method::POST, "/v1/runs")
        .header("x-meshi-runtime-user-id", user_token("alice", &json!({"org": "default"})))
        .json(&with(echo("legacy"), &json!({"session_id": run["session_id"]})))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 202);
    let legacy: Value = legacy.json().await.unwrap();
    assert_eq!(legacy["resolved_profile"]["auth_mode"], "user-jwt", "{legacy}");
    assert_eq!(legacy["session_id"], run["session_id"], "{legacy}");
    let (status, sessions) = alice.get("/v1/sessions").await;
    assert_eq!(status, 200);
    let listed: Vec<&Value> = sessions["data"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(listed, [&run["session_id"]], "{sessions}");
}

#[tokio::test]
async fn expired_forged_unsigned_and_incomplete_user_tokens_are_401() {
    let hearth = jwt_options().start().await;
    let api = Api::new(&hearth);
    let now = now_s();
    let bad = [
        ("expired", sign(&json!({"sub": "u", "exp": now - 3600}), SECRET)),
        ("bad signature", sign(&json!({"sub": "u", "exp": now + 600}), "another-secret-0123456789abcdef")),
        ("alg none", unsigned_token(&json!({"sub": "u", "exp": now + 600}))),
        ("no exp", sign(&json!({"sub": "u"}), SECRET)),
        ("no sub", sign(&json!({"exp": now + 600}), SECRET)),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, token) in bad {
        let response = api.as_user(&token).post_run(&echo("x")).await;
        let body = assert_error(response, 401, "invalid_api_key").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("X-Runtime-User"), "{what}: {message}");
        let response = api.as_user(&token).request(Method::GET, "/v1/sessions").send().await.unwrap();
        assert_error(response, 401, "invalid_api_key").await;
    }
    // The same claims, properly signed, pass.
    api.as_user(&sign(&json!({"sub": "u", "exp": now + 600}), SECRET)).start(&echo("ok")).await;
}

#[tokio::test]
async fn a_user_token_is_refused_when_no_jwt_key_is_configured() {
    let hearth = options().start().await;
    let api = Api::new(&hearth).as_user(&user_token("alice", &json!({})));
    assert_error(api.post_run(&echo("x")).await, 401, "invalid_api_key").await;
}

/// A server that expects user tokens from `https://issuer.test` for `hearth-tests`.
async fn issuer_audience_server() -> crate::support::Hearth {
    jwt_options()
        .env("HEARTH_JWT_ISSUER", "https://issuer.test")
        .env("HEARTH_JWT_AUDIENCE", "hearth-tests")
        .start()
        .await
}

/// Asserts that user tokens with each of these extra claims are refused with 401.
async fn assert_refused_claims(api: &Api, cases: &[Value]) {
    for claims in cases {
        let response = api.as_user(&user_token("u", claims)).post_run(&echo("x")).await;
        assert_eq!(response.status(), 401, "claims {claims} must be refused");
        let body = assert_error(response, 401, "invalid_api_key").await;
        assert!(body["error"]["message"].as_str().unwrap().contains("X-Runtime-User"), "{claims}: {body}");
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_set() {
    let hearth = issuer_audience_server().await;
    let api = Api::new(&hearth);
    let good = json!({"iss": "https://issuer.test", "aud": "hearth-tests"});
    api.as_user(&user_token("u", &good)).start(&echo("ok")).await;
    let wrong = [
        json!({"iss": "https://evil.test", "aud": "hearth-tests"}),
        json!({"iss": "https://issuer.test", "aud": "someone-else"}),
    ];
    assert_refused_claims(&api, &wrong).await;
}

#[tokio::test]
async fn tokens_without_the_configured_issuer_or_audience_are_refused() {
    let hearth = issuer_audience_server().await;
    let api = Api::new(&hearth);
    let missing = [json!({"aud": "hearth-tests"}), json!({"iss": "https://issuer.test"})];
    assert_refused_claims(&api, &missing).await;
}

#[tokio::test]
async fn the_org_claim_must_match_a_database_keys_org_and_exist() {
    let hearth = jwt_options().start().await;
    cli(&hearth, &["orgs", "create", "acme"]);
    let acme: Value = serde_json::from_str(&cli(&hearth, &["orgs", "show", "acme", "--json"])).unwrap();
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    let default_key = Api::with_key(&hearth, &create_key(&hearth, "default", "default-key"));
    let acme_key = Api::with_key(&hearth, &create_key(&hearth, "acme", "acme-key"));
    let static_key = Api::new(&hearth);

    // A database key's organization is fixed: a token naming another one is forbidden.
    let response = default_key.as_user(&user_token("u", &json!({"org": "acme"}))).post_run(&echo("x")).await;
    let body = assert_error(response, 403, "forbidden").await;
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    let response = acme_key.as_user(&user_token("u", &json!({"org": "default"}))).post_run(&echo("x")).await;
    assert_error(response, 403, "forbidden").await;
    // Unknown organizations are forbidden with any key.
    for client in [&default_key, &static_key] {
        let response =
            client.as_user(&user_token("u", &json!({"org": "nosuchorg"}))).post_run(&echo("x")).await;
        assert_error(response, 403, "forbidden").await;
    }
    // Matching claims, by slug or id, pass.
    default_key.as_user(&user_token("u", &json!({"org": "default"}))).start(&echo("ok")).await;
    acme_key.as_user(&user_token("u", &json!({"org": acme_id}))).start(&echo("ok")).await;

    // With the static key, the claim picks the organization.
    let run = static_key.as_user(&user_token("v", &json!({"org": "acme"}))).start(&echo("in acme")).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(acme_key.run(id).await["id"], id, "acme's service key sees acme's run");
    let (status, body) = default_key.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(status, 404, "another organization's key must not see it: {body}");
    let (status, body) = static_key.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(status, 404, "the static key without a claim acts in `default`: {body}");
}

#[tokio::test]
async fn require_user_makes_the_user_header_mandatory_on_chat_runs_and_sessions() {
    let hearth = jwt_options().env("HEARTH_REQUIRE_USER", "true").start().await;
    let api = Api::new(&hearth);
    let body = assert_error(api.post_run(&echo("x")).await, 401, "invalid_api_key").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("X-Runtime-User"), "{body}");
    let response = api.request(Method::GET, "/v1/sessions").send().await.unwrap();
    assert_error(response, 401, "invalid_api_key").await;
    let response = api.request(Method::POST, "/v1/chat/completions").json(&echo("x")).send().await.unwrap();
    assert_error(response, 401, "invalid_api_key").await;
    let (status, _) = api.get("/v1/models").await;
    assert_eq!(status, 200, "listing models needs no user");

    let alice = api.as_user(&user_token("alice", &json!({})));
    let run = alice.start(&echo("with a user")).await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(alice.wait_end(id).await["status"], "completed");
    let response = api.request(Method::GET, &format!("/v1/runs/{id}")).send().await.unwrap();
    assert_error(response, 401, "invalid_api_key").await;
}

#[tokio::test]
async fn users_see_only_their_own_runs_and_sessions() {
    let hearth = jwt_options().start().await;
    let service = Api::new(&hearth);
    let alice = service.as_user(&user_token("alice", &json!({})));
    let bob = service.as_user(&user_token("bob", &json!({})));
    let a = alice.start(&echo("alice's")).await;
    let b = bob.start(&echo("bob's")).await;
    let (a_id, a_ses) = (a["id"].as_str().unwrap(), a["session_id"].as_str().unwrap());
    let (b_id, b_ses) = (b["id"].as_str().unwrap(), b["session_id"].as_str().unwrap());
    assert_eq!(alice.wait_end(a_id).await["status"], "completed");
    assert_eq!(bob.wait_end(b_id).await["status"], "completed");

    for (who, other_run, other_ses) in [(&bob, a_id, a_ses), (&alice, b_id, b_ses)] {
        for path in [
            format!("/v1/runs/{other_run}"),
            format!("/v1/runs/{other_run}/events?offset=-1"),
            format!("/v1/sessions/{other_ses}"),
        ] {
            let response = who.request(Method::GET, &path).send().await.unwrap();
            assert_error(response, 404, "not_found").await;
        }
        let response =
            who.request(Method::POST, &format!("/v1/runs/{other_run}/cancel")).send().await.unwrap();
        assert_error(response, 404, "not_found").await;
        let response = who.post_run(&with(echo("hijack"), &json!({"session_id": other_ses}))).await;
        assert_error(response, 404, "not_found").await;
    }
    for (who, own_run, own_ses) in [(&alice, a_id, a_ses), (&bob, b_id, b_ses)] {
        assert_eq!(who.run(own_run).await["id"], own_run);
        let (status, list) = who.get("/v1/sessions").await;
        assert_eq!(status, 200);
        let listed: Vec<&str> =
            list["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
        assert_eq!(listed, [own_ses], "{list}");
    }

    // The service key without a user sees the organization's runs and sessions.
    assert_eq!(service.run(a_id).await["output"]["content"], "alice's");
    assert_eq!(service.run(b_id).await["output"]["content"], "bob's");
    let (status, detail) = service.get(&format!("/v1/sessions/{a_ses}")).await;
    assert_eq!(status, 200, "{detail}");
    let (_, list) = service.get("/v1/sessions").await;
    let mut listed: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut expected = [a_ses, b_ses];
    expected.sort_unstable();
    assert_eq!(listed, expected, "{list}");
}

#[tokio::test]
async fn the_per_key_rate_limit_answers_429_with_retry_after() {
    let hearth = options().env("HEARTH_KEY_RPM", "3").start().await;
    let api = Api::new(&hearth);
    for _ in 0..3 {
        assert_eq!(api.get("/v1/sessions").await.0, 200);
    }
    let response = api.request(Method::GET, "/v1/sessions").send().await.unwrap();
    let retry_after: u64 = header(response.headers(), "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = assert_error(response, 429, "rate_limit_exceeded").await;
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_error(api.post_run(&echo("x")).await, 429, "rate_limit_exceeded").await;

    // The limit is per key: another key is not affected.
    let other = Api::with_key(&hearth, &create_key(&hearth, "default", "other"));
    assert_eq!(other.get("/v1/sessions").await.0, 200);
}

#[tokio::test]
async fn the_per_user_rate_limit_counts_each_user_separately() {
    let hearth = jwt_options().env("HEARTH_USER_RPM", "2").start().await;
    let service = Api::new(&hearth);
    let alice = service.as_user(&user_token("alice", &json!({})));
    let bob = service.as_user(&user_token("bob", &json!({})));
    for _ in 0..2 {
        assert_eq!(alice.get("/v1/sessions").await.0, 200);
    }
    let response = alice.request(Method::GET, "/v1/sessions").send().await.unwrap();
    assert!(header(response.headers(), "retry-after").is_some(), "{:?}", response.headers());
    assert_error(response, 429, "rate_limit_exceeded").await;
    assert_eq!(bob.get("/v1/sessions").await.0, 200, "another user has their own budget");
    assert_eq!(service.get("/v1/sessions").await.0, 200, "the key without a user is not limited per user");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_in_openai_shape() {
    let hearth = options().env("HEARTH_MAX_BODY", "2KiB").start().await;
    let api = Api::new(&hearth);
    let response = api.post_run(&echo(&"x".repeat(4096))).await;
    let body = assert_error(response, 413, "request_too_large").await;
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // A body under the limit passes.
    api.start(&echo(&"x".repeat(1000))).await;
}

#[tokio::test]
async fn malformed_requests_are_400_in_openai_shape() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    let send = |body: &'static str| {
        api.request(Method::POST, "/v1/runs").header("content-type", "application/json").body(body).send()
    };
    assert_error(send("{not json").await.unwrap(), 400, "invalid_request").await;
    assert_error(send(r#"{"model": "echo", "messages": "nope"}"#).await.unwrap(), 400, "invalid_request")
        .await;
    let no_type = api.request(Method::POST, "/v1/runs").body(echo("x").to_string()).send().await.unwrap();
    assert_error(no_type, 400, "invalid_request").await;
    let body =
        assert_error(api.post_run(&with(echo("x"), &json!({"n": 2}))).await, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "n", "{body}");
    let empty = api.post_run(&json!({"model": "echo", "messages": []})).await;
    let body = assert_error(empty, 400, "invalid_request").await;
    assert_eq!(body["error"]["param"], "messages", "{body}");
    let busy = api.post_run(&with(echo("x"), &json!({"on_busy": "sometimes"}))).await;
    assert_error(busy, 400, "invalid_request").await;
}

#[tokio::test]
async fn an_unknown_model_or_agent_is_404_model_not_found() {
    let hearth = options().start().await;
    let api = Api::new(&hearth);
    for model in ["nosuchprovider/model", "agent:nobody", "not-an-alias"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
        let response = api.post_run(&body).await;
        let error = assert_error(response, 404, "model_not_found").await;
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    }
    let (_, sessions) = api.get("/v1/sessions").await;
    assert_eq!(sessions["data"], json!([]), "a refused run leaves no session behind");
}
