//! The HTTP JSON API.
//!
//! Every mutating request builds the whole candidate document, restores
//! redacted keys from the stored ones, and validates it with
//! [`braid_config::Tables::from_config`] before anything changes; then the
//! document is persisted, becomes the running one under the next
//! generation, and is published to the dataplane link. Mutations are
//! serialized; reads never wait for one (they see the running document).
//!
//! Errors are `{"error": {"field", "reason"}}`: 400 malformed JSON, 422 a
//! wrong type, a missing or unknown field, or a broken rule, 404 no such
//! entry, 409 a name that exists or no configuration yet, 413 a body over
//! the limit, 503 too many requests at once, 401 a missing or wrong token
//! (TCP only). Keys and salts are never shown: GETs show [`REDACTED`], and
//! a PUT that sends [`REDACTED`] back keeps the stored value.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use braid_config::route::Prefix;
use braid_config::{BundleConfig, Config, DnatConfig, PeerConfig, PortConfig, RouteConfig, SnatConfig, Tables};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::{parse_json, ApiError};
use crate::link::{Link, LinkStatus, Snapshot};
use crate::metrics::StatsSource;
use crate::store::{redact, redact_bundle, restore_secrets, Running, StateDir};

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body of `PUT /v1/config`.
    pub config_body: usize,
    /// Body of every other request.
    pub body: usize,
    /// Requests handled at once; more are answered 503 at once.
    pub concurrent: usize,
    /// The document as pushed to the dataplane (serialized with every
    /// default filled in, so it can outgrow the body that made it): what
    /// the shared-memory ring carries.
    pub doc: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A document the ring can carry can be PUT (10,000 tunnels and
        // 100,000 NAT rules fit); everything else is small.
        let ring = braid_shm::proto::MAX_CONFIG_LEN;
        Limits { config_body: ring, body: 1 << 20, concurrent: 64, doc: ring }
    }
}

/// What the API serves from.
pub struct AppState {
    running: RwLock<Arc<Running>>,
    /// Held by the one mutation in progress.
    mutation: Mutex<()>,
    state: StateDir,
    link: Option<Arc<Link>>,
    stats: Option<StatsSource>,
    limits: Limits,
    inflight: Arc<Semaphore>,
    /// Whole documents (`PUT /v1/config`, up to 64 MiB) read and parsed
    /// at once: at most [`WHOLE_DOCUMENTS`] (found by review: 64 slots of
    /// 64 MiB bodies and their parsed copies could take 8 GiB).
    whole: Arc<Semaphore>,
}

/// Whole documents read and parsed at once.
pub const WHOLE_DOCUMENTS: usize = 2;

impl AppState {
    pub fn new(running: Running, state: StateDir, link: Option<Arc<Link>>, stats: Option<PathBuf>, limits: Limits) -> Arc<AppState> {
        Arc::new(AppState {
            running: RwLock::new(Arc::new(running)),
            mutation: Mutex::new(()),
            state,
            link,
            stats: stats.map(StatsSource::new),
            limits,
            inflight: Arc::new(Semaphore::new(limits.concurrent)),
            whole: Arc::new(Semaphore::new(WHOLE_DOCUMENTS)),
        })
    }

    pub fn running(&self) -> Arc<Running> {
        self.running.read().unwrap().clone()
    }

    /// Applies `edit` to a copy of the running document; validates,
    /// persists and publishes the result. Nothing changes on any error.
    pub fn mutate(&self, edit: impl FnOnce(Option<&Config>) -> Result<Config, ApiError>) -> Result<Change, ApiError> {
        self.mutate_if(None, edit)
    }

