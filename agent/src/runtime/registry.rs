//! An OCI distribution (Docker registry v2) client: manifests and blobs by
//! reference, with the registry's Basic or Bearer-token authentication.
//! Registries on loopback, and those named insecure, are spoken to over
//! plain HTTP, as Docker and containerd do; all others over HTTPS with the
//! system's roots.

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Mutex;

use super::Reference;

/// Media types a manifest request accepts.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// Manifests larger than this are refused (the spec suggests 4 MiB).
const MAX_MANIFEST: usize = 4 << 20;
const MAX_REDIRECTS: usize = 5;

/// A user name and password for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Credentials by registry host, as a docker config.json holds them.
pub type RegistryAuth = HashMap<String, Credentials>;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Http(String),
    /// The registry answered with an error; the text is its own.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("content of {0} does not match its digest")]
    Digest(String),
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: String,
    pub body: Bytes,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for any number of registries; bearer tokens are cached per
/// registry and repository.
#[derive(Clone)]
pub struct RegistryClient {
    http: HttpsClient,
    insecure: Arc<Vec<String>>,
    tokens: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// `insecure`: registries (host[:port]) spoken to over plain HTTP
    /// beyond those on loopback.
    pub fn new(insecure: Vec<String>) -> Result<Self, RegistryError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|err| RegistryError::Http(format!("loading the system's TLS roots: {err}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            insecure: Arc::new(insecure),
            tokens: Arc::default(),
        })
    }

    fn base(&self, registry: &str) -> String {
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let loopback = host == "localhost"
            || host == "[::1]"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback || self.insecure.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{registry}")
    }

    /// The manifest (or index) `reference` names.
    pub async fn manifest(
        &self,
        image: &Reference,
        reference: &str,
        auth: &RegistryAuth,
    ) -> Result<FetchedManifest, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base(&image.registry),
            image.repository
        );
        let (headers, body) = self
            .get(image, &url, Some(MANIFEST_TYPES), auth, MAX_MANIFEST)
            .await?;
        let computed = sha256(&body);
        let digest = match headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(digest) if digest != computed => return Err(RegistryError::Digest(url)),
            _ => computed,
        };
        if reference.starts_with("sha256:") && reference != digest {
            return Err(RegistryError::Digest(url));
        }
        let media_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned())
            .filter(|t| !t.is_empty() && t != "application/json")
            .or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()?
                    .get("mediaType")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned());
        Ok(FetchedManifest {
            media_type,
            digest,
            body,
        })
    }

    /// Blob `digest` of `image`'s repository, checked against the digest.
    pub async fn blob(
        &self,
        image: &Reference,
        digest: &str,
        auth: &RegistryAuth,
        max: usize,
    ) -> Result<Bytes, RegistryError> {
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            self.base(&image.registry),
            image.repository
        );
        let (_, body) = self.get(image, &url, None, auth, max).await?;
        if sha256(&body) != digest {
            return Err(RegistryError::Digest(digest.to_owned()));
        }
        Ok(body)
    }

    /// GET with the registry's authentication and redirects followed.
    async fn get(
        &self,
        image: &Reference,
        url: &str,
        accept: Option<&str>,
        auth: &RegistryAuth,
        max: usize,
    ) -> Result<(HeaderMap, Bytes), RegistryError> {
        let scope_key = format!("{}/{}", image.registry, image.repository);
        let credentials = auth.get(&image.registry);
        let mut authorization = self.tokens.lock().await.get(&scope_key).cloned();
        let mut challenged = false;
        let mut url = url.to_owned();
        let mut redirects = 0;
        loop {
            let response = self.send(&url, accept, authorization.as_deref()).await?;
            let status = response.status();
            if status.is_redirection() && redirects < MAX_REDIRECTS {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        RegistryError::Http(format!("{url}: redirect without a location"))
                    })?;
                url = absolute(&url, location);
                // Storage backends take the signed URL, not our token.
                authorization = None;
                redirects += 1;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                authorization = Some(self.authorize(&challenge, image, credentials).await?);
                if challenge.to_ascii_lowercase().starts_with("bearer")
                    && let Some(token) = &authorization
                {
                    self.tokens
                        .lock()
                        .await
                        .insert(scope_key.clone(), token.clone());
                }
                continue;
            }
            let headers = response.headers().clone();
            let body = read_limited(response.into_body(), max, &url).await?;
            if !status.is_success() {
                return Err(RegistryError::Refused {
                    status: status.as_u16(),
                    message: registry_message(status, &body),
                });
            }
            return Ok((headers, body));
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, RegistryError> {
        let uri: Uri = url
            .parse()
            .map_err(|err| RegistryError::Http(format!("{url}: {err}")))?;
        let mut request = Request::get(uri);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(value) = authorization.and_then(|a| HeaderValue::from_str(a).ok()) {
            request = request.header(header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|err| RegistryError::Http(format!("{url}: {err}")))?;
        self.http
            .request(request)
            .await
            .map_err(|err| RegistryError::Http(format!("{url}: {}", error_chain(&err))))
    }

    /// The Authorization header answering `challenge`.
    async fn authorize(
        &self,
        challenge: &str,
        image: &Reference,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let basic = credentials.map(|c| {
            let pair = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let Some(params) = challenge
            .strip_prefix("Bearer ")
            .or_else(|| challenge.strip_prefix("bearer "))
        else {
            return basic.ok_or_else(|| RegistryError::Refused {
                status: 401,
                message: "authentication required: the pod has no credentials for this registry"
                    .to_owned(),
            });
        };
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| RegistryError::Http("bearer challenge without a realm".to_owned()))?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", image.repository));
        let mut url = format!("{realm}?scope={}", query_escape(&scope));
        if let Some(service) = params.get("service") {
            url.push_str(&format!("&service={}", query_escape(service)));
        }
        let response = self.send(&url, None, basic.as_deref()).await?;
        let status = response.status();
        let body = read_limited(response.into_body(), 1 << 20, &url).await?;
        if !status.is_success() {
            return Err(RegistryError::Refused {
                status: status.as_u16(),
                message: format!("token request: {}", registry_message(status, &body)),
            });
        }
        let token: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|err| RegistryError::Http(format!("token response: {err}")))?;
        token
            .get("token")
            .or_else(|| token.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| RegistryError::Http("token response has no token".to_owned()))
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

async fn read_limited(
    body: hyper::body::Incoming,
    max: usize,
    url: &str,
) -> Result<Bytes, RegistryError> {
    let limited = http_body_util::Limited::new(body, max);
    limited
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|err| RegistryError::Http(format!("{url}: reading the response: {err}")))
}

/// The registry's own words for an error response.
fn registry_message(status: StatusCode, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let errors: Vec<String> = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_default();
                    let message = e
                        .get("message")
                        .and_then(|m| m.as_str())
                        .unwrap_or_default();
                    format!("{code}: {message}")
                })
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() {
        status.to_string()
    } else {
        errors.join("; ")
    }
}

