//! The console's pages and actions.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use flext_domain::{Error, EventId, RecordedEvent, StreamId, StreamVersion};
use flext_ports::{
    ControlAction, DeadLetter, Instance, JobStats, ReadDirection, StreamQuery, StreamSummary,
    TypeCount,
};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, Act, AdminConfig, Role, Sessions, User};
use crate::ops::{self, ConsumerView, OperatorStore, Personal};

/// What every handler shares.
struct App<S> {
    store: S,
    config: AdminConfig,
    sessions: Sessions,
    /// (when, events stored) samples of the last minute, for the event rate.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Who the console acts as when it carries out a pause or resume itself.
    me: Instance,
}

/// Rows on a page of streams or events.
const PAGE: usize = 50;

/// The admin console for `store` as an axum router, to nest under
/// [`AdminConfig::base_path`] (or serve at the root).
///
/// Refused with `FAILED_PRECONDITION` `ADMIN_NO_CREDENTIALS` when `config` lets nobody
/// in, and `INVALID_ARGUMENT` when a password or token is too short to be one.
pub fn router<S: OperatorStore>(store: S, config: AdminConfig) -> Result<Router, Error> {
    config.check()?;
    let app = Arc::new(App {
        store,
        config,
        sessions: Sessions::default(),
        samples: Mutex::new(VecDeque::new()),
        me: Instance::named("flext-admin"),
    });
    let signed_in = Router::new()
        .route("/", get(dashboard::<S>))
        .route("/live", get(live::<S>))
        .route("/streams", get(streams::<S>))
        .route("/streams/{id}", get(stream::<S>))
        .route("/events/{id}", get(event::<S>))
        .route("/actions/{id}", get(action::<S>))
        .route("/search", get(search::<S>))
        .route("/consumers/{name}", get(consumer::<S>))
        .route("/consumers/{name}/{action}", post(consumer_action::<S>))
        .route("/dead-letters", get(dead_letters::<S>))
        .route(
            "/dead-letters/{consumer}/{event}/{action}",
            post(letter_action::<S>),
        )
        .route("/logout", post(logout::<S>))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticate::<S>,
        ));
    Ok(Router::new()
        .route("/login", get(login_page::<S>).post(login::<S>))
        .merge(signed_in)
        .layer(middleware::from_fn(harden))
        .with_state(app))
}

/// Headers every answer carries: not cached, not framed, no referrer.
async fn harden(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' \
             'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    res
}

/// Lets in a signed-in browser or a bearer token; anyone else gets 401 and the sign-in
/// form.
async fn authenticate<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth::identify(req.headers(), &app.sessions, &app.config) {
        Some(user) => {
            req.extensions_mut().insert(user);
            next.run(req).await
        }
        None => {
            let mut res = login_form(&app.config, "", StatusCode::UNAUTHORIZED);
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flext admin\""),
            );
            res
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    base: &'a str,
    error: &'a str,
}

fn login_form(config: &AdminConfig, error: &str, status: StatusCode) -> Response {
    let page = LoginPage {
        base: &config.base_path,
        error,
    };
    (status, html(&page)).into_response()
}