    /// [`AppState::mutate`], only if the running document is at generation
    /// `expected` (when given; else 412 and nothing changes): a client
    /// that read generation N and changes it learns that another change
    /// came first instead of undoing it.
    pub fn mutate_if(&self, expected: Option<u64>, edit: impl FnOnce(Option<&Config>) -> Result<Config, ApiError>) -> Result<Change, ApiError> {
        let _one_at_a_time = self.mutation.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.running();
        if let Some(g) = expected.filter(|g| *g != current.generation) {
            return Err(ApiError::field(
                StatusCode::PRECONDITION_FAILED,
                "If-Match",
                format!("the document is at generation {}, not {g}: read it again", current.generation),
            ));
        }
        let mut candidate = edit(current.config.as_ref())?;
        restore_secrets(&mut candidate, current.config.as_ref())?;
        Tables::from_config(&candidate).map_err(ApiError::from_config)?;
        if current.config.as_ref() == Some(&candidate) {
            return Ok(Change { generation: current.generation, changed: false });
        }
        let doc = serde_json::to_vec(&candidate).expect("a Config always serializes");
        if doc.len() > self.limits.doc {
            // Saved, it would be stuck: never delivered, every later
            // change behind it.
            return Err(ApiError::bare(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the configuration would be {} bytes as the dataplane gets it (defaults filled in), over the {} its shared-memory ring carries; nothing changed",
                    doc.len(),
                    self.limits.doc
                ),
            ));
        }
        let next = Running { generation: current.generation + 1, config: Some(candidate) };
        self.state.save(&next).map_err(|e| {
            eprintln!("braid-control: persisting generation {}: {e}", next.generation);
            ApiError::internal(format!("persisting the configuration failed, nothing changed: {e}"))
        })?;
        let generation = next.generation;
        *self.running.write().unwrap() = Arc::new(next);
        if let Some(link) = &self.link {
            link.publish(Snapshot::new(generation, doc));
        }
        eprintln!("braid-control: generation {generation} applied");
        Ok(Change { generation, changed: true })
    }
}

/// The answer to a mutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub generation: u64,
    /// False when the document was already the running one (no new
    /// generation).
    pub changed: bool,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub generation: u64,
    pub configured: bool,
    /// `null` when the process runs without `--shm`.
    pub dataplane: Option<DataplaneStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataplaneStatus {
    #[serde(flatten)]
    pub link: LinkStatus,
    /// The dataplane reported our generation applied.
    pub in_sync: bool,
    /// Its stats heartbeat moved in the last seconds; `null` without
    /// `--stats` or before the stats segment exists.
    pub alive: Option<bool>,
}

/// Every route: path and methods, in dependency order (what a later entry
/// refers to comes first). The router is built in the same order, and a
/// test holds this list, the router and `openapi.json` to each other.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/config", &["GET", "PUT"]),
    ("/v1/bundles", &["GET", "POST"]),
    ("/v1/bundles/{name}", &["GET", "PUT", "DELETE"]),
    ("/v1/bundles/{name}/tunnels/{index}/weight", &["PUT"]),
    ("/v1/peers", &["GET", "POST"]),
    ("/v1/peers/{name}", &["GET", "PUT", "DELETE"]),
    ("/v1/routes", &["GET", "POST"]),
    ("/v1/routes/{prefix}", &["GET", "PUT", "DELETE"]),
    ("/v1/nat/snat", &["GET", "POST"]),
    ("/v1/nat/snat/{name}", &["GET", "PUT", "DELETE"]),
    ("/v1/nat/dnat", &["GET", "POST"]),
    ("/v1/nat/dnat/{name}", &["GET", "PUT", "DELETE"]),
    ("/v1/ports", &["GET"]),
    ("/v1/status", &["GET"]),
    ("/v1/stats", &["GET"]),
    ("/metrics", &["GET"]),
];

