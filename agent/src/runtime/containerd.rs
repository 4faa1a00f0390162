//! The connection to one containerd: its gRPC clients, the namespace every
//! request carries, and leases that keep half-made objects from its GC.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use containerd_client::{
    Client,
    services::v1::{CreateRequest, DeleteRequest},
    tonic::{Code, Request, Status, metadata::MetadataValue},
};

/// What went wrong talking to containerd or preparing what it needs.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("connecting to containerd at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: containerd_client::tonic::transport::Error,
    },
    #[error("containerd {call}: {status}", status = .source.message())]
    Call {
        call: &'static str,
        #[source]
        source: Status,
    },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error(transparent)]
    Layout(#[from] super::LayoutError),
    #[error(transparent)]
    Spec(#[from] super::SpecError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn call(call: &'static str) -> impl FnOnce(Status) -> Self {
        move |source| Self::Call { call, source }
    }

    /// True when containerd answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Call { source, .. } if source.code() == Code::NotFound)
    }
}

/// A client of one containerd, scoped to one containerd namespace.
#[derive(Clone)]
pub struct Containerd {
    client: Arc<Client>,
    namespace: String,
}

impl fmt::Debug for Containerd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Containerd")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Containerd {
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, RuntimeError> {
        let client = Client::from_path(socket)
            .await
            .map_err(|source| RuntimeError::Connect {
                path: socket.to_owned(),
                source,
            })?;
        Ok(Self {
            client: Arc::new(client),
            namespace: namespace.to_owned(),
        })
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// containerd's version, as `containerd --version` prints it.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let reply = self
            .client
            .version()
            .version(())
            .await
            .map_err(RuntimeError::call("version"))?;
        Ok(reply.into_inner().version)
    }

    /// A request in our namespace, under `lease` when given.
    pub(crate) fn request<T>(&self, message: T, lease: Option<&Lease>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(namespace) = MetadataValue::try_from(self.namespace.as_str()) {
            metadata.insert("containerd-namespace", namespace);
        }
        if let Some(lease) = lease
            && let Ok(id) = MetadataValue::try_from(lease.id.as_str())
        {
            metadata.insert("containerd-lease", id);
        }
        request
    }

    /// A lease protecting content and snapshots made under it from garbage
    /// collection until [`Self::end_lease`], or until it expires should the
    /// agent die half-way.
    pub(crate) async fn lease(&self, purpose: &str) -> Result<Lease, RuntimeError> {
        let now = SystemTime::now();
        let id = format!(
            "capstan-{purpose}-{}-{}",
            std::process::id(),
            now.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let expires = humantime::format_rfc3339_seconds(now + Duration::from_secs(3600));
        let request = CreateRequest {
            id: id.clone(),
            labels: [("containerd.io/gc.expire".to_owned(), expires.to_string())].into(),
        };
        self.client
            .leases()
            .create(self.request(request, None))
            .await
            .map_err(RuntimeError::call("leases.create"))?;
        Ok(Lease { id })
    }

    pub(crate) async fn end_lease(&self, lease: Lease) -> Result<(), RuntimeError> {
        let request = DeleteRequest {
            id: lease.id,
            sync: false,
        };
        self.client
            .leases()
            .delete(self.request(request, None))
            .await
            .map_err(RuntimeError::call("leases.delete"))?;
        Ok(())
    }
}

/// A containerd lease id.
#[derive(Debug)]
pub(crate) struct Lease {
    id: String,
}
