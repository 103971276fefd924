/*!
Conveyor's HTTP API: JSON under `/api/v1` on a coordinator node, served by
actix-web on the node's actix system and answered through its
[`CoordinatorHandle`].

# Layout
- [`ApiServer`] (here): starts the listener, refuses an open API off
  loopback, and stops with the node.
- [`routes`]: one handler per endpoint; [`types`]: their JSON bodies.
- [`auth`]: bearer tokens and roles; [`input`]: bodies, query strings and
  ids, each checked with one clear error; [`error`]: `{error, message}`
  with its status; [`guard`]: what an ad-hoc flow may name (`[secrets]
  allow`).
- [`sse`]: Server-Sent Events of run reports and log lines.
- [`openapi`]: the OpenAPI document (checked in as `schemas/openapi.json`).
*/

pub mod auth;
pub mod error;
pub mod guard;
pub mod input;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use conveyor_config::ApiConfig;
use conveyor_coordinator::handle::CoordinatorHandle;

use crate::auth::Auth;
use crate::routes::State;

/// Extra routes mounted at the root of the API's listener, outside
/// `/api/v1` (the dashboard's hook).
pub type Mount = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

pub use crate::routes::MetricsRender;

/// How long open requests (event streams included) get to finish when the
/// node stops.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// What the API needs besides its `[api]` config.
pub struct ApiSetup {
    pub config: ApiConfig,
    /// The node's name, for `/health`.
    pub node: String,
    /// Where relative paths of an ad-hoc flow (`POST /runs`) resolve: the
    /// coordinator's `[coordinator] flows` directory if set, else the
    /// directory of the node's config file.
    pub flow_base: PathBuf,
    /// Served at `GET /metrics` on the API's listener, to a `read` token
    /// (or to anyone when the API has no token).
    pub metrics: Option<MetricsRender>,
    pub extra: Option<Mount>,
    /// The node's `[secrets] allow`: an ad-hoc flow naming another
    /// variable is refused at submit.
    pub secrets: conveyor_config::AllowList,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// Off loopback with no token; see
    /// [`ApiConfig::exposure_problem`].
    #[error("{0}")]
    Exposed(String),
    #[error("[api] listen = \"{listen}\": cannot listen: {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
}

/// The running API server.
pub struct ApiServer {
    handle: ServerHandle,
    addr: SocketAddr,
}

impl ApiServer {
    /// Binds `[api] listen` and serves the API on the current actix system,
    /// with one HTTP worker. Returns `None` when `listen = "off"`.
    pub fn start(
        setup: ApiSetup,
        coordinator: CoordinatorHandle,
    ) -> Result<Option<ApiServer>, ApiStartError> {
        let Some(listen) = setup.config.listen.clone() else {
            return Ok(None);
        };
        if let Some(problem) = setup.config.exposure_problem() {
            return Err(ApiStartError::Exposed(problem));
        }
        let auth = web::Data::new(Auth::new(setup.config.tokens.clone()));
        let open = auth.is_open();
        let state = web::Data::new(State {
            handle: coordinator,
            node: setup.node,
            flow_base: setup.flow_base,
            max_body: usize::try_from(setup.config.max_body_bytes).unwrap_or(usize::MAX),
            openapi: openapi::document(),
            adhoc: setup.config.adhoc,
            secrets: setup.secrets,
        });
        let (extra, metrics) = (setup.extra, setup.metrics);
        let server = HttpServer::new(move || {
            let mut app = App::new()
                .app_data(auth.clone())
                .app_data(state.clone())
                .configure(api_v1);
            if let Some(render) = &metrics {
                let render = render.clone();
                app = app.configure(|cfg| mount_metrics(cfg, render));
            }
            if let Some(extra) = &extra {
                app = app.configure(|cfg| extra(cfg));
            }
            app.default_service(web::to(routes::no_such_endpoint))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(STOP_WITHIN.as_secs())
        .bind(&listen)
        .map_err(|source| ApiStartError::Bind {
            listen: listen.clone(),
            source,
        })?;
        let addr = server
            .addrs()
            .first()
            .copied()
            .ok_or_else(|| ApiStartError::Bind {
                listen: listen.clone(),
                source: std::io::Error::other("no address to listen on"),
            })?;
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "API server stopped with an error");
            }
        });
        if open {
            tracing::warn!(addr = %addr, "API listening with no token (loopback only): anyone on this machine may start, cancel and retry runs; set [api] tokens or CONVEYOR_API_TOKEN");
        } else {
            tracing::info!(addr = %addr, "API listening");
        }
        Ok(Some(ApiServer { handle, addr }))
    }

    /// The address it listens on (the real port when `listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, and gives open requests [`STOP_WITHIN`] to finish.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// `GET /metrics`: the node's metrics in Prometheus text.