async fn login_page<S: OperatorStore>(State(app): State<Arc<App<S>>>) -> Response {
    login_form(&app.config, "", StatusCode::OK)
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Form(c): Form<Credentials>,
) -> Response {
    if app.sessions.locked_out(&c.username) {
        return login_form(
            &app.config,
            "Too many failed sign-ins for this user: try again in 15 minutes.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    match app.config.sign_in(&c.username, &c.password) {
        Some(role) => {
            app.sessions.succeeded(&c.username);
            let id = app
                .sessions
                .start(&c.username, role, app.config.session_ttl);
            let mut res = Redirect::to(&home(&app.config)).into_response();
            if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(&app.config, &id)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        None => {
            if app.config.is_user(&c.username) {
                app.sessions.failed(&c.username);
            }
            login_form(
                &app.config,
                "Unknown user or wrong password.",
                StatusCode::UNAUTHORIZED,
            )
        }
    }
}

async fn logout<S: OperatorStore>(State(app): State<Arc<App<S>>>, act: Act) -> Response {
    if let Some(id) = &act.user.session {
        app.sessions.end(id);
    }
    let mut res = Redirect::to(&format!("{}/login", app.config.base_path)).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(&app.config, "")) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// The dashboard's address: the base path, or `/`.
fn home(config: &AdminConfig) -> String {
    if config.base_path.is_empty() {
        "/".to_owned()
    } else {
        config.base_path.clone()
    }
}

/// What the layout shows around every page.
struct Layout {
    base: String,
    home: String,
    user: String,
    role: &'static str,
    operator: bool,
    /// The session's CSRF token, put in every form (empty for a bearer token).
    csrf: String,
    session: bool,
    flash: Option<String>,
}

impl<S> App<S> {
    fn layout(&self, user: &User) -> Layout {
        Layout {
            base: self.config.base_path.clone(),
            home: home(&self.config),
            user: user.name.clone(),
            role: user.role.as_str(),
            operator: user.role == Role::Operator,
            csrf: user.csrf.clone().unwrap_or_default(),
            session: user.session.is_some(),
            flash: user
                .session
                .as_deref()
                .and_then(|id| self.sessions.take_flash(id)),
        }
    }
}

/// A rendered template, or a 500 naming the template error.
fn html<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    page: Layout,
    reason: String,
    message: String,
}

/// An error as a page with the status its code maps to.
fn fail<S>(app: &App<S>, user: &User, e: &Error) -> Response {
    let status =
        StatusCode::from_u16(e.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let page = ErrorPage {
        page: app.layout(user),
        reason: e.reason().to_owned(),
        message: e.message().to_owned(),
    };
    (status, html(&page)).into_response()
}

/// Runs a page's body; an error becomes the error page.
macro_rules! page {
    ($app:expr, $user:expr, $body:expr) => {
        match $body {
            Ok(res) => res,
            Err(e) => fail(&$app, &$user, &e),
        }
    };
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    page: Layout,
    status: &'static str,
    alerts: Vec<String>,
    events: u64,
    streams: u64,
    head: u64,
    rate: String,
    newest: String,
    consumers: Vec<ConsumerView>,
    jobs: Vec<JobStats>,
    by_type: Vec<TypeCount>,
}

/// What the dashboard shows, measured now.
struct Measured {
    health: ops::Health,
    stats: flext_ports::StoreStats,
    consumers: Vec<ConsumerView>,
    rate: String,
}

impl<S: OperatorStore> App<S> {
    async fn measure(&self) -> Result<Measured, Error> {
        let stats = self.store.stats().await?;
        let consumers = ops::consumers(&self.store, self.config.stall_after).await?;
        let health = ops::health_of("store", &stats, &consumers, self.config.stall_after);
        let rate = self.rate(stats.events);
        Ok(Measured {
            health,
            stats,
            consumers,
            rate,
        })
    }

    /// [`App::measure`] for a live update: the store's counts are `tally` (from the
    /// update's first measure) moved on by what was appended since, so a tick reads the
    /// position index past the last head and never scans the log.
    async fn measure_since(&self, tally: &mut flext_ports::StoreStats) -> Result<Measured, Error> {
        let new = self.store.appended_since(tally.head).await?;
        if let Some(head) = new.head {
            tally.events += new.events;
            tally.head = head;
            tally.last_recorded_at = new.last_recorded_at.or(tally.last_recorded_at);
        }
        let consumers = ops::consumers(&self.store, self.config.stall_after).await?;
        let health = ops::health_of("store", tally, &consumers, self.config.stall_after);
        let rate = self.rate(tally.events);
        Ok(Measured {
            health,
            stats: tally.clone(),
            consumers,
            rate,
        })
    }

    /// Events per second over the samples of the last minute (the dashboard and its live
    /// updates take one each time).
    fn rate(&self, events: u64) -> String {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, events));
        while samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
        {
            samples.pop_front();
        }
        match samples.front() {
            Some((t, n)) if now.duration_since(*t) >= Duration::from_millis(500) => {
                let per_s = events.saturating_sub(*n) as f64 / now.duration_since(*t).as_secs_f64();
                format!("{per_s:.1}")
            }
            _ => "measuring".to_owned(),
        }
    }
}

