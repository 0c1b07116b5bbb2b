//! The errors that stop the webhook from starting or serving.

use std::net::SocketAddr;

/// Why the webhook could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRD schemas could not be built.
    #[error("failed to build the CRD schemas")]
    Schema(#[from] crate::schema::SchemaError),
    /// The serving certificate could not be loaded or generated.
    #[error("failed to set up the serving certificate")]
    Tls(#[from] crate::tls::TlsError),
    /// The Kubernetes client could not be configured.
    #[error("failed to configure the Kubernetes client (needed by --cluster-autoscaler-guard=warn|deny; use =off to run without cluster access)")]
    Kube(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A listener could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A server stopped with an I/O error.
    #[error("the {server} server failed")]
    Serve {
        /// Which server.
        server: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