/// The API's router (no authentication: see [`with_token`]).
pub fn router(app: Arc<AppState>) -> Router {
    let r: Vec<(&str, MethodRouter<Arc<AppState>>)> = vec![
        ("/v1/config", get(get_config).put(put_config)),
        ("/v1/bundles", get(list::<Bundles>).post(create::<Bundles>)),
        ("/v1/bundles/{name}", get(get_one::<Bundles>).put(replace::<Bundles>).delete(remove::<Bundles>)),
        ("/v1/bundles/{name}/tunnels/{index}/weight", put(put_weight)),
        ("/v1/peers", get(list::<Peers>).post(create::<Peers>)),
        ("/v1/peers/{name}", get(get_one::<Peers>).put(replace::<Peers>).delete(remove::<Peers>)),
        ("/v1/routes", get(list::<Routes>).post(create::<Routes>)),
        ("/v1/routes/{prefix}", get(get_one::<Routes>).put(replace::<Routes>).delete(remove::<Routes>)),
        ("/v1/nat/snat", get(list::<Snat>).post(create::<Snat>)),
        ("/v1/nat/snat/{name}", get(get_one::<Snat>).put(replace::<Snat>).delete(remove::<Snat>)),
        ("/v1/nat/dnat", get(list::<Dnat>).post(create::<Dnat>)),
        ("/v1/nat/dnat/{name}", get(get_one::<Dnat>).put(replace::<Dnat>).delete(remove::<Dnat>)),
        ("/v1/ports", get(get_ports)),
        ("/v1/status", get(get_status)),
        ("/v1/stats", get(get_stats)),
        ("/metrics", get(get_metrics)),
    ];
    debug_assert_eq!(r.iter().map(|(p, _)| *p).collect::<Vec<_>>(), ROUTES.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    let mut router = Router::new();
    for (path, m) in r {
        router = router.route(path, m);
    }
    router
        .fallback(|| async { ApiError::bare(StatusCode::NOT_FOUND, "no such endpoint (see openapi.json)") })
        .method_not_allowed_fallback(|| async { ApiError::bare(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint") })
        .layer(middleware::from_fn_with_state(app.clone(), limit_and_log))
        .with_state(app)
}

/// The router behind `Authorization: Bearer <token>` (for TCP).
pub fn with_token(router: Router, token: String) -> Router {
    let token = Arc::new(token);
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(req).await,
                _ => {
                    let mut r = ApiError::bare(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    r
                }
            }
        }
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a request waits for one of the `limits.concurrent` slots
/// before it is answered 503.
pub const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// At most `limits.concurrent` requests at once (a request waits up to
/// [`QUEUE_WAIT`] for a slot, then gets 503); one log line per request:
/// method, path, status (never a body).
async fn limit_and_log(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Ok(Ok(_permit)) = tokio::time::timeout(QUEUE_WAIT, app.inflight.clone().acquire_owned()).await else {
        let mut r = ApiError::bare(StatusCode::SERVICE_UNAVAILABLE, "too many requests at once, retry").into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    if method != Method::GET || !r.status().is_success() {
        eprintln!("braid-control: {method} {path} -> {}", r.status().as_u16());
    }
    r
}

fn json<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    let body = serde_json::to_vec(v).expect("responses always serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How long a request body may take to arrive (a slow client holds one of
/// the concurrency slots meanwhile).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the body, refusing more than `limit` bytes with 413.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let too_large = || ApiError::bare(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over the limit of {limit} bytes"));
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await.map_err(|_| {
        ApiError::bare(StatusCode::REQUEST_TIMEOUT, format!("the request body did not arrive within {BODY_TIMEOUT:?}"))
    })?;
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::bare(StatusCode::BAD_REQUEST, format!("reading the request body: {e}"))),
    }
}

/// Runs a mutation off the async threads (validation of a large document
/// takes a while; the mutation lock is a plain mutex).
async fn mutate(
    app: Arc<AppState>,
    status: StatusCode,
    IfMatch(expected): IfMatch,
    edit: impl FnOnce(Option<&Config>) -> Result<Config, ApiError> + Send + 'static,
) -> Result<Response, ApiError> {
    let change = tokio::task::spawn_blocking(move || app.mutate_if(expected, edit))
        .await
        .map_err(|e| ApiError::internal(format!("mutation task failed: {e}")))??;
    Ok(json(status, &change))
}

fn no_config() -> ApiError {
    ApiError::bare(StatusCode::CONFLICT, "no configuration yet: PUT /v1/config first")
}

// ---------------------------------------------------------------------------
// The whole document.

async fn get_config(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let running = app.running();
    if running.config.is_none() {
        return Err(ApiError::bare(StatusCode::NOT_FOUND, "no configuration yet"));
    }
    // Copied, redacted and serialized off the async threads (a large
    // document takes a while: the other requests would wait), two
    // documents at a time (the permit goes with the work, which goes on
    // if the client leaves).
    let generation = running.generation;
    let whole = app.whole.clone().acquire_owned().await.map_err(|_| ApiError::internal("closed"))?;
    let mut r = tokio::task::spawn_blocking(move || {
        let _whole = whole;
        let mut c = running.config.clone().expect("checked above");
        redact(&mut c);
        json(StatusCode::OK, &c)
    })
    .await
    .map_err(|e| ApiError::internal(format!("serializing the document failed: {e}")))?;
    r.headers_mut().insert("x-braid-generation", HeaderValue::from(generation));
    Ok(r)
}

async fn put_config(State(app): State<Arc<AppState>>, if_match: IfMatch, body: Body) -> Result<Response, ApiError> {
    // Two whole documents at a time, from their bodies to their turn at
    // the mutation lock: the permit goes with the parsed document into the
    // mutation (which goes on if the client leaves).
    let whole = app.whole.clone().acquire_owned().await.map_err(|_| ApiError::internal("closed"))?;
    let bytes = read_body(body, app.limits.config_body).await?;
    // Parsed off the async threads too.
    let (config, whole) = tokio::task::spawn_blocking(move || parse_json::<Config>(&bytes).map(|c| (c, whole)))
        .await
        .map_err(|e| ApiError::internal(format!("parsing task failed: {e}")))??;
    mutate(app, StatusCode::OK, if_match, move |_| {
        drop(whole);
        Ok(config)
    })
    .await
}

// ---------------------------------------------------------------------------
// Lists inside the document.

/// A list of the document addressed by a key.
trait Collection: Send + Sync + 'static {
    type Item: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// Singular name for messages.
    const WHAT: &'static str;
    /// The key field in an item.
    const KEY: &'static str;
    fn items(c: &Config) -> &Vec<Self::Item>;
    fn items_mut(c: &mut Config) -> &mut Vec<Self::Item>;
    fn key(i: &Self::Item) -> &str;
    /// Whether `i` is the one `key` names.
    fn is(i: &Self::Item, key: &str) -> bool {
        Self::key(i) == key
    }
    /// What a GET shows.
    fn show(_: &mut Self::Item) {}
}

struct Peers;
impl Collection for Peers {
    type Item = PeerConfig;
    const WHAT: &'static str = "peer";
    const KEY: &'static str = "name";
    fn items(c: &Config) -> &Vec<PeerConfig> {
        &c.peers
    }
    fn items_mut(c: &mut Config) -> &mut Vec<PeerConfig> {
        &mut c.peers
    }
    fn key(i: &PeerConfig) -> &str {
        &i.name
    }
}

struct Bundles;
impl Collection for Bundles {
    type Item = BundleConfig;
    const WHAT: &'static str = "bundle";
    const KEY: &'static str = "name";
    fn items(c: &Config) -> &Vec<BundleConfig> {
        &c.bundles
    }
    fn items_mut(c: &mut Config) -> &mut Vec<BundleConfig> {
        &mut c.bundles
    }
    fn key(i: &BundleConfig) -> &str {
        &i.name
    }
    fn show(b: &mut BundleConfig) {
        redact_bundle(b);
    }
}

struct Routes;
impl Collection for Routes {
    type Item = RouteConfig;
    const WHAT: &'static str = "route";
    const KEY: &'static str = "prefix";
    fn items(c: &Config) -> &Vec<RouteConfig> {
        &c.routes
    }
    fn items_mut(c: &mut Config) -> &mut Vec<RouteConfig> {
        &mut c.routes
    }
    fn key(i: &RouteConfig) -> &str {
        &i.prefix
    }
    /// The same prefix however written (`fd00:2:0::/64` is `fd00:2::/64`).
    fn is(i: &RouteConfig, key: &str) -> bool {
        match (i.prefix.parse::<Prefix>(), key.parse::<Prefix>()) {
            (Ok(a), Ok(b)) => a == b,
            _ => i.prefix == key,
        }
    }
}

struct Snat;
impl Collection for Snat {
    type Item = SnatConfig;
    const WHAT: &'static str = "SNAT rule";
    const KEY: &'static str = "name";
    fn items(c: &Config) -> &Vec<SnatConfig> {
        &c.nat.snat
    }
    fn items_mut(c: &mut Config) -> &mut Vec<SnatConfig> {
        &mut c.nat.snat
    }
    fn key(i: &SnatConfig) -> &str {
        &i.name
    }
}

struct Dnat;
impl Collection for Dnat {
    type Item = DnatConfig;
    const WHAT: &'static str = "DNAT rule";
    const KEY: &'static str = "name";
    fn items(c: &Config) -> &Vec<DnatConfig> {
        &c.nat.dnat
    }
    fn items_mut(c: &mut Config) -> &mut Vec<DnatConfig> {
        &mut c.nat.dnat
    }
    fn key(i: &DnatConfig) -> &str {
        &i.name
    }
}

async fn list<C: Collection>(State(app): State<Arc<AppState>>) -> Response {
    let running = app.running();
    let mut items: Vec<C::Item> = running.config.as_ref().map(|c| C::items(c).clone()).unwrap_or_default();
    items.iter_mut().for_each(C::show);
    json(StatusCode::OK, &items)
}

/// The generation a change was made from: `If-Match: "N"` (or `N`; `*`
/// or none: any). Something else is a 400.
struct IfMatch(Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(header::IF_MATCH) else { return Ok(IfMatch(None)) };
        let v = v.to_str().unwrap_or("").trim();
        if v == "*" {
            return Ok(IfMatch(None));
        }
        let n = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        n.parse().map(|g| IfMatch(Some(g))).map_err(|_| {
            ApiError::field(StatusCode::BAD_REQUEST, "If-Match", format!("{v:?} is not a generation (a number, as x-braid-generation gives it)"))
        })
    }
}

/// A path parameter (a name, a prefix, an index). One that does not
/// decode (`%FF`: not UTF-8) is a 400 with the API's error body, not
/// axum's plain-text one (found by review).
struct Key<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Key<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Key(v)),
            Err(e) => Err(ApiError::field(StatusCode::BAD_REQUEST, "path", e.body_text())),
        }
    }
}

