//! The web console a master serves (`console = "HOST:PORT"` in its config,
//! or `strata master --console`): one page that shows the live cluster —
//! masters and the leader, nodes with state and disks, volumes with usage
//! and redundancy, their partitions and replicas, repairs in progress, the
//! cache tier, recent events — refreshed every two seconds from
//! `GET /api/cluster` ([`api`]). Only keys of the `admin` user get in
//! ([`auth`]). Plain HTTP: put it behind TLS or keep it on a private network.

pub mod api;
pub mod auth;

use std::sync::Arc;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use strata_rpc::MasterClient;

pub use auth::{ADMIN_USER, MAX_LINK_LIFETIME, login_signature};

const PAGE: &str = include_str!("page.html");

struct Console {
    masters: MasterClient,
    sessions: auth::Sessions,
}

/// Serves the console on `listener`, reading the cluster through `masters`,
/// until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, masters: MasterClient) -> std::io::Result<()> {
    let console = Arc::new(Console { masters, sessions: auth::Sessions::default() });
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/login", get(login_page).post(login_form))
        .route("/api/cluster", get(cluster))
        .with_state(console);
    axum::serve(listener, app).await
}

fn logged_in(console: &Console, headers: &HeaderMap) -> bool {
    console.sessions.admits(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()))
}

async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !logged_in(&console, &headers) {
        return Redirect::to("/login").into_response();
    }
    Html(PAGE).into_response()
}

async fn cluster(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if !logged_in(&console, &headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": "log in first" }))).into_response();
    }
    match api::cluster(&console.masters).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console: reading the cluster failed");
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (status, axum::Json(serde_json::json!({ "error": e.to_string(), "code": e.code.name() }))).into_response()
        }
    }
}

/// A signed login link's query (see `strata console url`).
#[derive(Debug, Deserialize)]
struct LinkQuery {
    key: Option<String>,
    expires: Option<u64>,
    signature: Option<String>,
}

async fn login_page(State(console): State<Arc<Console>>, Query(link): Query<LinkQuery>) -> Response {
    let (Some(key), Some(expires), Some(signature)) = (link.key, link.expires, link.signature) else {
        return login_form_page(StatusCode::OK, "");
    };
    let result = console.sessions.login_with_link(&console.masters, &key, expires, &signature).await;
    logged_in_or_refused(result)
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    access_key_id: String,
    secret_access_key: String,
}

async fn login_form(State(console): State<Arc<Console>>, Form(form): Form<LoginForm>) -> Response {
    let result =
        console.sessions.login_with_secret(&console.masters, &form.access_key_id, &form.secret_access_key).await;
    logged_in_or_refused(result)
}

fn logged_in_or_refused(result: Result<String, auth::Refusal>) -> Response {
    match result {
        Ok(token) => {
            let cookie = format!("{}={token}; HttpOnly; SameSite=Strict; Path=/", auth::COOKIE);
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/".to_string()), (header::SET_COOKIE, cookie)]).into_response()
        }
        Err(auth::Refusal::BadCredentials) => login_form_page(StatusCode::UNAUTHORIZED, "Not a key of the admin user."),
        Err(auth::Refusal::Expired) => login_form_page(StatusCode::UNAUTHORIZED, "This login link has expired."),
        Err(auth::Refusal::Unavailable(e)) => {
            tracing::warn!(error = %e, "console: checking a login failed");
            login_form_page(StatusCode::SERVICE_UNAVAILABLE, "The masters did not answer; try again.")
        }
    }
}

fn login_form_page(status: StatusCode, problem: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Strata console: log in</title></head>\
         <body style=\"font-family:sans-serif;max-width:28em;margin:4em auto\"><h1>Strata console</h1>\
         <p style=\"color:#b00\">{problem}</p>\
         <form method=\"post\" action=\"/login\">\
         <p><label>Access key id of the {ADMIN_USER} user<br><input name=\"access_key_id\" size=\"32\"></label></p>\
         <p><label>Secret<br><input name=\"secret_access_key\" type=\"password\" size=\"48\"></label></p>\
         <p><button>Log in</button></p></form>\
         <p>Or open the link <code>strata console url</code> prints.</p></body></html>"
    );
    (status, Html(body)).into_response()
}
