//! Who may use the console: users with passwords (a browser session with a CSRF token)
//! and bearer tokens (scripts), each with a role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flext_domain::Error;
use serde::Deserialize;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Look at everything (personal fields masked); act on nothing.
    ReadOnly,
    /// Also pause, resume and rebuild consumers, redrive and discard dead letters.
    Operator,
}

impl Role {
    /// `read-only` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
        }
    }

    /// Parses `read-only` (or `read`, `readonly`) and `operator`.
    pub fn parse(s: &str) -> Result<Role, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read-only" | "readonly" | "read" => Ok(Role::ReadOnly),
            "operator" => Ok(Role::Operator),
            other => Err(Error::invalid_argument(
                "UNKNOWN_ROLE",
                format!("{other:?} is not a role (read-only or operator)"),
            )),
        }
    }
}

/// The console's settings: where it is mounted, who may sign in, and how it measures.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub(crate) base_path: String,
    users: Vec<(String, String, Role)>,
    tokens: Vec<(String, Role)>,
    pub(crate) stall_after: Duration,
    pub(crate) action_timeout: Duration,
    pub(crate) session_ttl: Duration,
    pub(crate) secure_cookies: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig::new()
    }
}

/// The shortest bearer token the console accepts.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminConfig {
    /// Mounted at `/`, nobody let in yet, stall alerts after 60 s, actions waited for 30 s,
    /// sessions of 8 hours.
    pub fn new() -> AdminConfig {
        AdminConfig {
            base_path: String::new(),
            users: Vec::new(),
            tokens: Vec::new(),
            stall_after: Duration::from_secs(60),
            action_timeout: Duration::from_secs(30),
            session_ttl: Duration::from_secs(8 * 3600),
            secure_cookies: false,
        }
    }

    /// The path the router is nested under (`/admin`), for its links and its cookie.
    pub fn base_path(mut self, path: &str) -> AdminConfig {
        self.base_path = path.trim_end_matches('/').to_owned();
        if !self.base_path.is_empty() && !self.base_path.starts_with('/') {
            self.base_path.insert(0, '/');
        }
        self
    }

    /// Lets `name` sign in with `password` in `role`.
    pub fn user(mut self, name: &str, password: &str, role: Role) -> AdminConfig {
        self.users
            .push((name.to_owned(), password.to_owned(), role));
        self
    }

    /// Lets a request with `Authorization: Bearer <token>` in, in `role`. A token is not a
    /// cookie a browser sends by itself, so its requests need no CSRF token.
    pub fn token(mut self, token: &str, role: Role) -> AdminConfig {
        self.tokens.push((token.to_owned(), role));
        self
    }

    /// How long a consumer's checkpoint may stand still while events wait before the
    /// console shows it stalled.
    pub fn stall_after(mut self, after: Duration) -> AdminConfig {
        self.stall_after = after;
        self
    }

    /// How long an action waits for the consumer's owner to carry it out before the page
    /// says it is queued.
    pub fn action_timeout(mut self, timeout: Duration) -> AdminConfig {
        self.action_timeout = timeout;
        self
    }

    /// Marks the session cookie `Secure` (served over HTTPS only): set it when the
    /// console is behind TLS.
    pub fn secure_cookies(mut self, secure: bool) -> AdminConfig {
        self.secure_cookies = secure;
        self
    }

    /// Users and tokens from text, as `flext admin serve` reads them from the environment:
    /// users `name:role:password` and tokens `role:token`, separated by commas or newlines.
    pub fn with_credentials(mut self, users: &str, tokens: &str) -> Result<AdminConfig, Error> {
        let entries = |s: &str| {
            s.split([',', '\n'])
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        for entry in entries(users) {
            let mut parts = entry.splitn(3, ':');
            let (Some(name), Some(role), Some(password)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::invalid_argument(
                    "INVALID_ADMIN_USER",
                    "a user is name:role:password",
                ));
            };
            self = self.user(name, password, Role::parse(role)?);
        }
        for entry in entries(tokens) {
            let Some((role, token)) = entry.split_once(':') else {
                return Err(Error::invalid_argument(
                    "INVALID_ADMIN_TOKEN",
                    "a token is role:token",
                ));
            };
            self = self.token(token, Role::parse(role)?);
        }
        Ok(self)
    }

    /// Refuses a console nobody may use, or one with a guessable credential.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.users.is_empty() && self.tokens.is_empty() {
            return Err(Error::failed_precondition(
                "ADMIN_NO_CREDENTIALS",
                "the admin console lets nobody in anonymously: configure a user or a token",
            ));
        }
        if let Some((name, ..)) = self
            .users
            .iter()
            .find(|(name, password, _)| name.is_empty() || password.len() < 8)
        {
            return Err(Error::invalid_argument(
                "WEAK_ADMIN_PASSWORD",
                format!("user {name:?} needs a name and a password of 8 characters or more"),
            ));
        }
        if self.tokens.iter().any(|(t, _)| t.len() < MIN_TOKEN_LEN) {
            return Err(Error::invalid_argument(
                "WEAK_ADMIN_TOKEN",
                format!("a bearer token needs {MIN_TOKEN_LEN} characters or more"),
            ));
        }
        Ok(())
    }

    /// The role of `name` signing in with `password`.
    pub(crate) fn sign_in(&self, name: &str, password: &str) -> Option<Role> {
        // Compare every entry whole, so the time taken tells nothing.
        let mut found = None;
        for (n, p, role) in &self.users {
            if same(n.as_bytes(), name.as_bytes()) & same(p.as_bytes(), password.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }

    /// Whether `name` is a configured user (failed sign-ins are counted for those only,
    /// so the count cannot grow with made-up names).
    pub(crate) fn is_user(&self, name: &str) -> bool {
        self.users.iter().any(|(n, ..)| n == name)
    }

    /// The role a bearer token carries.
    fn bearer(&self, token: &str) -> Option<Role> {
        let mut found = None;
        for (t, role) in &self.tokens {
            if same(t.as_bytes(), token.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Equality that looks at every byte whatever it finds.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Someone let in.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) role: Role,
    /// The session's CSRF token; `None` for a bearer token.
    pub(crate) csrf: Option<String>,
    /// The session's id; `None` for a bearer token.
    pub(crate) session: Option<String>,
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
    flash: Option<String>,
}

/// The signed-in browsers, and the users' recent failed sign-ins.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failed sign-ins in a row after which a user is locked out for [`LOCKOUT`].
pub(crate) const MAX_FAILURES: u32 = 5;
/// How long a user stays locked out after [`MAX_FAILURES`] failed sign-ins.
pub(crate) const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// The cookie that names a session.
pub(crate) const COOKIE: &str = "flext_admin";

/// 244 random bits, from the operating system's generator.
fn secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Starts a session; its id, for the cookie.
    pub(crate) fn start(&self, name: &str, role: Role, ttl: Duration) -> String {
        let id = secret();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        map.insert(
            id.clone(),
            Session {
                name: name.to_owned(),
                role,
                csrf: secret(),
                expires: now + ttl,
                flash: None,
            },
        );
        id
    }

    /// Whether `name` is locked out: [`MAX_FAILURES`] failed sign-ins, the last less
    /// than [`LOCKOUT`] ago.
    pub(crate) fn locked_out(&self, name: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(name)
            .is_some_and(|(n, last)| *n >= MAX_FAILURES && last.elapsed() < LOCKOUT)
    }

    /// Counts a failed sign-in of `name` (a lockout that ran out starts over).
    pub(crate) fn failed(&self, name: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures
            .entry(name.to_owned())
            .or_insert((0, Instant::now()));
        if entry.1.elapsed() >= LOCKOUT {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
    }

    /// Forgets `name`'s failed sign-ins.
    pub(crate) fn succeeded(&self, name: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    pub(crate) fn end(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn user(&self, id: &str) -> Option<User> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| User {
                name: s.name.clone(),
                role: s.role,
                csrf: Some(s.csrf.clone()),
                session: Some(id.to_owned()),
            })
    }

    /// Leaves a message for the session's next page.
    pub(crate) fn flash(&self, id: &str, text: String) {
        if let Some(s) = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            s.flash = Some(text);
        }
    }

    /// The message left for this page, once.
    pub(crate) fn take_flash(&self, id: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who sent `headers`: a live session's cookie or a known bearer token.
pub(crate) fn identify(
    headers: &HeaderMap,
    sessions: &Sessions,
    config: &AdminConfig,
) -> Option<User> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return config.bearer(token.trim()).map(|role| User {
            name: "token".to_owned(),
            role,
            csrf: None,
            session: None,
        });
    }
    cookie(headers, COOKIE).and_then(|id| sessions.user(id))
}

/// The `Set-Cookie` value that starts (or, with an empty id, ends) a session.
pub(crate) fn set_cookie(config: &AdminConfig, id: &str) -> String {
    let path = if config.base_path.is_empty() {
        "/"
    } else {
        &config.base_path
    };
    let max_age = if id.is_empty() {
        0
    } else {
        config.session_ttl.as_secs()
    };
    format!(
        "{COOKIE}={id}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if config.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The form every action posts: the CSRF token, and what some actions need.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub(crate) csrf: Option<String>,
    /// `rebuild`: `start`, a position or an RFC 3339 time.
    #[serde(default)]
    pub(crate) from: Option<String>,
    /// The page to come back to: `dead-letters`, else the consumer's page.
    #[serde(default)]
    pub(crate) back: Option<String>,
}

/// An action a user may take: an operator, with the session's CSRF token (or a bearer
/// token). Every handler that changes something takes this.
pub(crate) struct Act {
    pub(crate) user: User,
    pub(crate) form: ActionForm,
}

/// Why an action was refused, as a plain-text response.
pub(crate) fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why.to_owned(),
    )
        .into_response()
}

impl<St: Send + Sync> FromRequest<St> for Act {
    type Rejection = Response;

    async fn from_request(req: Request, state: &St) -> Result<Act, Response> {
        let Some(user) = req.extensions().get::<User>().cloned() else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "sign in first"));
        };
        if user.role != Role::Operator {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "your role is read-only: it may look but not act",
            ));
        }
        let axum::Form(form) = axum::Form::<ActionForm>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(expected) = &user.csrf {
            let given = form.csrf.as_deref().unwrap_or("");
            if !same(given.as_bytes(), expected.as_bytes()) {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "the form's CSRF token is missing or wrong: reload the page and try again",
                ));
            }
        }
        Ok(Act { user, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_and_checked() {
        let config = AdminConfig::new()
            .with_credentials(
                "ada:operator:long enough pw, bob:read:another pw",
                "read-only:0123456789abcdef",
            )
            .expect("parse");
        assert!(config.check().is_ok());
        assert_eq!(
            config.sign_in("ada", "long enough pw"),
            Some(Role::Operator)
        );
        assert_eq!(config.sign_in("bob", "another pw"), Some(Role::ReadOnly));
        assert_eq!(config.sign_in("ada", "another pw"), None);
        assert_eq!(config.bearer("0123456789abcdef"), Some(Role::ReadOnly));
        assert_eq!(config.bearer("0123456789abcdeF"), None);
        let e = AdminConfig::new().check().expect_err("nobody");
        assert_eq!(e.reason(), "ADMIN_NO_CREDENTIALS");
        let e = AdminConfig::new()
            .token("short", Role::Operator)
            .check()
            .expect_err("weak");
        assert_eq!(e.reason(), "WEAK_ADMIN_TOKEN");
        let e = AdminConfig::new()
            .with_credentials("ada:boss:pw", "")
            .expect_err("role");
        assert_eq!(e.reason(), "UNKNOWN_ROLE");
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; flext_admin=xyz; b=2".parse().expect("header"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
    }
}
