//! Who may use the studio, and proof that a state-changing request came from its own pages.
//!
//! On loopback (the default) anyone on the host may look; elsewhere `DRAMAQ_STUDIO_TOKEN` is
//! required to start, and every request needs the session cookie set by signing in once with
//! that token (HttpOnly, SameSite=Strict, so other sites cannot ride on it). Independently,
//! every POST must carry the per-process CSRF token (form field `csrf` or header
//! `X-CSRF-Token`), which only the studio's own pages (and `GET /api/…` answers) show; GETs
//! never change state.

use crate::Studio;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use rand::Rng;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "dq_studio";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub struct Auth {
    /// sha256 of the sign-in token; `None` on loopback without one.
    token_digest: Option<[u8; 32]>,
    /// Session cookie value given after sign-in (random per process).
    session: String,
    /// CSRF token of this process.
    csrf: String,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Compare without leaking where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(token: Option<String>) -> Auth {
        Auth {
            token_digest: token.filter(|t| !t.is_empty()).map(|t| digest(&t)),
            session: random_hex(),
            csrf: random_hex(),
        }
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn csrf_ok(&self, given: &str) -> bool {
        same(given.as_bytes(), self.csrf.as_bytes())
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        if self.token_digest.is_none() {
            return true;
        }
        cookie(headers, SESSION_COOKIE).is_some_and(|v| same(v.as_bytes(), self.session.as_bytes()))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Runs before every route: sign-in when a token is configured, CSRF on every POST.
pub async fn guard(State(studio): State<Studio>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = path == "/login" || path.starts_with("/assets/");
    if !public && !studio.auth.signed_in(req.headers()) {
        if req.method() == Method::GET && !path.starts_with("/api/") && !path.starts_with("/media/")
        {
            return Redirect::to("/login").into_response();
        }
        return (
            StatusCode::UNAUTHORIZED,
            "sign in first: POST /login with the token\n",
        )
            .into_response();
    }
    if req.method() == Method::POST && path != "/login" {
        // The header is checked here; a form's `csrf` field is checked by the body parser
        // (`api::Input`), which sees the body. A request with neither never gets that far.
        let header_ok = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| studio.auth.csrf_ok(v));
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !header_ok && !is_form {
            return (StatusCode::FORBIDDEN, "missing or wrong CSRF token\n").into_response();
        }
    } else if req.method() != Method::GET && req.method() != Method::HEAD && path != "/login" {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    next.run(req).await
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: the token once, a session cookie back.
pub async fn login(State(studio): State<Studio>, Form(form): Form<LoginForm>) -> Response {
    match &studio.auth.token_digest {
        None => Redirect::to("/").into_response(),
        Some(d) if same(&digest(&form.token), d) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                studio.auth.session
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Some(_) => (StatusCode::UNAUTHORIZED, "wrong token\n").into_response(),
    }
}
