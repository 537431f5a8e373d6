//! Building and running the HTTP application.
//!
//! [`Application::build`] binds the listener first (so tests can ask for port 0 and read the
//! port back), connects to Redis and wires every module's routes. [`serve`] is the `serve`
//! command: it adds the self-managed local Redis, seed loading and shutdown.

pub mod seed;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::cities::CityIndex;
use crate::config::Settings;
use crate::http::error::ApiError;
use crate::http::extract::BodyLimit;
use crate::store::local::{LocalRedis, LocalRedisOptions};
use crate::store::{Store, Topology};

/// Shared state handed to every handler (each part also registered as its own `web::Data`).
#[derive(Clone)]
pub struct AppContext {
    /// Settings in force.
    pub settings: Arc<Settings>,
    /// Redis access.
    pub store: Store,
    /// Service areas.
    pub cities: Arc<CityIndex>,
    /// Nearest-k start radii learned by this instance.
    pub(crate) tuning: Arc<crate::search::KnnTuning>,
    /// Dispatch engine (orders, locks, claims, transitions).
    pub dispatcher: crate::dispatch::Dispatcher,
    /// Webhook endpoints and deliveries.
    pub webhooks: crate::webhooks::Webhooks,
}

impl AppContext {
    /// Connect to Redis at `redis_url` and load the service areas.
    ///
    /// The topology follows the settings ([`Topology::from_settings`]: `redis_url` is used
    /// only for a standalone Redis). Refuses to start when a script's keys would cross Redis
    /// Cluster hash slots ([`Keys::script_key_sets`]).
    pub(crate) fn new(settings: Settings, redis_url: &str) -> anyhow::Result<Self> {
        let topology = Topology::from_settings(&settings, redis_url);
        let cities = Arc::new(CityIndex::load(settings.cities_file.as_deref())?);
        // Each queue worker (per city) holds a pooled connection, and so does each city's
        // webhook fan-out; event streams take more.
        let fan_outs = if settings.webhook_signing_key.is_some() {
            cities.all().len()
        } else {
            0
        };
        let pool_size = (settings.dispatch_workers * cities.all().len() + fan_outs + 32).max(64);
        let store = Store::connect_to(
            &topology,
            &settings.key_prefix,
            Duration::from_millis(settings.redis_timeout_ms),
            pool_size,
        )?;
        crate::store::check_slots(
            store
                .keys()
                .script_key_sets(cities.all().iter().map(|c| c.id.as_str())),
        )
        .context("the key layout does not fit Redis Cluster")?;
        let settings = Arc::new(settings);
        let tuning = Arc::new(crate::search::KnnTuning::new());
        let mut dispatcher = crate::dispatch::Dispatcher::new(
            store.clone(),
            settings.clone(),
            tuning.clone(),
            cities.clone(),
        );
        if settings.lock_backend == "redlock" {
            let nodes = crate::store::url_list(settings.redlock_nodes.as_deref().unwrap_or(""));
            let redlock = crate::lock::redlock::Redlock::new(
                &nodes,
                Duration::from_millis(
                    settings
                        .redis_timeout_ms
                        .min(settings.lock_ttl_ms / 10)
                        .max(5),
                ),
                0,
            )
            .context("the Redlock nodes")?;
            dispatcher = dispatcher.with_redlock(redlock);
        }
        let webhooks = crate::webhooks::Webhooks::new(store.clone(), settings.clone());
        Ok(Self {
            settings,
            store,
            cities,
            tuning,
            dispatcher,
            webhooks,
        })
    }
}