async fn get_one<C: Collection>(State(app): State<Arc<AppState>>, Key(key): Key<String>) -> Result<Response, ApiError> {
    let running = app.running();
    let mut item = running
        .config
        .as_ref()
        .and_then(|c| C::items(c).iter().find(|i| C::is(i, &key)))
        .cloned()
        .ok_or_else(|| ApiError::not_found(C::WHAT, &key))?;
    C::show(&mut item);
    Ok(json(StatusCode::OK, &item))
}

async fn create<C: Collection>(State(app): State<Arc<AppState>>, if_match: IfMatch, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, app.limits.body).await?;
    let item: C::Item = parse_json(&bytes)?;
    mutate(app, StatusCode::CREATED, if_match, move |current| {
        let mut c = current.cloned().ok_or_else(no_config)?;
        let key = C::key(&item).to_string();
        if C::items(&c).iter().any(|i| C::is(i, &key)) {
            return Err(ApiError::field(StatusCode::CONFLICT, C::KEY, format!("a {} {key:?} exists; PUT to replace it", C::WHAT)));
        }
        C::items_mut(&mut c).push(item);
        Ok(c)
    })
    .await
}

async fn replace<C: Collection>(State(app): State<Arc<AppState>>, Key(key): Key<String>, if_match: IfMatch, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, app.limits.body).await?;
    let item: C::Item = parse_json(&bytes)?;
    if !C::is(&item, &key) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            C::KEY,
            format!("{:?} does not match the path ({key:?})", C::key(&item)),
        ));
    }
    mutate(app, StatusCode::OK, if_match, move |current| {
        let mut c = current.cloned().ok_or_else(no_config)?;
        let slot = C::items_mut(&mut c).iter_mut().find(|i| C::is(i, &key)).ok_or_else(|| ApiError::not_found(C::WHAT, &key))?;
        *slot = item;
        Ok(c)
    })
    .await
}

