//! The admin pages' read side: the overview, workers, sessions and a session, organizations and
//! an organization, API keys, and the error page. Each handler asks the `admin` service and
//! fills a template (`templates/admin/`); every value is escaped by askama.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::rows::{
    self, ChangeRow, FailureRow, KeyRow, OrgRow, RunView, RunnerRow, SessionRowView, WorkerRow,
};
use super::session::LoggedIn;
use super::view::{self, When};
use crate::admin::{AdminError, SessionQuery};
use crate::app::AppState;
use crate::db::now_ms;
use crate::http::error::ApiError;

/// An error as a page: its status and message.
#[derive(Template, WebTemplate)]
#[template(path = "admin/error.html")]
pub struct ErrorPage {
    nav: &'static str,
    csrf: String,
    title: String,
    message: String,
}

impl ErrorPage {
    /// The page for `message` with `status`.
    pub fn response(status: StatusCode, message: &str, csrf: &str) -> Response {
        let title = status.canonical_reason().unwrap_or("Error").to_owned();
        let page = Self { nav: "", csrf: csrf.to_owned(), title, message: message.to_owned() };
        (status, page).into_response()
    }

    /// The page of a service error (a storage failure is logged once, as on the API).
    pub fn from_admin(error: AdminError, csrf: &str) -> Response {
        let api = ApiError::from(error);
        Self::response(api.status(), &api.to_string(), csrf)
    }
}

/// Turns a service error into its page.
pub(super) fn fail(login: &LoggedIn) -> impl Fn(AdminError) -> Response + '_ {
    move |e| ErrorPage::from_admin(e, &login.login.csrf)
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    nav: &'static str,
    csrf: String,
    runners: Vec<RunnerRow>,
    completed: i64,
    failed: i64,
    cancelled: i64,
    failures: Vec<FailureRow>,
}

