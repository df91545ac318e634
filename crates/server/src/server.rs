//! `embgen serve`: builds the application from its configuration and runs it until a
//! shutdown signal, letting requests in flight finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::response::IntoResponse;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::{LogFormat, ServeArgs};
use crate::error::ApiError;
use crate::routes::{self, service::Preload, AppState};
use crate::runtime::registry::Registry;
use crate::runtime::{RequestLimits, Runtime};

/// Logs go to stderr, at `level`, as text or one JSON object per line.
///
/// A second call (the Python package runs the command in a long-lived process) keeps
/// the first subscriber rather than failing.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            let _ = builder.json().flatten_event(true).try_init();
        }
        LogFormat::Text => {
            let _ = builder.try_init();
        }
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    // Named, not `*`: browsers do not let a wildcard cover Authorization.
    let request_id = HeaderName::from_static("x-request-id");
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                request_id.clone(),
            ])
            .expose_headers([
                request_id,
                HeaderName::from_static("x-queue-time-ms"),
                HeaderName::from_static("x-compute-time-ms"),
                header::RETRY_AFTER,
            ]),
    )
}

/// The whole application, ready to serve.
pub fn app(state: AppState) -> Router {
    let config = state.config.clone();
    let origins = crate::guard::Origins(Arc::new(config.cors_allow_origins.clone()));
    let mut app = routes::router(state)
        .layer(DefaultBodyLimit::max(config.max_request_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.body_read_timeout as u64,
        )))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal().into_response()
        }))
        .layer(axum::middleware::from_fn_with_state(
            origins,
            crate::guard::check,
        ))
        .layer(axum::middleware::from_fn_with_state(
            crate::auth::Keys::new(config.api_key.clone()),
            crate::auth::require_key,
        ))
        .layer(axum::middleware::from_fn(crate::request_log::log_requests));
    if let Some(cors) = cors(&config.cors_allow_origins) {
        app = app.layer(cors);
    }
    app
}

/// The engine's threads, a little below normal priority: they keep both cores busy
/// under load, and the HTTP threads (accepting, refusing with 429, answering /health)
/// must still get a core at once when a request arrives.
fn engine_pool(threads: Option<usize>) -> anyhow::Result<Arc<rayon::ThreadPool>> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("embgen-engine-{i}"))
        .start_handler(|_| {
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority on this thread's own id (Linux nice values are
            // per thread); failure leaves the priority as it was.
            unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 5);
            }
        })
        .build()
        .context("THREADS: cannot start the engine's threads")?;
    Ok(Arc::new(pool))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if let Some(isa) = args.isa.0 {
        embgen_engine::kernels::set_default_isa(isa).map_err(|e| anyhow::anyhow!("ISA: {e}"))?;
    }
    let pool = engine_pool(args.threads)?;
    let residency = args.residency();
    let registry = Arc::new(Registry::new(
        args.hub_options(),
        args.model_dirs.clone(),
        pool,
        args.max_sequence_length,
        args.batch_limits(),
        residency,
        args.allowed_models.clone(),
        args.quantize,
        args.default_model.clone(),
    ));
    registry
        .allows(&args.default_model)
        .map_err(|e| anyhow::anyhow!("DEFAULT_MODEL: {}", e.message))?;
    crate::metrics::install();
    crate::metrics::residency(residency.max_models, residency.memory_budget);
    tracing::info!(
        max_loaded_models = residency.max_models,
        model_memory_budget_mb = if residency.memory_budget == usize::MAX {
            0
        } else {
            residency.memory_budget >> 20
        },
        "model residency limits"
    );
    let runtime = Arc::new(Runtime::new(
        registry.clone(),
        args.max_concurrent_requests,
        RequestLimits {
            max_texts: args.max_texts_per_request,
            max_batch_size: args.max_batch_size,
            max_tokens: args.max_tokens_per_request,
        },
    ));
    let state = AppState {
        runtime,
        config: Arc::new(args.clone()),
        started: Instant::now(),
        preload: Arc::new(Preload::default()),
    };
    if args.preload {
        let preload = state.preload.clone();
        preload.loading();
        let name = args.default_model.clone();
        tokio::spawn(async move {
            match registry.get_or_load(&name).await {
                Ok(_) => preload.done(),
                Err(e) => {
                    tracing::error!(model = %name, error = %e.message, "default model failed to load");
                    preload.failed(e.message);
                }
            }
        });
    }
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("HOST/PORT: cannot listen on {addr}"))?;
    tracing::info!(%addr, default_model = %args.default_model, "embgen listening");
    serve(listener, app(state), &args, shutdown_signal()).await;
    tracing::info!("embgen stopped");
    Ok(())
}

/// Accepts connections until `shutdown`, then lets requests in flight finish for
/// SHUTDOWN_TIMEOUT. Slow clients cannot hold connections: headers (and the wait
/// for the next request on a kept-alive connection) must arrive within
/// HEADER_READ_TIMEOUT, bodies within BODY_READ_TIMEOUT (the app's layer), and at
/// most MAX_CONNECTIONS are open at once; more are closed as they arrive.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    args: &ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(args.header_read_timeout as u64));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(args.header_read_timeout as u64)));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections));
    let first_bytes = Duration::from_secs(args.header_read_timeout as u64);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    crate::metrics::rejected("connections");
                    drop(stream);
                    continue;
                };
                let service = TowerToHyperService::new(app.clone());
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                tokio::spawn(async move {
                    // The auto builder reads a connection's first bytes (HTTP/1 or 2?)
                    // with no timer of its own: a client that connects and sends
                    // nothing would hold its slot forever.
                    let mut first = [0u8; 1];
                    let arrived = tokio::time::timeout(first_bytes, stream.peek(&mut first)).await;
                    if !matches!(arrived, Ok(Ok(n)) if n > 0) {
                        drop(slot);
                        return;
                    }
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let grace = Duration::from_secs(args.shutdown_timeout as u64);
    tokio::select! {
        _ = graceful.shutdown() => {}
        // Once the signal came, requests in flight get SHUTDOWN_TIMEOUT to finish.
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(seconds = grace.as_secs(), "requests still running at the shutdown timeout; stopping anyway")
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
