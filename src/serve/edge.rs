//! The edge of a server: its HTTP server behind the guard, the address it may bind, its TLS
//! settings and its tokens.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::middleware::{Logger, NormalizePath, TrailingSlash, from_fn};
use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context as _;
use cube_actors::secret::{Keys, Token, read_or_create};
use cube_actors::telemetry::HttpMetrics;
use cube_actors::tls::ClientTls;
use prometheus_client::registry::Registry;

use crate::api;

/// What the edge of one server checks requests with and serves on.
pub(super) struct Edge {
    /// The tokens it accepts.
    pub(super) keys: Keys,
    /// Its certificate, for HTTPS.
    pub(super) tls: Option<rustls::ServerConfig>,
    /// What `GET /metrics` shows (the edge's own request counts included).
    pub(super) metrics: Arc<Registry>,
    /// Where the edge counts requests.
    pub(super) http: HttpMetrics,
}

/// A registry of the node's metrics (named `cube_...`) with the edge's request counts in it.
pub(super) fn registry(register: impl FnOnce(&mut Registry)) -> (Arc<Registry>, HttpMetrics) {
    let mut registry = Registry::with_prefix("cube");
    let http = HttpMetrics::default();
    http.register(&mut registry);
    register(&mut registry);
    (Arc::new(registry), http)
}

/// The HTTP edge of a node: `routes` over `state`, behind the guard (tokens, same origin, JSON
/// bodies, size limits), with the API's extractor settings, trailing slashes ignored, an access
/// log, and JSON 404s for unknown routes; HTTPS when the edge has a certificate.
pub(super) fn serve_http<S: Clone + Send + 'static>(
    listener: TcpListener,
    state: S,
    routes: fn(&mut web::ServiceConfig),
    edge: Edge,
) -> std::io::Result<Server> {
    let (keys, metrics, http) = (edge.keys, edge.metrics, edge.http);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::from(Arc::clone(&metrics)))
            .app_data(http.clone())
            .app_data(keys.clone())
            .app_data(api::json_config())
            .app_data(api::query_config())
            .app_data(web::PayloadConfig::new(api::MAX_BODY))
            .wrap(from_fn(api::guard::guard))
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(Logger::new("%a \"%r\" %s %Dms").log_level(log::Level::Debug))
            .wrap(from_fn(api::count_request))
            .configure(routes)
            .default_service(web::to(api::no_route))
    })
    .workers(2);
    let server = match edge.tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Binds `listen`; refuses an address other machines can reach without TLS, unless forced.
pub(super) fn bind(
    listen: &str,
    tls: bool,
    allow_insecure: bool,
    what: &str,
) -> anyhow::Result<TcpListener> {
    let listener =
        TcpListener::bind(listen).with_context(|| format!("{what}: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    if !tls && !allow_insecure && !addr.ip().is_loopback() {
        anyhow::bail!(
            "{what}: refusing to serve {addr} without TLS: other machines would see its tokens and \
             tasks' secrets in the clear.\n  Make certificates with `cube tls init` and start with \
             --tls-cert, --tls-key and --tls-ca (README, \"Distributed mode\"), or listen on \
             127.0.0.1, or pass --allow-insecure-bind to do it anyway."
        );
    }
    Ok(listener)
}

/// The base URL of a server bound to `addr`: loopback when it listens on every address.
pub(super) fn base_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        format!("{scheme}://127.0.0.1:{}", addr.port())
    } else {
        format!("{scheme}://{addr}")
    }
}

/// The server certificate of `cert` and `key` (both set, or neither: plain HTTP).
pub(super) fn server_tls(
    cert: &Path,
    key: &Path,
    what: &str,
) -> anyhow::Result<Option<rustls::ServerConfig>> {
    match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(
            cube_actors::tls::server_config(cert, key).with_context(|| format!("{what}: TLS"))?,
        )),
        _ => anyhow::bail!(
            "{what}: TLS needs both a certificate (--tls-cert) and its key (--tls-key)"
        ),
    }
}

/// The CA that peers' certificates must come from, if set.
pub(super) fn client_tls(ca: &Path, what: &str) -> anyhow::Result<Option<ClientTls>> {
    if ca.as_os_str().is_empty() {
        return Ok(None);
    }
    Ok(Some(
        ClientTls::from_ca_file(ca).with_context(|| format!("{what}: TLS CA"))?,
    ))
}

/// A server's token: the one given, else the one in `file` (made at the first start) when its
/// data is durable, else a new one for this run.
pub(super) fn server_token(
    given: &str,
    file: Option<PathBuf>,
    kind: &str,
    what: &str,
) -> anyhow::Result<Token> {
    if !given.is_empty() {
        return Token::parse(given).with_context(|| format!("{what}: the {kind} token given"));
    }
    match file {
        Some(path) => Ok(read_or_create(&path, kind)
            .with_context(|| format!("{what}: cannot keep its {kind} token in {}", path.display()))?
            .0),
        None => Ok(Token::generate(kind)),
    }
}