/// `GET /admin`.
pub async fn overview(login: LoggedIn, State(state): State<AppState>) -> Result<Response, Response> {
    let o = state.admin().overview().await.map_err(|e| fail(&login)(e.into()))?;
    let now = now_ms();
    let count = |s: &str| o.finished_last_hour.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
    Ok(OverviewPage {
        nav: "overview",
        csrf: login.login.csrf.clone(),
        completed: count("completed"),
        failed: count("failed"),
        cancelled: count("cancelled"),
        runners: o.runners.iter().map(RunnerRow::from).collect(),
        failures: o.recent_failures.iter().map(|f| FailureRow::new(f, now)).collect(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/workers.html")]
pub(super) struct WorkersPage {
    pub(super) nav: &'static str,
    pub(super) csrf: String,
    pub(super) notice: String,
    pub(super) workers: Vec<WorkerRow>,
}

/// The workers page with `notice`.
pub(super) async fn workers_page(
    state: &AppState,
    login: &LoggedIn,
    notice: String,
) -> Result<Response, Response> {
    let workers = state.admin().workers().await.map_err(|e| fail(login)(e.into()))?;
    let now = now_ms();
    let workers = workers.iter().map(|w| WorkerRow::new(w, now)).collect();
    Ok(WorkersPage { nav: "workers", csrf: login.login.csrf.clone(), notice, workers }.into_response())
}

/// `GET /admin/workers`.
pub async fn workers(login: LoggedIn, State(state): State<AppState>) -> Result<Response, Response> {
    workers_page(&state, &login, String::new()).await
}

/// The query string of `/admin/sessions`: every field as the form sends it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SessionsQuery {
    org: String,
    status: String,
    runner: String,
    user: String,
    since: String,
    until: String,
    cursor: String,
}

/// The filters as the form shows them again.
#[derive(Debug, Clone, Default)]
pub(super) struct FilterView {
    pub(super) org: String,
    pub(super) status: String,
    pub(super) runner: String,
    pub(super) user: String,
    pub(super) since: String,
    pub(super) until: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/sessions.html")]
struct SessionsPage {
    nav: &'static str,
    csrf: String,
    orgs: Vec<String>,
    statuses: Vec<String>,
    runners: Vec<String>,
    filter: FilterView,
    error: String,
    sessions: Vec<SessionRowView>,
    paged: bool,
    partial: bool,
    first_href: String,
    next_href: String,
}

/// Sessions per page.
const PAGE: u32 = 50;

/// `GET /admin/sessions`.
pub async fn sessions(
    login: LoggedIn,
    State(state): State<AppState>,
    Query(q): Query<SessionsQuery>,
) -> Result<Response, Response> {
    let admin = state.admin();
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let query = SessionQuery {
        org: opt(&q.org),
        user: opt(&q.user),
        status: opt(&q.status),
        runner: opt(&q.runner),
        since: view::parse_local(&q.since),
        until: view::parse_local(&q.until),
        cursor: opt(&q.cursor),
        limit: PAGE,
    };
    let filter = FilterView {
        org: q.org.trim().to_owned(),
        status: q.status.trim().to_owned(),
        runner: q.runner.trim().to_owned(),
        user: q.user.trim().to_owned(),
        since: q.since.trim().to_owned(),
        until: q.until.trim().to_owned(),
    };
    let (page, error, status) = match admin.sessions(query).await {
        Ok(page) => (Some(page), String::new(), StatusCode::OK),
        Err(e @ AdminError::Invalid { .. }) => (None, e.to_string(), StatusCode::BAD_REQUEST),
        Err(e) => return Err(fail(&login)(e)),
    };
    let orgs = admin.org_slugs().await.map_err(|e| fail(&login)(e.into()))?;
    let now = now_ms();
    let (sessions, next, partial) = page.map(|p| (p.sessions, p.next_cursor, p.partial)).unwrap_or_default();
    let base = rows::filter_query(&filter);
    let next_href =
        next.map(|c| format!("/admin/sessions?{base}cursor={}", rows::encode(&c))).unwrap_or_default();
    let page = SessionsPage {
        nav: "sessions",
        csrf: login.login.csrf.clone(),
        orgs,
        statuses: vec!["idle".into(), "running".into()],
        runners: admin.runner().runners.clone(),
        error,
        sessions: sessions.iter().map(|s| SessionRowView::new(s, now)).collect(),
        paged: !q.cursor.trim().is_empty(),
        partial,
        first_href: format!("/admin/sessions?{base}"),
        next_href,
        filter,
    };
    Ok((status, page).into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/session.html")]
struct SessionPageView {
    nav: &'static str,
    csrf: String,
    id: String,
    org: String,
    org_id: String,
    user: String,
    status: String,
    status_class: &'static str,
    runner: String,
    runner_reason: String,
    created: When,
    updated: When,
    profile: String,
    runs: Vec<RunView>,
    messages: Vec<rows::MessageView>,
}

/// `GET /admin/sessions/{id}`.
pub async fn session(
    login: LoggedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let d = state.admin().session(&id).await.map_err(fail(&login))?;
    let now = now_ms();
    let s = &d.session;
    Ok(SessionPageView {
        nav: "sessions",
        csrf: login.login.csrf.clone(),
        id: s.id.to_string(),
        org: d.org_slug.clone().unwrap_or_default(),
        org_id: s.organization_id.to_string(),
        user: s.user_id.clone().unwrap_or_else(|| "—".into()),
        status: s.status.as_str().to_owned(),
        status_class: rows::session_class(s.status.as_str()),
        runner: s.runner.clone().unwrap_or_else(|| "—".into()),
        runner_reason: s.resolved_profile.runner_reason.clone(),
        created: When::at(s.created_at, now),
        updated: When::at(s.updated_at, now),
        profile: d.profile_json(),
        runs: d.runs.iter().map(|r| RunView::new(r, now)).collect(),
        messages: d.messages.iter().map(rows::MessageView::from).collect(),
    }
    .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/orgs.html")]
struct OrgsPage {
    nav: &'static str,
    csrf: String,
    orgs: Vec<OrgRow>,
}

/// `GET /admin/orgs`.
pub async fn orgs(login: LoggedIn, State(state): State<AppState>) -> Result<Response, Response> {
    let orgs = state.admin().orgs().await.map_err(|e| fail(&login)(e.into()))?;
    let orgs = orgs.iter().map(OrgRow::from).collect();
    Ok(OrgsPage { nav: "orgs", csrf: login.login.csrf.clone(), orgs }.into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/org.html")]
pub(super) struct OrgPage {
    nav: &'static str,
    csrf: String,
    slug: String,
    name: String,
    id: String,
    flag: String,
    effective: String,
    reason: String,
    features: String,
    runners: Vec<String>,
    changes: Vec<ChangeRow>,
    error: String,
    notice: String,
}

/// The organization page of `slug` with a message, answered with `status`.
pub(super) async fn org_page(
    state: &AppState,
    login: &LoggedIn,
    slug: &str,
    status: StatusCode,
    (error, notice): (String, String),
) -> Result<Response, Response> {
    let org = state.admin().org(slug, 50).await.map_err(fail(login))?;
    let now = now_ms();
    let row = OrgRow::from(&org);
    let page = OrgPage {
        nav: "orgs",
        csrf: login.login.csrf.clone(),
        slug: row.slug,
        name: row.name,
        id: row.id,
        flag: row.flag,
        effective: row.effective,
        reason: row.reason,
        features: org.features_not_json.clone().unwrap_or_else(|| org.organization.features.to_string()),
        runners: state.admin().runner().runners.clone(),
        changes: org.flag_changes.iter().map(|c| ChangeRow::new(c, now)).collect(),
        error,
        notice,
    };
    Ok((status, page).into_response())
}

/// `GET /admin/orgs/{slug}`.
pub async fn org(
    login: LoggedIn,
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> Result<Response, Response> {
    org_page(&state, &login, &slug, StatusCode::OK, (String::new(), String::new())).await
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/keys.html")]
pub(super) struct KeysPage {
    nav: &'static str,
    csrf: String,
    orgs: Vec<String>,
    keys: Vec<KeyRow>,
    secret: String,
    secret_id: String,
    error: String,
    notice: String,
}

/// What the keys page says above its list.
#[derive(Debug, Default)]
pub(super) struct KeysMessage {
    /// A new key's secret and id, shown once.
    pub(super) minted: Option<(String, String)>,
    /// An error.
    pub(super) error: String,
    /// A notice.
    pub(super) notice: String,
}

/// The keys page with `message`, answered with `status`.
pub(super) async fn keys_page(
    state: &AppState,
    login: &LoggedIn,
    status: StatusCode,
    message: KeysMessage,
) -> Result<Response, Response> {
    let admin = state.admin();
    let keys = admin.keys().await.map_err(|e| fail(login)(e.into()))?;
    let orgs = admin.org_slugs().await.map_err(|e| fail(login)(e.into()))?;
    let now = now_ms();
    let (secret, secret_id) = message.minted.unwrap_or_default();
    let page = KeysPage {
        nav: "keys",
        csrf: login.login.csrf.clone(),
        orgs,
        keys: keys.iter().map(|k| KeyRow::new(k, now)).collect(),
        secret,
        secret_id,
        error: message.error,
        notice: message.notice,
    };
    Ok((status, page).into_response())
}

/// `GET /admin/keys`.
pub async fn keys(login: LoggedIn, State(state): State<AppState>) -> Result<Response, Response> {
    keys_page(&state, &login, StatusCode::OK, KeysMessage::default()).await
}