pub fn mount_metrics(cfg: &mut web::ServiceConfig, render: MetricsRender) {
    cfg.service(
        web::resource("/metrics")
            .app_data(web::Data::new(render))
            .route(web::get().to(routes::metrics))
            .default_service(web::to(|req| routes::wrong_method(req, "GET"))),
    );
}

/// The `/api/v1` routes; a known path with another method is a 405.
fn api_v1(cfg: &mut web::ServiceConfig) {
    // A 405 names, in its `Allow` header, the methods the path takes.
    let resource = |path: &str, allow: &'static str| {
        web::resource(path).default_service(web::to(move |req| routes::wrong_method(req, allow)))
    };
    cfg.service(
        web::scope("/api/v1")
            .service(resource("/health", "GET").route(web::get().to(routes::health)))
            .service(resource("/openapi.json", "GET").route(web::get().to(routes::openapi)))
            .service(resource("/flows", "GET").route(web::get().to(routes::flows)))
            .service(resource("/flows/{flow}/runs", "POST").route(web::post().to(routes::trigger)))
            .service(
                resource("/runs", "GET, POST")
                    .route(web::get().to(routes::list_runs))
                    .route(web::post().to(routes::submit)),
            )
            .service(resource("/runs/{id}", "GET").route(web::get().to(routes::get_run)))
            .service(resource("/runs/{id}/events", "GET").route(web::get().to(routes::run_events)))
            .service(resource("/runs/{id}/cancel", "POST").route(web::post().to(routes::cancel)))
            .service(resource("/runs/{id}/retry", "POST").route(web::post().to(routes::retry)))
            .service(
                resource("/runs/{id}/tasks/{task}/logs", "GET").route(web::get().to(routes::logs)),
            )
            .service(resource("/nodes", "GET").route(web::get().to(routes::nodes))),
    );
}

#[cfg(test)]
mod tests {
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use conveyor_config::{ApiRole, ApiToken};

    use super::*;

    #[test]
    fn metrics_are_served_to_a_token_in_prometheus_text() {
        actix_web::rt::System::new().block_on(async {
            let auth = web::Data::new(Auth::new(vec![ApiToken {
                token: "a-read-token-0123456789".into(),
                role: ApiRole::Read,
            }]));
            let render: MetricsRender = Arc::new(|| "conveyor_runs_total 3\n".to_string());
            let app = init_service(
                App::new()
                    .app_data(auth)
                    .configure(|cfg| mount_metrics(cfg, render)),
            )
            .await;
            let res = call_service(&app, TestRequest::get().uri("/metrics").to_request()).await;
            assert_eq!(res.status(), 401);
            let res = call_service(
                &app,
                TestRequest::get()
                    .uri("/metrics")
                    .insert_header(("Authorization", "Bearer a-read-token-0123456789"))
                    .to_request(),
            )
            .await;
            assert_eq!(res.status(), 200);
            let ct = res.headers().get("content-type").unwrap().to_str().unwrap();
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            assert_eq!(read_body(res).await, "conveyor_runs_total 3\n");
        });
    }
}
