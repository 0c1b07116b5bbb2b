//! Start-up: schemas, cluster cache, certificates, the two servers, and shutdown on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Args;
use crate::decision::{Admission, ClusterView, StaticView};
use crate::guard::GuardMode;
use crate::metrics::Metrics;
use crate::server::{self, AppState, Clock, Limits};
use crate::tls::{self, CertFiles, PlaintextGuard};
use crate::{watch, Error};

/// Runs the webhook until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let admission = Arc::new(Admission::new(
        args.guard.cluster_autoscaler_guard,
        args.guard.cluster_autoscaler_stale_after,
    )?);
    let metrics = Arc::new(Metrics::default());
    let readiness = Arc::new(Readiness::default());

    let view: Arc<dyn ClusterView> = match args.guard.cluster_autoscaler_guard {
        GuardMode::Off => {
            readiness.set_caches_synced();
            Arc::new(StaticView::default())
        }
        GuardMode::Warn | GuardMode::Deny => {
            let client = watch::client(&args.client).await?;
            Arc::new(watch::start(client, readiness.clone()))
        }
    };

    let admin_listener = tokio::net::TcpListener::bind(args.admin.admin_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: args.admin.admin_listen,
            source,
        })?;
    let admin_addr = admin_listener
        .local_addr()
        .unwrap_or(args.admin.admin_listen);
    tracing::info!(addr = %admin_addr, "serving /healthz, /readyz and /metrics over plain HTTP");
    let admin_router = admin::router(AdminState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
    });
    let admin = tokio::spawn(async move { axum::serve(admin_listener, admin_router).await });

    let rustls = load_certificates(&args, metrics.clone()).await?;
    readiness.set_certs_loaded();

    let state = AppState {
        admission,
        view,
        metrics: metrics.clone(),
        clock: Clock::System,
        limits: Limits {
            max_body_bytes: args.server.max_body_bytes,
            body_timeout: args.server.request_timeout,
        },
    };
    let handle: Handle<SocketAddr> = Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let acceptor = RustlsAcceptor::new(rustls)
        .handshake_timeout(args.server.request_timeout)
        .acceptor(PlaintextGuard::new(args.server.request_timeout, metrics));
    let mut server = axum_server::bind(args.server.listen)
        .acceptor(acceptor)
        .handle(handle.clone())
        .first_request_timeout(args.server.request_timeout);
    server
        .http_builder()
        .http1()
        .header_read_timeout(args.server.request_timeout)
        .keep_alive(true);
    let listening = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = listening.listening().await {
            tracing::info!(%addr, "serving admission reviews over TLS");
        }
    });
    let serve = server
        .http1_only()
        .serve(server::router(state).into_make_service());
    let result = serve.await.map_err(|source| Error::Serve {
        server: "admission",
        source,
    });
    admin.abort();
    result
}

async fn load_certificates(args: &Args, metrics: Arc<Metrics>) -> Result<RustlsConfig, Error> {
    let tls_args = &args.tls;
    if tls_args.tls_self_signed {
        let (cert, key) = tls::self_signed(&tls_args.tls_self_signed_names)?;
        let p = std::path::Path::new("(self-signed)");
        let config = tls::server_config(cert.as_bytes(), key.as_bytes(), p, p)?;
        tracing::info!(names = ?tls_args.tls_self_signed_names, "generated a self-signed serving certificate");
        return Ok(RustlsConfig::from_config(Arc::new(config)));
    }
    let (Some(cert), Some(key)) = (&tls_args.tls_cert_file, &tls_args.tls_key_file) else {
        // clap requires both unless --tls-self-signed.
        return Err(Error::Tls(tls::TlsError::NoCertificate(
            "--tls-cert-file".into(),
        )));
    };
    let mut files = CertFiles::new(cert.clone(), key.clone());
    // The Secret may be mounted a little after start-up: wait, unready, until it loads.
    let mut warned = false;
    let config = loop {
        match files.poll().await {
            Ok(Some(c)) => break c,
            Ok(None) => {}
            Err(e) if !warned => {
                tracing::warn!(error = %tls::error_chain(&e), "waiting for the serving certificate");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(tls_args.cert_reload_interval.min(Duration::from_secs(1))).await;
    };
    tracing::info!(cert = %cert.display(), "loaded the serving certificate");
    let rustls = RustlsConfig::from_config(Arc::new(config));
    tokio::spawn(tls::reload_loop(
        files,
        rustls.clone(),
        tls_args.cert_reload_interval,
        metrics,
    ));
    Ok(rustls)
}

async fn shutdown_on_signal(handle: Handle<SocketAddr>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    handle.graceful_shutdown(Some(Duration::from_secs(10)));
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    handle.graceful_shutdown(Some(Duration::from_secs(10)));
}
