//! The cluster's certificates: a CA, made on first start and kept, and the
//! API server's serving certificate signed by it, remade whenever the
//! addresses it must name change.

use std::{
    fs, io,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("making certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{path}: not a usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// The PEMs the server and its clients need.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// control's client certificate, for agents' HTTPS servers.
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    io::Write::write_all(&mut file, text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "capstan-ca");
    params.distinguished_name = name;
    Ok(params)
}

/// The PKI under `dir`, naming `sans` (DNS names and IP addresses).
pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_pem, ca_key_pem) = match (read(&ca_crt)?, read(&ca_key)?) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write(&ca_key, &key.serialize_pem(), 0o600)?;
            write(&ca_crt, &cert.pem(), 0o644)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let (crt, key, names) = (
        dir.join("apiserver.crt"),
        dir.join("apiserver.key"),
        dir.join("apiserver.sans"),
    );
    let wanted = sans.join("\n");
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|_| PkiError::Pem {
        path: ca_key.clone(),
        what: "key",
    })?;
    // The CA's parameters are fixed, so they name it exactly as its
    // certificate does; its key proves it.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let (client_cert_pem, client_key_pem) = client_identity(dir, &issuer)?;
    if let (Some(cert), Some(key_pem), Some(named)) = (read(&crt)?, read(&key)?, read(&names)?)
        && named == wanted
    {
        return Ok(Pki {
            ca_pem,
            cert_pem: cert,
            key_pem,
            client_cert_pem,
            client_key_pem,
        });
    }
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "capstan-apiserver");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&server_key, &issuer)?;
    write(&key, &server_key.serialize_pem(), 0o600)?;
    write(&crt, &cert.pem(), 0o644)?;
    write(&names, &wanted, 0o644)?;
    Ok(Pki {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: server_key.serialize_pem(),
        client_cert_pem,
        client_key_pem,
    })
}

/// control's client certificate (made once): agents accept only clients
/// the cluster CA signed for client authentication, which is control.
fn client_identity(dir: &Path, issuer: &Issuer<'_, KeyPair>) -> Result<(String, String), PkiError> {
    let (crt, key) = (
        dir.join("control-client.crt"),
        dir.join("control-client.key"),
    );
    if let (Some(cert), Some(key)) = (read(&crt)?, read(&key)?) {
        return Ok((cert, key));
    }
    let client_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "capstan-control");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&client_key, issuer)?;
    write(&key, &client_key.serialize_pem(), 0o600)?;
    write(&crt, &cert.pem(), 0o644)?;
    Ok((cert.pem(), client_key.serialize_pem()))
}

/// A rustls server configuration for `pki`, offering HTTP/2 and HTTP/1.1.
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let pem_error = |what| PkiError::Pem {
        path: PathBuf::from("apiserver"),
        what,
    };
    let certs = rustls_pemfile::certs(&mut pki.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| pem_error("certificate"))?;
    let key = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())
        .map_err(|_| pem_error("key"))?
        .ok_or_else(|| pem_error("key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_and_the_serving_certificate_follows_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let first = load_or_create(dir.path(), &names).unwrap();
        let again = load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem);
        let more = [names.clone(), vec!["10.0.0.5".to_owned()]].concat();
        let renamed = load_or_create(dir.path(), &more).unwrap();
        assert_eq!(renamed.ca_pem, first.ca_pem);
        assert_ne!(renamed.cert_pem, first.cert_pem);
        server_config(&renamed).unwrap();
    }
}
