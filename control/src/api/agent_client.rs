//! Connections from control to node agents (for logs): HTTPS with
//! control's client certificate, the agent's self-signed serving
//! certificate checked against the SHA-256 its Node published.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Body;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("control's client certificate: {0}")]
    Identity(String),
    #[error("connecting to the agent at {address}: {message}")]
    Connect {
        address: SocketAddr,
        message: String,
    },
}

/// control's identity toward agents.
#[derive(Clone)]
pub struct AgentClient {
    certs: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient").finish_non_exhaustive()
    }
}

impl AgentClient {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, AgentError> {
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| AgentError::Identity(err.to_string()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|err| AgentError::Identity(err.to_string()))?
            .ok_or_else(|| AgentError::Identity("no private key".to_owned()))?;
        Ok(Self {
            certs,
            key: Arc::new(key),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// Sends `request` to the agent at `address` whose serving certificate
    /// has SHA-256 `pin` (hex).
    pub async fn send(
        &self,
        address: SocketAddr,
        pin: &str,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, AgentError> {
        let failed = |message: String| AgentError::Connect { address, message };
        let verifier = Arc::new(PinnedCertificate {
            sha256: pin.to_ascii_lowercase(),
            provider: Arc::clone(&self.provider),
        });
        let config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| failed(err.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|err| failed(err.to_string()))?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| failed("timed out".to_owned()))?
            .map_err(|err| failed(err.to_string()))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(address.ip().into()), tcp)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|err| failed(err.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "agent connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|err| failed(err.to_string()))
    }
}

/// Accepts exactly the certificate with this SHA-256.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if hex::encode(Sha256::digest(end_entity.as_ref())) == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent's certificate is not the one its node published".to_owned(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