fn alerts(health: &ops::Health) -> Vec<String> {
    health
        .checks
        .iter()
        .filter(|c| c.status != ops::Status::Up)
        .map(|c| {
            format!(
                "{} {}: {}",
                c.status.as_str(),
                c.name,
                c.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

async fn dashboard<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
) -> Response {
    let body = async {
        let m = app.measure().await?;
        let jobs = app.store.job_stats().await?;
        Ok::<_, Error>(html(&Dashboard {
            page: app.layout(&user),
            status: m.health.status.as_str(),
            alerts: alerts(&m.health),
            events: m.stats.events,
            streams: m.stats.streams,
            head: m.stats.head.get(),
            rate: m.rate,
            newest: m.stats.last_recorded_at.map(ops::time).unwrap_or_default(),
            consumers: m.consumers,
            jobs,
            by_type: m.stats.by_type,
        }))
    };
    page!(app, user, body.await)
}

/// The dashboard's numbers by element id, its state classes, and its alerts.
fn live_values(m: &Measured) -> Value {
    let mut values = BTreeMap::new();
    let mut classes = BTreeMap::new();
    values.insert("status".to_owned(), m.health.status.as_str().to_owned());
    classes.insert(
        "status".to_owned(),
        format!("status-{}", m.health.status.as_str()),
    );
    values.insert("stat-events".to_owned(), m.stats.events.to_string());
    values.insert("stat-streams".to_owned(), m.stats.streams.to_string());
    values.insert("stat-head".to_owned(), m.stats.head.get().to_string());
    values.insert("stat-rate".to_owned(), m.rate.clone());
    values.insert(
        "stat-newest".to_owned(),
        m.stats.last_recorded_at.map(ops::time).unwrap_or_default(),
    );
    for c in &m.consumers {
        let id = |field: &str| format!("c:{}:{field}", c.name);
        values.insert(id("state"), c.state.as_str().to_owned());
        classes.insert(id("state"), format!("state-{}", c.state.as_str()));
        values.insert(id("owner"), c.owner.clone().unwrap_or_default());
        values.insert(id("position"), c.position.to_string());
        values.insert(id("lag"), c.lag_events.to_string());
        values.insert(id("lag_s"), format!("{:.1}", c.lag_seconds));
        values.insert(id("dead"), c.dead_letters.to_string());
    }
    json!({ "values": values, "classes": classes, "alerts": alerts(&m.health) })
}

/// Server-sent events: the dashboard's numbers every two seconds. The first update
/// counts the whole store; later ones add what was appended since (events a PostgreSQL
/// transaction commits below an already counted position show on the next page load).
async fn live<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start: (Arc<App<S>>, Option<flext_ports::StoreStats>) = (app, None);
    let updates = futures_util::stream::unfold(start, |(app, mut tally)| async move {
        let measured = match tally.as_mut() {
            None => app.measure().await,
            Some(t) => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                app.measure_since(t).await
            }
        };
        let event = match measured {
            Ok(m) => {
                let event = Event::default()
                    .event("dashboard")
                    .data(live_values(&m).to_string());
                if tally.is_none() {
                    tally = Some(m.stats);
                }
                event
            }
            Err(e) => {
                Event::default()
                    .event("failure")
                    .data(format!("{}: {}", e.reason(), e.message()))
            }
        };
        Some((Ok(event), (app, tally)))
    });
    Sse::new(updates).keep_alive(KeepAlive::default())
}

#[derive(Deserialize, Default)]
struct StreamsQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    after: String,
}