/// The documented routes (path templates and their methods), to tell "no such route" (404)
/// from "no such method on this route" (405 with `Allow`).
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl RouteTable {
    /// Read the routes of an OpenAPI document.
    pub(crate) fn from_spec(spec: &utoipa::openapi::OpenApi) -> Self {
        let value = serde_json::to_value(spec).unwrap_or_default();
        let routes = value["paths"]
            .as_object()
            .map(|paths| {
                paths
                    .iter()
                    .map(|(path, item)| {
                        let segments = path.split('/').map(str::to_owned).collect();
                        let methods = item
                            .as_object()
                            .map(|ops| ops.keys().map(|m| m.to_ascii_uppercase()).collect())
                            .unwrap_or_default();
                        (segments, methods)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { routes }
    }

    /// The methods documented for a concrete request path.
    pub(crate) fn methods_for(&self, path: &str) -> Vec<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut methods: Vec<String> = self
            .routes
            .iter()
            .filter(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| {
                        (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                    })
            })
            .flat_map(|(_, m)| m.iter().cloned())
            .collect();
        methods.sort();
        methods.dedup();
        methods
    }
}

async fn not_found(req: HttpRequest, routes: web::Data<RouteTable>) -> HttpResponse {
    let allowed = routes.methods_for(req.path());
    if allowed.is_empty() {
        return ApiError::NotFound(format!("no route for {} {}", req.method(), req.path()))
            .error_response();
    }
    let mut response = ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}; allowed: {}",
        req.method(),
        req.path(),
        allowed.join(", ")
    ))
    .error_response();
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("location", "/docs/"))
        .finish()
}

/// A running (or ready to run) HTTP application.
pub struct Application {
    port: u16,
    server: Server,
    context: AppContext,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Bind `settings.listen`, connect to `redis_url`, build the server (not yet polled) and
    /// start the background tasks (the liveness sweeper, the dispatch timer scan and
    /// `dispatch_workers` queue workers). Call from inside a tokio runtime.
    pub fn build(
        settings: Settings,
        redis_url: &str,
        handle_signals: bool,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.listen)
            .with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let context = AppContext::new(settings, redis_url)?;
        let server = run(listener, context.clone(), handle_signals)?;
        let mut background = vec![
            crate::drivers::spawn_sweeper(
                context.store.clone(),
                context.settings.clone(),
                context.cities.clone(),
            ),
            crate::dispatch::workers::spawn_timers(Arc::new(context.dispatcher.clone())),
        ];
        let instance = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        background.extend(crate::dispatch::workers::spawn_workers(
            context.dispatcher.clone(),
            &instance,
            context.settings.dispatch_workers,
        ));
        let city_ids: Vec<String> = context
            .cities
            .all()
            .iter()
            .map(|c| c.id.to_string())
            .collect();
        background.extend(crate::webhooks::spawn(&context.webhooks, &city_ids));
        // The queue workers stay under the batched policy: they finish what greedy left
        // queued (orders created before a switch) and take explicit dispatches' retries.
        if context.settings.dispatch_policy == crate::domain::DispatchPolicy::Batched {
            background.extend(crate::dispatch::matcher::spawn_matchers(
                context.dispatcher.clone(),
            ));
        }
        Ok(Self {
            port,
            server,
            context,
            background,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared context (store, cities, settings).
    pub fn context(&self) -> &AppContext {
        &self.context
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped (SIGTERM / Ctrl-C when signals are handled, or a handle's `stop`).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        result
    }
}

fn run(listener: TcpListener, context: AppContext, handle_signals: bool) -> anyhow::Result<Server> {
    let settings = context.settings.clone();
    let store = web::Data::new(context.store.clone());
    let cities = web::Data::from(context.cities.clone());
    let settings_data = web::Data::from(settings.clone());
    let tuning = web::Data::from(context.tuning.clone());
    let dispatcher = web::Data::new(context.dispatcher.clone());
    let webhooks = web::Data::new(context.webhooks.clone());
    let guard = web::Data::new(crate::http::auth::Guard::new(
        context.store.clone(),
        context.settings.clone(),
    ));
    let routes = web::Data::new(RouteTable::from_spec(&crate::http::openapi::spec()));
    let body_limit = settings.body_limit_bytes;
    let mut server = HttpServer::new(move || {
        let (app, api) = App::new()
            .wrap(from_fn(crate::http::auth::middleware))
            .wrap(from_fn(crate::http::telemetry::request_id_middleware))
            .app_data(guard.clone())
            .app_data(store.clone())
            .app_data(cities.clone())
            .app_data(settings_data.clone())
            .app_data(tuning.clone())
            .app_data(dispatcher.clone())
            .app_data(webhooks.clone())
            .app_data(routes.clone())
            .app_data(BodyLimit(body_limit))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, _| ApiError::field("path", err.to_string()).into()),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, _| ApiError::field("query", err.to_string()).into()),
            )
            .into_utoipa_app()
            .openapi(crate::http::openapi::ApiDoc::openapi())
            .configure(crate::http::configure_routes)
            .split_for_parts();
        let api = crate::http::openapi::with_protection(api);
        app.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
            .route("/docs", web::get().to(docs_redirect))
            .configure(crate::http::map::configure_pages)
            .default_service(web::to(not_found))
    })
    .listen(listener)?
    .shutdown_timeout(10);
    if settings.http_workers > 0 {
        server = server.workers(settings.http_workers);
    }
    if !handle_signals {
        server = server.disable_signals();
    }
    Ok(server.run())
}