async fn remove<C: Collection>(State(app): State<Arc<AppState>>, Key(key): Key<String>, if_match: IfMatch) -> Result<Response, ApiError> {
    mutate(app, StatusCode::OK, if_match, move |current| {
        let mut c = current.cloned().ok_or_else(|| ApiError::not_found(C::WHAT, &key))?;
        let items = C::items_mut(&mut c);
        let at = items.iter().position(|i| C::is(i, &key)).ok_or_else(|| ApiError::not_found(C::WHAT, &key))?;
        items.remove(at);
        Ok(c)
    })
    .await
}

/// `PUT /v1/bundles/{name}/tunnels/{index}/weight`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub weight: u32,
}

async fn put_weight(State(app): State<Arc<AppState>>, Key((name, index)): Key<(String, String)>, if_match: IfMatch, body: Body) -> Result<Response, ApiError> {
    let index: usize = index
        .parse()
        .map_err(|_| ApiError::field(StatusCode::BAD_REQUEST, "index", format!("{index:?} is not a tunnel index")))?;
    let bytes = read_body(body, app.limits.body).await?;
    let Weight { weight } = parse_json(&bytes)?;
    mutate(app, StatusCode::OK, if_match, move |current| {
        let mut c = current.cloned().ok_or_else(|| ApiError::not_found("bundle", &name))?;
        let b = c.bundles.iter_mut().find(|b| b.name == name).ok_or_else(|| ApiError::not_found("bundle", &name))?;
        let n = b.tunnels.len();
        let t = b
            .tunnels
            .get_mut(index)
            .ok_or_else(|| ApiError::bare(StatusCode::NOT_FOUND, format!("bundle {name:?} has {n} tunnels, no tunnel {index}")))?;
        t.weight = weight;
        Ok(c)
    })
    .await
}