struct StreamRow {
    stream_id: String,
    version: u64,
    last_position: flext_domain::Position,
    first: String,
    last: String,
}

#[derive(Template)]
#[template(path = "streams.html")]
struct StreamsPage {
    page: Layout,
    prefix: String,
    category: String,
    streams: Vec<StreamRow>,
    next: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn streams<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Query(q): Query<StreamsQuery>,
) -> Response {
    let body = async {
        let query = StreamQuery {
            prefix: non_empty(&q.prefix),
            category: non_empty(&q.category),
            after: non_empty(&q.after),
            limit: PAGE,
        };
        let list: Vec<StreamSummary> = app.store.list_streams(&query).await?;
        let next = (list.len() >= PAGE)
            .then(|| list.last().map(|s| s.stream_id.clone()))
            .flatten();
        Ok::<_, Error>(html(&StreamsPage {
            page: app.layout(&user),
            prefix: q.prefix.clone(),
            category: q.category.clone(),
            streams: list
                .into_iter()
                .map(|s| StreamRow {
                    first: ops::time(s.first_recorded_at),
                    last: ops::time(s.last_recorded_at),
                    stream_id: s.stream_id,
                    version: s.version,
                    last_position: s.last_position,
                })
                .collect(),
            next,
        }))
    };
    page!(app, user, body.await)
}

/// An event as a page shows it, personal fields masked.
struct EventView {
    event_id: String,
    event_type: String,
    stream_id: String,
    version: u64,
    position: u64,
    recorded_at: String,
    schema_version: u32,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    headers: Vec<(String, String)>,
    /// Pretty-printed JSON.
    payload: String,
}

fn event_view(e: &RecordedEvent, personal: &Personal) -> EventView {
    let mut payload = ops::payload(&e.payload);
    personal.mask(&e.event_type, &mut payload);
    EventView {
        event_id: e.event_id.to_string(),
        event_type: e.event_type.clone(),
        stream_id: e.stream_id.as_str().to_owned(),
        version: e.stream_version.0,
        position: e.position.get(),
        recorded_at: ops::time(e.recorded_at),
        schema_version: e.schema_version,
        correlation_id: e.metadata.correlation_id.map(|c| c.to_string()),
        causation_id: e.metadata.causation_id.map(|c| c.to_string()),
        headers: e
            .metadata
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        payload: serde_json::to_string_pretty(&payload).unwrap_or_else(|_| payload.to_string()),
    }
}

#[derive(Template)]
#[template(path = "stream.html")]
struct StreamPage {
    page: Layout,
    stream_id: String,
    events: Vec<EventView>,
    next: Option<u64>,
}

#[derive(Deserialize, Default)]
struct FromQuery {
    from: Option<u64>,
}

async fn stream<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    Query(q): Query<FromQuery>,
) -> Response {
    let body = async {
        let stream = StreamId::new(&id)?;
        let from = StreamVersion(q.from.unwrap_or(1).max(1));
        let mut events = app
            .store
            .read_stream(&stream, from, PAGE + 1, ReadDirection::Forward)
            .await?;
        if events.is_empty() && app.store.stream_version(&stream).await?.0 == 0 {
            return Err(Error::not_found(
                "STREAM_NOT_FOUND",
                format!("no stream {id:?} in the store"),
            ));
        }
        let next = (events.len() > PAGE).then(|| events[PAGE].stream_version.0);
        events.truncate(PAGE);
        let personal = Personal::load(&app.store).await;
        Ok(html(&StreamPage {
            page: app.layout(&user),
            stream_id: id.clone(),
            events: events.iter().map(|e| event_view(e, &personal)).collect(),
            next,
        }))
    };
    page!(app, user, body.await)
}

#[derive(Template)]
#[template(path = "event.html")]
struct EventPage {
    page: Layout,
    e: EventView,
    cause_is_event: bool,
}