/// The `migrate` command: bring driver keys of an earlier build to the current layout
/// ([`crate::drivers::migrate_layout`]) in the Redis the settings name (or the local one), and
/// print what changed. Stop every service instance first.
pub async fn migrate(settings: Settings) -> anyhow::Result<Migration> {
    let (redis_url, local) = redis_for(&settings).await?;
    let context = AppContext::new(settings, &redis_url)?;
    let store = &context.store;
    let to_layout = crate::store::keys::LAYOUT_VERSION;
    // A Redis without a version was written by a layout-1 build (or is new: then the steps
    // find nothing to change).
    let from_layout = store
        .layout()
        .await
        .context("reading the layout version")?
        .unwrap_or(1);
    anyhow::ensure!(
        from_layout <= to_layout,
        "the data is in layout {from_layout}, newer than this build's layout {to_layout}"
    );
    let changes = if from_layout < to_layout {
        let changes = crate::drivers::migrate_layout(store, &context.cities).await?;
        store
            .set_layout()
            .await
            .context("writing the layout version")?;
        changes
    } else {
        crate::drivers::MigrateReport::default()
    };
    tracing::info!("layout {from_layout} -> {to_layout}");
    if let Some(mut redis) = local {
        redis.stop().await?;
    }
    Ok(Migration {
        from_layout,
        to_layout,
        changes,
    })
}

/// What `geodispatch migrate` did.
#[derive(Debug, serde::Serialize)]
pub struct Migration {
    /// The layout the data was in (1 when Redis held no version).
    pub from_layout: u32,
    /// The layout it is in now (this build's).
    pub to_layout: u32,
    /// What the steps from `from_layout` changed (all zero when it was already current).
    pub changes: crate::drivers::MigrateReport,
}

/// The Redis the settings name, or, when they name none, a local `redis-server` started (AOF
/// on, in `redis_data_dir`) and kept by the caller for as long as it is used. Returns the URL
/// for a standalone Redis (empty for Sentinel and Cluster, which the settings describe).
pub(crate) async fn redis_for(settings: &Settings) -> anyhow::Result<(String, Option<LocalRedis>)> {
    let redis_url = match &settings.redis_url {
        Some(url) => {
            tracing::info!(redis = %redact(url), "using the configured Redis");
            url.clone()
        }
        None if settings.redis_sentinels.is_some() || settings.redis_cluster_nodes.is_some() => {
            let topology = Topology::from_settings(settings, "");
            match &topology {
                Topology::Sentinel { sentinels, master } => tracing::info!(
                    sentinels = %sentinels.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","),
                    master,
                    "using the primary that Redis Sentinel names"
                ),
                Topology::Cluster(nodes) => tracing::info!(
                    nodes = %nodes.iter().map(|u| redact(u)).collect::<Vec<_>>().join(","),
                    "using Redis Cluster"
                ),
                Topology::Standalone(_) => {}
            }
            String::new()
        }
        None => {
            let redis = LocalRedis::start(LocalRedisOptions {
                data_dir: settings.redis_data_dir.clone(),
                appendonly: true,
                extra_args: Vec::new(),
            })
            .await
            .context("no GEODISPATCH_REDIS_URL is set, so geodispatch tried to start its own redis-server")?;
            tracing::info!(
                url = %redis.url(),
                data_dir = %settings.redis_data_dir.display(),
                "no Redis URL configured: started and supervising a local redis-server (AOF on); set GEODISPATCH_REDIS_URL to use your own"
            );
            let url = redis.url();
            return Ok((url, Some(redis)));
        }
    };
    Ok((redis_url, None))
}