fn challenge_params(text: &str) -> HashMap<String, String> {
    let mut params = HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, tail)) => (value.to_owned(), tail),
                None => (quoted.to_owned(), ""),
            },
            None => match after.split_once(',') {
                Some((value, tail)) => (value.trim().to_owned(), tail),
                None => (after.trim().to_owned(), ""),
            },
        };
        params.insert(key, value);
        rest = tail.trim_start_matches(',').trim();
    }
    params
}

fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn absolute(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_errors_are_read_as_registries_write_them() {
        let params = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:app:pull""#,
        );
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:app:pull");

        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(
            registry_message(StatusCode::NOT_FOUND, body),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(
            registry_message(StatusCode::BAD_GATEWAY, b"<html>"),
            "502 Bad Gateway"
        );
        assert_eq!(
            absolute("http://127.0.0.1:5000/v2/app/blobs/x", "/storage/x?sig=1"),
            "http://127.0.0.1:5000/storage/x?sig=1"
        );
    }

    #[tokio::test]
    async fn loopback_registries_are_plain_http_others_https() {
        let client = RegistryClient::new(vec!["registry.lan:5000".to_owned()]).unwrap();
        assert_eq!(client.base("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(client.base("localhost:5000"), "http://localhost:5000");
        assert_eq!(client.base("registry.lan:5000"), "http://registry.lan:5000");
        assert_eq!(client.base("ghcr.io"), "https://ghcr.io");
    }
}