async fn event<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> Response {
    let body = async {
        let event_id = ops::parse_event_id(&id)?;
        let e = app
            .store
            .event_by_id(event_id)
            .await?
            .ok_or_else(|| ops::unknown_event(event_id))?;
        let cause_is_event = match e.metadata.causation_id {
            Some(c) => app
                .store
                .event_by_id(EventId::from_uuid(c.as_uuid()))
                .await?
                .is_some(),
            None => false,
        };
        let personal = Personal::load(&app.store).await;
        Ok(html(&EventPage {
            page: app.layout(&user),
            e: event_view(&e, &personal),
            cause_is_event,
        }))
    };
    page!(app, user, body.await)
}

#[derive(Template)]
#[template(path = "action.html")]
struct ActionPage {
    page: Layout,
    correlation: String,
    count: u64,
    rows: Vec<crate::tree::TreeRow>,
}

async fn action<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
) -> Response {
    let body = async {
        let tree = ops::correlated(&app.store, ops::parse_event_id(&id)?).await?;
        Ok::<_, Error>(html(&ActionPage {
            page: app.layout(&user),
            correlation: tree["correlation_id"].as_str().unwrap_or("").to_owned(),
            count: tree["events"].as_u64().unwrap_or(0),
            rows: crate::tree::rows(&tree),
        }))
    };
    page!(app, user, body.await)
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// An event id opens the event; a correlation id its action; anything else lists the
/// streams it begins.
async fn search<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let base = &app.config.base_path;
    let text = q.q.trim();
    let body = async {
        if let Ok(id) = ops::parse_event_id(text) {
            if app.store.event_by_id(id).await?.is_some() {
                return Ok(Redirect::to(&format!("{base}/events/{id}")).into_response());
            }
            return Ok(Redirect::to(&format!("{base}/actions/{id}")).into_response());
        }
        let query = StreamQuery {
            prefix: non_empty(text),
            limit: 1,
            ..StreamQuery::default()
        };
        let exact = app
            .store
            .list_streams(&query)
            .await?
            .first()
            .is_some_and(|s| s.stream_id == text);
        let target = if exact {
            format!("{base}/streams/{}", encode(text))
        } else {
            format!("{base}/streams?prefix={}", encode(text))
        };
        Ok::<_, Error>(Redirect::to(&target).into_response())
    };
    page!(app, user, body.await)
}

/// Percent-encodes everything but unreserved characters (what the templates'
/// `urlencode_strict` does), for addresses built in code.
fn encode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[derive(Template)]
#[template(path = "consumer.html")]
struct ConsumerPage {
    page: Layout,
    c: ConsumerView,
    letters: Vec<DeadLetter>,
    on_list: bool,
}

async fn consumer<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
    Path(name): Path<String>,
) -> Response {
    let body = async {
        let c = ops::consumer(&app.store, &name, app.config.stall_after).await?;
        let letters = app.store.dead_letters(&name).await?;
        Ok::<_, Error>(html(&ConsumerPage {
            page: app.layout(&user),
            c,
            letters,
            on_list: false,
        }))
    };
    page!(app, user, body.await)
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    page: Layout,
    letters: Vec<DeadLetter>,
    on_list: bool,
}

async fn dead_letters<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Extension(user): Extension<User>,
) -> Response {
    let body = async {
        let mut letters = Vec::new();
        for c in app.store.consumers().await? {
            letters.extend(app.store.dead_letters(&c.consumer).await?);
        }
        letters.sort_by_key(|l| (l.position, l.projection.clone()));
        Ok::<_, Error>(html(&DeadLettersPage {
            page: app.layout(&user),
            letters,
            on_list: true,
        }))
    };
    page!(app, user, body.await)
}