// ---------------------------------------------------------------------------
// Read-only resources.

async fn get_ports(State(app): State<Arc<AppState>>) -> Response {
    let running = app.running();
    let ports: Vec<PortConfig> = running.config.as_ref().map(|c| c.ports.clone()).unwrap_or_default();
    json(StatusCode::OK, &ports)
}

async fn get_status(State(app): State<Arc<AppState>>) -> Response {
    let running = app.running();
    let alive = match &app.stats {
        Some(s) => s.alive().await,
        None => None,
    };
    let dataplane = app.link.as_ref().map(|l| {
        let link = l.status();
        let in_sync = running.generation > 0 && l.in_sync(running.generation);
        DataplaneStatus { link, in_sync, alive }
    });
    json(StatusCode::OK, &Status { generation: running.generation, configured: running.config.is_some(), dataplane })
}

async fn get_stats(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let s = app.stats.as_ref().ok_or_else(|| ApiError::bare(StatusCode::NOT_FOUND, "no stats segment (start with --stats PATH)"))?;
    let snap = s.read().map_err(|e| ApiError::bare(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(json(StatusCode::OK, &snap))
}

async fn get_metrics(State(app): State<Arc<AppState>>) -> Response {
    let running = app.running();
    let link = app.link.as_ref().map(|l| l.status());
    let stats = app.stats.as_ref().map(|s| s.read());
    let text = crate::metrics::prometheus(running.generation, link.as_ref(), stats.as_ref().and_then(|r| r.as_ref().ok()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).unwrap();
        let start = doc.find("```json\n").unwrap() + 8;
        let len = doc[start..].find("```").unwrap();
        serde_json::from_str(&doc[start..start + len]).unwrap()
    }

    #[test]
    fn a_document_the_ring_cannot_carry_is_refused_before_it_is_saved() {
        let dir = std::env::temp_dir().join(format!("braid-api-doc-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = example();
        let len = serde_json::to_vec(&config).unwrap().len();
        let app = AppState::new(Running::default(), StateDir::new(&dir).unwrap(), None, None, Limits { doc: len - 1, ..Limits::default() });
        let e = app.mutate(|_| Ok(config.clone())).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE, "{e:?}");
        assert!(e.reason.contains(&format!("{len} bytes")), "{}", e.reason);
        assert_eq!(app.running().generation, 0);
        assert_eq!(StateDir::new(&dir).unwrap().load().unwrap(), Running::default(), "nothing saved");
        let app = AppState::new(Running::default(), StateDir::new(&dir).unwrap(), None, None, Limits { doc: len, ..Limits::default() });
        assert_eq!(app.mutate(|_| Ok(config.clone())).unwrap().generation, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