/// The `serve` command: use the configured Redis or start a local one, load seed data, serve
/// until SIGTERM / Ctrl-C, then stop the local Redis.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let (redis_url, local) = redis_for(&settings).await?;
    let seed = settings.seed.clone();
    let mut settings = settings;
    let dev_keys = settings.auth_enabled && settings.admin_key.is_none();
    if dev_keys {
        settings.admin_key = Some(crate::auth::new_secret("gdk_").into());
    }
    let app = Application::build(settings, &redis_url, true)?;
    tracing::info!(
        port = app.port(),
        docs = %format!("http://{}/docs/", app.context().settings.listen),
        "geodispatch listening"
    );
    let mut refresher = None;
    if let Some(dir) = seed {
        let context = app.context().clone();
        crate::app::seed::load(&context, &dir)
            .await
            .context("loading seed data")?;
        if context.settings.seed_refresh {
            refresher = Some(crate::app::seed::spawn_refresh(context, dir));
        }
    }
    if dev_keys {
        print_dev_keys(app.context()).await?;
    }
    let supervisor = local.map(|redis| {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        (stop_tx, tokio::spawn(supervise(redis, stop_rx)))
    });
    let result = app.run_until_stopped().await;
    tracing::info!("HTTP server stopped");
    if let Some(task) = refresher {
        task.abort();
    }
    if let Some((stop_tx, task)) = supervisor {
        let _ = stop_tx.send(());
        let _ = task.await;
    }
    result.context("HTTP server")
}

/// Create a dispatcher and a driver key for this run and print them with the generated admin
/// key (development convenience when no `GEODISPATCH_ADMIN_KEY` is configured).
async fn print_dev_keys(context: &AppContext) -> anyhow::Result<()> {
    use crate::auth::{Role, create_key};
    use secrecy::ExposeSecret;
    let admin = context
        .settings
        .admin_key
        .as_ref()
        .map_or("", ExposeSecret::expose_secret);
    let driver_id = "paris-d00001".to_owned();
    let (dispatcher, _) = create_key(
        &context.store,
        Role::Dispatcher,
        None,
        "development (serve)",
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the development dispatcher key: {e}"))?;
    let (driver, _) = create_key(
        &context.store,
        Role::Driver,
        Some(driver_id.clone()),
        "development (serve)",
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the development driver key: {e}"))?;
    tracing::warn!(
        "no GEODISPATCH_ADMIN_KEY is set: generated an admin key for this run and created development keys (printed on stdout)"
    );
    // Written, not println!: a closed stdout (e.g. `serve | head`) must not stop the service.
    let _ = std::io::Write::write_all(
        &mut std::io::stdout(),
        format!(
        "geodispatch development keys for this run (send as `Authorization: Bearer <key>`; set GEODISPATCH_ADMIN_KEY to choose the admin key):\n  admin       {admin}\n  dispatcher  {dispatcher}\n  driver      {driver}   (bound to driver {driver_id})\n  try: export GD_KEY={dispatcher}\n"
        )
        .as_bytes(),
    );
    Ok(())
}

/// Watch the local Redis and restart it (same port and data dir, so the AOF restores the data)
/// if it dies; on `stop`, shut it down cleanly (SHUTDOWN flushes the AOF).
async fn supervise(mut redis: LocalRedis, mut stop: tokio::sync::oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            status = redis.wait_exit() => {
                tracing::error!(?status, "the local redis-server exited; restarting it");
                if let Err(err) = redis.restart().await {
                    tracing::error!(error = format!("{err:#}"), "could not restart the local redis-server");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            _ = &mut stop => {
                match redis.stop().await {
                    Ok(()) => tracing::info!("stopped the local redis-server"),
                    Err(err) => tracing::warn!(error = format!("{err:#}"), "stopping the local redis-server"),
                }
                return;
            }
        }
    }
}

/// A Redis URL with its password hidden, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_of_every_city_stays_in_one_slot() {
        let cities = CityIndex::load(None).expect("built-in cities");
        let sets = crate::store::Keys::new("gd")
            .script_key_sets(cities.all().iter().map(|c| c.id.as_str()));
        assert!(sets.len() > 5 * cities.all().len());
        crate::store::check_slots(sets).expect("one slot per script");
    }

    #[test]
    fn a_prefix_with_braces_is_refused() {
        let settings = Settings {
            key_prefix: "gd{x}".to_owned(),
            ..Settings::default()
        };
        let err = format!("{:#}", settings.validate().unwrap_err());
        assert!(err.contains("hash tag"), "{err}");
    }
}