/// Carries an action out and comes back to `back` with what happened (a flash message
/// for a browser, the outcome as text for a bearer token).
async fn carry_out<S: OperatorStore>(
    app: &App<S>,
    act: &Act,
    consumer: &str,
    action: ControlAction,
    back: String,
) -> Response {
    let outcome = ops::control(
        &app.store,
        consumer,
        &action,
        &app.me,
        app.config.action_timeout,
    )
    .await;
    let text = match &outcome {
        Ok(v) => {
            let by = v["carried_out_by"].as_str().unwrap_or("");
            match &action {
                ControlAction::Redrive { .. } => format!(
                    "Redrive of {consumer}: {} redriven, {} still failing (carried out by {by}).",
                    v["result"]["redriven"],
                    v["result"]["still_failing"].as_array().map_or(0, Vec::len)
                ),
                other => format!(
                    "{} of {consumer}: done (carried out by {by}).",
                    other.name()
                ),
            }
        }
        Err(e) if e.reason() == "CONTROL_NOT_ANSWERED" => format!(
            "{} of {consumer} is queued: no instance that runs it answered within {} s; it is \
             carried out when one takes it.",
            action.name(),
            app.config.action_timeout.as_secs()
        ),
        Err(e) => format!("{} of {consumer} failed: {}", action.name(), e.message()),
    };
    match &act.user.session {
        Some(id) => {
            app.sessions.flash(id, text);
            Redirect::to(&back).into_response()
        }
        None => {
            let status = match &outcome {
                Ok(_) => StatusCode::OK,
                Err(e) if e.reason() == "CONTROL_NOT_ANSWERED" => StatusCode::ACCEPTED,
                Err(e) => StatusCode::from_u16(e.code().http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            };
            (status, text).into_response()
        }
    }
}

async fn consumer_action<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Path((name, action)): Path<(String, String)>,
    act: Act,
) -> Response {
    let back = format!("{}/consumers/{}", app.config.base_path, encode(&name));
    let action = match action.as_str() {
        "pause" => ControlAction::Pause,
        "resume" => ControlAction::Resume,
        "redrive" => ControlAction::Redrive { event_id: None },
        "rebuild" => match ops::rebuild_from(act.form.from.as_deref().unwrap_or("start")) {
            Ok(from) => ControlAction::Rebuild { from },
            Err(e) => return fail(&app, &act.user, &e),
        },
        other => {
            return fail(
                &app,
                &act.user,
                &Error::not_found(
                    "UNKNOWN_ACTION",
                    format!(
                        "{other:?} is not an action on a consumer (pause, resume, rebuild, \
                         redrive)"
                    ),
                ),
            );
        }
    };
    carry_out(&app, &act, &name, action, back).await
}

async fn letter_action<S: OperatorStore>(
    State(app): State<Arc<App<S>>>,
    Path((consumer, event, action)): Path<(String, String, String)>,
    act: Act,
) -> Response {
    // Back to the list the action was taken on, or the consumer's page; never an address
    // the form names.
    let back = if act.form.back.as_deref() == Some("dead-letters") {
        format!("{}/dead-letters", app.config.base_path)
    } else {
        format!("{}/consumers/{}", app.config.base_path, encode(&consumer))
    };
    let event_id = match ops::parse_event_id(&event) {
        Ok(id) => id,
        Err(e) => return fail(&app, &act.user, &e),
    };
    match action.as_str() {
        "redrive" => {
            carry_out(
                &app,
                &act,
                &consumer,
                ControlAction::Redrive {
                    event_id: Some(event_id),
                },
                back,
            )
            .await
        }
        "discard" => match app.store.discard_dead_letter(&consumer, event_id).await {
            Ok(found) => {
                let text = if found {
                    format!("The dead letter of {consumer} for event {event_id} is discarded.")
                } else {
                    format!("{consumer} has no dead letter for event {event_id}.")
                };
                match &act.user.session {
                    Some(id) => {
                        app.sessions.flash(id, text);
                        Redirect::to(&back).into_response()
                    }
                    None => text.into_response(),
                }
            }
            Err(e) => fail(&app, &act.user, &e),
        },
        other => fail(
            &app,
            &act.user,
            &Error::not_found(
                "UNKNOWN_ACTION",
                format!("{other:?} is not an action on a dead letter (redrive, discard)"),
            ),
        ),
    }
}
