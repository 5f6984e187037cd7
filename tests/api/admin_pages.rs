//! The admin pages over HTTP against the real binary, with data made through the APIs (chat,
//! worker protocol, admin API): login required, login and logout, the login rate limit, each
//! page's status and content, escaping of a hostile worker name, CSRF refusals, the security
//! headers, and the forms (flip through the guard, mint, revoke, drain).

use std::collections::HashMap;

use reqwest::Method;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use rusqlite::Connection;
use serde_json::json;

use crate::admin_api::{ADMIN, admin_server, call, register_worker};
use crate::runs::{Api, cli, echo, options};
use crate::support::Hearth;

/// A browser without JavaScript: keeps cookies, follows no redirect.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    /// Extra headers on every request (e.g. `X-Forwarded-Proto`).
    forwarded_https: bool,
}

/// An answer: status, headers, body.
struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first `name="csrf_token"` input.
    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf_token\" value=\"").expect("a csrf_token field");
        let rest = &self.body[at + "name=\"csrf_token\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    }
}

impl Browser {
    fn new(hearth: &Hearth) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, base: hearth.base_url().to_owned(), cookies: HashMap::new(), forwarded_https: false }
    }

    async fn send(&mut self, method: Method, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header("cookie", jar.join("; "));
        }
        if self.forwarded_https {
            request = request.header("x-forwarded-proto", "https");
        }
        if let Some(form) = form {
            let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            request =
                request.header("content-type", "application/x-www-form-urlencoded").body(body.join("&"));
        }
        let response = request.send().await.unwrap();
        let page = Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: String::new(),
        };
        let body = response.text().await.unwrap();
        let page = Page { body, ..page };
        for cookie in page.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, Some(form)).await
    }

    /// Logs in with `token` through the form; returns the answer to the POST.
    async fn login(&mut self, token: &str) -> Page {
        let form = self.get("/admin/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post("/admin/login", &[("csrf_token", &csrf), ("token", token)]).await
    }

    /// A logged-in browser.
    async fn logged_in(hearth: &Hearth) -> Self {
        let mut browser = Self::new(hearth);
        let answer = browser.login(ADMIN).await;
        assert_eq!((answer.status, answer.location()), (303, "/admin"), "{}", answer.body);
        browser
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn header<'a>(page: &'a Page, name: &str) -> &'a str {
    page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn pages_need_a_login_and_logout_ends_it() {
    let hearth = admin_server().await;
    let mut browser = Browser::new(&hearth);
    for path in [
        "/admin",
        "/admin/workers",
        "/admin/sessions",
        "/admin/sessions/ses_x",
        "/admin/orgs",
        "/admin/orgs/default",
        "/admin/keys",
    ] {
        let page = browser.get(path).await;
        assert_eq!((page.status, page.location()), (303, "/admin/login"), "{path}");
    }
    let page = browser.post("/admin/keys", &[("org", "default"), ("name", "x")]).await;
    assert_eq!((page.status, page.location()), (303, "/admin/login"), "a form needs a login too");

    // The login form's own CSRF token: refused without it, whatever the admin token.
    let page = browser.post("/admin/login", &[("token", ADMIN)]).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!browser.cookies.contains_key("hearth_admin"));
    let page = browser.login("not-the-token").await;
    assert_eq!(page.status, 401);
    assert!(page.body.contains("not an admin token"), "{}", page.body);

    let page = browser.login(ADMIN).await;
    assert_eq!((page.status, page.location()), (303, "/admin"));
    let cookie = page.set_cookies().into_iter().find(|c| c.starts_with("hearth_admin=")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure: {cookie}");
    let value = browser.cookies["hearth_admin"].clone();
    let conn = Connection::open(hearth.db_path()).unwrap();
    let stored: i64 = conn.query_row("SELECT count(*) FROM admin_sessions", [], |r| r.get(0)).unwrap();
    let plain: i64 = conn
        .query_row("SELECT count(*) FROM admin_sessions WHERE token_hash = CAST(?1 AS BLOB)", [&value], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!((stored, plain), (1, 0), "the database keeps a hash of the cookie, not the cookie");

    let overview = browser.get("/admin").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("<h1>Overview</h1>"));
    let csrf = overview.csrf();
    let page = browser.post("/admin/logout", &[]).await;
    assert_eq!(page.status, 403, "logout is a form with a CSRF token too");
    let page = browser.post("/admin/logout", &[("csrf_token", &csrf)]).await;
    assert_eq!((page.status, page.location()), (303, "/admin/login"));
    assert!(!browser.cookies.contains_key("hearth_admin"), "the cookie is cleared");
    // The old cookie value no longer opens anything: the login ended server-side.
    browser.cookies.insert("hearth_admin".into(), value);
    let page = browser.get("/admin").await;
    assert_eq!((page.status, page.location()), (303, "/admin/login"));

    // Behind a TLS proxy the cookie is Secure.
    let mut secure = Browser::new(&hearth);
    secure.forwarded_https = true;
    let page = secure.login(ADMIN).await;
    let cookie = page.set_cookies().into_iter().find(|c| c.starts_with("hearth_admin=")).unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_client() {
    let hearth = options().env("HEARTH_ADMIN_TOKEN", ADMIN).env("HEARTH_ADMIN_LOGIN_RPM", "3").start().await;
    let mut browser = Browser::new(&hearth);
    for _ in 0..3 {
        assert_eq!(browser.login("wrong").await.status, 401);
    }
    let page = browser.login(ADMIN).await;
    assert_eq!(page.status, 429, "even the right token waits: {}", page.body);
    assert!(header(&page, "retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
}

#[tokio::test]
async fn every_page_renders_its_data_escaped_with_the_security_headers() {
    let hearth = admin_server().await;
    cli(&hearth, &["orgs", "create", "acme"]);
    register_worker(&hearth, "<script>alert(1)</script>", "go", "1.0.0").await;
    let api = Api::new(&hearth);
    let turn = api.start(&echo("hello <b>admin</b>")).await;
    let session = turn["session_id"].as_str().unwrap().to_owned();
    let run = turn["id"].as_str().unwrap().to_owned();
    api.wait_end(&run).await;
    let (status, key) = call(
        &hearth,
        Method::POST,
        "/admin/api/keys",
        Some(ADMIN),
        Some(&json!({"org": "acme", "name": "acme-ci"})),
    )
    .await;
    assert_eq!(status, 201);
    let acme_key = key["secret"].as_str().unwrap().to_owned();
    let acme_turn = Api::with_key(&hearth, &acme_key).start(&echo("from acme")).await;
    let acme_session = acme_turn["session_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &hearth,
        Method::PUT,
        "/admin/api/orgs/acme/runner",
        Some(ADMIN),
        Some(&json!({"runner": "go", "reason": "canary <1>"})),
    )
    .await;
    assert_eq!(status, 200);

    let mut browser = Browser::logged_in(&hearth).await;
    let pages = [
        ("/admin", vec!["<h1>Overview</h1>", ">ts<", ">go<", "completed"]),
        (
            "/admin/workers",
            vec!["&#60;script&#62;alert(1)&#60;/script&#62;", "1.0.0", "test-host", "healthy", "embedded"],
        ),
        ("/admin/sessions", vec![session.as_str(), acme_session.as_str(), "href=\"/admin/orgs/acme\""]),
        ("/admin/orgs", vec!["href=\"/admin/orgs/acme\"", "flag", ">go<"]),
        ("/admin/orgs/acme", vec!["admin-api", "canary &#60;1&#62;", "Set flag", "Clear flag"]),
        ("/admin/keys", vec!["acme-ci", "Revoke", key["id"].as_str().unwrap()]),
    ];
    for (path, needles) in pages {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(header(&page, "content-type").starts_with("text/html"), "{path}");
        assert!(header(&page, "content-security-policy").contains("default-src 'none'"), "{path}");
        assert!(
            !header(&page, "content-security-policy").contains("script-src"),
            "no script allowed: {path}"
        );
        assert_eq!(header(&page, "x-frame-options"), "DENY", "{path}");
        assert_eq!(header(&page, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&page, "referrer-policy"), "same-origin", "{path}");
        assert!(!page.body.contains("<script"), "{path} holds a script tag");
        assert!(!page.body.contains(&acme_key), "{path} shows a secret");
        for needle in needles {
            assert!(page.body.contains(needle), "{path} lacks {needle}:\n{}", page.body);
        }
    }

    // The session page: resolved profile in <details>, the run, the messages, the timeline.
    let page = browser.get(&format!("/admin/sessions/{session}")).await;
    assert_eq!(page.status, 200);
    for needle in [
        "<details>",
        "Resolved profile",
        "&#34;runner&#34;: &#34;ts&#34;",
        run.as_str(),
        "run.completed",
        "hello &#60;b&#62;admin&#60;/b&#62;",
        "Events of",
    ] {
        assert!(page.body.contains(needle), "session page lacks {needle}:\n{}", page.body);
    }
    assert_eq!(browser.get("/admin/sessions/ses_nothere").await.status, 404);
    assert_eq!(browser.get("/admin/orgs/nothere").await.status, 404);

    // Filters: by organization, by status, by runner; a bad value says so.
    let page = browser.get("/admin/sessions?org=acme").await;
    assert!(page.body.contains(&acme_session) && !page.body.contains(&session), "{}", page.body);
    let page = browser.get("/admin/sessions?status=running").await;
    assert!(!page.body.contains(&acme_session) && page.body.contains("No session matches"), "{}", page.body);
    let page = browser.get("/admin/sessions?runner=ts&status=idle").await;
    assert!(page.body.contains(&session), "{}", page.body);
    let page = browser.get("/admin/sessions?org=nope").await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("no organization with slug `nope`"), "{}", page.body);
    let page = browser.get("/admin/sessions?until=2000-01-01T00:00").await;
    assert!(page.body.contains("No session matches"), "nothing was created before 2000");

    // The stylesheet comes from the binary.
    let css = browser.get("/admin/static/admin.css").await;
    assert_eq!((css.status, header(&css, "content-type")), (200, "text/css; charset=utf-8"));
    assert!(css.body.contains(".badge"));
}

#[tokio::test]
async fn the_sessions_listing_pages_by_keyset() {
    let hearth = admin_server().await;
    let api = Api::new(&hearth);
    let mut ids = Vec::new();
    for i in 0..53 {
        ids.push(api.start(&echo(&format!("turn {i}"))).await["session_id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut browser = Browser::logged_in(&hearth).await;
    let first = browser.get("/admin/sessions").await;
    let shown = |page: &Page| {
        ids.iter().filter(|id| page.body.contains(&format!(">{id}<"))).cloned().collect::<Vec<_>>()
    };
    assert_eq!(shown(&first), ids[..50], "newest first, 50 a page");
    let next =
        first.body.split("href=\"").find(|s| s.starts_with("/admin/sessions?cursor=")).expect("a next link");
    let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
    assert!(next.ends_with(&ids[49]), "the cursor is the last id shown: {next}");
    let second = browser.get(&next).await;
    assert_eq!(shown(&second), ids[50..]);
    assert!(!second.body.contains("rel=\"next\""), "no page after the last");
    assert!(second.body.contains("Newest"));
    assert_eq!(browser.get("/admin/sessions?cursor=not-an-id").await.status, 400);
}

#[tokio::test]
async fn forms_refuse_a_missing_csrf_token_and_act_through_the_guard() {
    let hearth = admin_server().await;
    cli(&hearth, &["orgs", "create", "acme"]);
    let mut browser = Browser::logged_in(&hearth).await;
    let csrf = browser.get("/admin/orgs/acme").await.csrf();
    let audit = || -> i64 {
        Connection::open(hearth.db_path())
            .unwrap()
            .query_row("SELECT count(*) FROM flag_changes", [], |r| r.get(0))
            .unwrap()
    };

    for token in [None, Some("wrong"), Some("")] {
        let mut form = vec![("action", "set"), ("runner", "go"), ("force", "true")];
        if let Some(token) = token {
            form.push(("csrf_token", token));
        }
        let page = browser.post("/admin/orgs/acme/runner", &form).await;
        assert_eq!(page.status, 403, "csrf {token:?}: {}", page.body);
        assert!(page.body.contains("CSRF"), "{}", page.body);
    }
    assert_eq!(audit(), 0, "a refused form changes nothing");
    for path in ["/admin/keys", "/admin/keys/key_x/revoke", "/admin/workers/wrk_x/drain"] {
        assert_eq!(browser.post(path, &[("org", "acme"), ("name", "x")]).await.status, 403, "{path}");
    }

    // The guard: no healthy go worker → 409 with the reason, nothing written.
    let page = browser
        .post(
            "/admin/orgs/acme/runner",
            &[("csrf_token", &csrf), ("action", "set"), ("runner", "go"), ("reason", "try")],
        )
        .await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(page.body.contains("no healthy worker of runtime `go`"), "{}", page.body);
    assert_eq!(audit(), 0);
    // Forced: set, audited, shown.
    let page = browser
        .post(
            "/admin/orgs/acme/runner",
            &[
                ("csrf_token", &csrf),
                ("action", "set"),
                ("runner", "go"),
                ("force", "true"),
                ("reason", "forced canary"),
            ],
        )
        .await;
    assert_eq!((page.status, page.location()), (303, "/admin/orgs/acme"), "{}", page.body);
    let page = browser.get("/admin/orgs/acme").await;
    assert!(
        page.body.contains("admin-web")
            && page.body.contains("forced canary")
            && page.body.contains(">forced<"),
        "{}",
        page.body
    );
    // Clear.
    let page = browser
        .post("/admin/orgs/acme/runner", &[("csrf_token", &csrf), ("action", "clear"), ("reason", "back")])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(audit(), 2);

    // Mint: the secret is on that answer only; revoke.
    let page =
        browser.post("/admin/keys", &[("csrf_token", &csrf), ("org", "acme"), ("name", "web-key")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let at = page.body.find("hk_").expect("the secret is shown");
    let secret: String =
        page.body[at..].chars().take_while(char::is_ascii_alphanumeric_or_underscore).collect();
    assert_eq!(hearth.get_with_key("/v1/sessions", &secret).send().await.unwrap().status(), 200);
    let listing = browser.get("/admin/keys").await;
    assert!(listing.body.contains("web-key") && !listing.body.contains(&secret), "shown once");
    let id =
        listing.body.split("action=\"/admin/keys/").nth(1).unwrap().split('/').next().unwrap().to_owned();
    let page = browser.post(&format!("/admin/keys/{id}/revoke"), &[("csrf_token", &csrf)]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Revoked API key") && page.body.contains(">revoked<"), "{}", page.body);
    assert_eq!(hearth.get_with_key("/v1/sessions", &secret).send().await.unwrap().status(), 401);

    // Drain an external worker; the embedded one cannot be drained.
    let worker = register_worker(&hearth, "go-1", "go", "1.0.0").await;
    let page = browser.post(&format!("/admin/workers/{worker}/drain"), &[("csrf_token", &csrf)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("is draining") && page.body.contains(">draining<"), "{}", page.body);
    let (_, workers) = call(&hearth, Method::GET, "/admin/api/workers", Some(ADMIN), None).await;
    let drained =
        workers["data"].as_array().unwrap().iter().find(|w| w["id"] == worker.as_str()).unwrap().clone();
    assert_eq!((drained["status"].as_str(), drained["healthy"].as_bool()), (Some("draining"), Some(false)));
    let embedded = workers["data"].as_array().unwrap().iter().find(|w| w["embedded"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = browser.post(&format!("/admin/workers/{embedded}/drain"), &[("csrf_token", &csrf)]).await;
    assert_eq!(page.status, 400, "{}", page.body);
}

/// `char::is_ascii_alphanumeric` or `_`, for reading a secret out of a page.
trait SecretChar {
    fn is_ascii_alphanumeric_or_underscore(&self) -> bool;
}

impl SecretChar for char {
    fn is_ascii_alphanumeric_or_underscore(&self) -> bool {
        self.is_ascii_alphanumeric() || *self == '_'
    }
}
