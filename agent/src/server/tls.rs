//! The agent's TLS identity: a self-signed serving certificate, kept under
//! the data directory, whose SHA-256 the node publishes for control to pin;
//! and the client check that only control's certificate, signed by the
//! cluster CA for client authentication, gets in.

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}: not a usable PEM certificate or key")]
    Pem(String),
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The serving certificate and key, and the certificate's SHA-256.
#[derive(Debug, Clone)]
pub struct ServingIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub sha256: String,
}

/// The identity under `dir`, made on first use for `names` (the node name
/// and address).
pub fn serving_identity(dir: &Path, names: &[String]) -> Result<ServingIdentity, TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (crt, key, sans) = (
        dir.join("agent.crt"),
        dir.join("agent.key"),
        dir.join("agent.sans"),
    );
    let wanted = names.join("\n");
    let existing = (
        std::fs::read_to_string(&crt),
        std::fs::read_to_string(&key),
        std::fs::read_to_string(&sans),
    );
    let (cert_pem, key_pem) = match existing {
        (Ok(cert), Ok(key), Ok(named)) if named == wanted => (cert, key),
        _ => {
            let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
            let cert = generated.cert.pem();
            let key_text = generated.signing_key.serialize_pem();
            write_private(&key, &key_text).map_err(io(&key))?;
            std::fs::write(&crt, &cert).map_err(io(&crt))?;
            std::fs::write(&sans, &wanted).map_err(io(&sans))?;
            (cert, key_text)
        }
    };
    let der = first_cert(&cert_pem, &crt.display().to_string())?;
    Ok(ServingIdentity {
        sha256: hex::encode(Sha256::digest(der.as_ref())),
        cert_pem,
        key_pem,
    })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

fn first_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>, TlsError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::Pem(what.to_owned()))
}

/// A server configuration presenting `identity` and accepting only clients
/// with a certificate the cluster CA (`ca_pem`) signed.
pub fn server_config(
    identity: &ServingIdentity,
    ca_pem: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|_| TlsError::Pem("cluster CA".to_owned()))?;
        roots
            .add(cert)
            .map_err(|err| TlsError::Rustls(err.to_string()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| TlsError::Rustls(err.to_string()))?;
    let cert = first_cert(&identity.cert_pem, "serving certificate")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut identity.key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::Pem("serving key".to_owned()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Rustls(err.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(|err| TlsError::Rustls(err.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_kept_until_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["n1".to_owned(), "198.18.0.1".to_owned()];
        let first = serving_identity(dir.path(), &names).unwrap();
        let again = serving_identity(dir.path(), &names).unwrap();
        assert_eq!(first.sha256, again.sha256);
        assert_eq!(first.sha256.len(), 64);
        let renamed = serving_identity(dir.path(), &["n2".to_owned()]).unwrap();
        assert_ne!(renamed.sha256, first.sha256);
    }
}
