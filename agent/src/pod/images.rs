//! Images for containers under their pull policy: what containerd holds
//! is used unless the policy says to pull; pulls go to the image's
//! registry with the pod's imagePullSecrets; failures become the waiting
//! reasons the kubelet reports.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::runtime::{
    ContainerRuntime, Credentials, ImportedImage, Reference, RegistryAuth, RegistryClient,
};

/// A container's image could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// ErrImagePull, ErrImageNeverPull or InvalidImageName.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub struct Images {
    containerd: Arc<dyn ContainerRuntime>,
    registry: RegistryClient,
}

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// A ready image and the id a container status shows for it.
#[derive(Debug, Clone)]
pub struct ReadyImage {
    pub image: ImportedImage,
    pub image_id: String,
}

impl Images {
    pub fn new(containerd: Arc<dyn ContainerRuntime>, registry: RegistryClient) -> Self {
        Self {
            containerd,
            registry,
        }
    }

    /// The image `name` under `policy` (Always, IfNotPresent, Never).
    pub async fn ensure(
        &self,
        name: &str,
        policy: &str,
        auth: &RegistryAuth,
    ) -> Result<ReadyImage, ImageError> {
        let reference = Reference::parse(name).map_err(|err| ImageError {
            reason: "InvalidImageName",
            message: format!("Failed to apply default image tag \"{name}\": {err}"),
        })?;
        let full = reference.to_string();
        let local = if policy == "Always" {
            None
        } else {
            self.containerd
                .local_image(&full)
                .await
                .map_err(|err| ImageError {
                    reason: "ErrImagePull",
                    message: err.to_string(),
                })?
        };
        let image = match local {
            Some(image) => image,
            None if policy == "Never" => {
                return Err(ImageError {
                    reason: "ErrImageNeverPull",
                    message: format!(
                        "Container image \"{name}\" is not present with pull policy of Never"
                    ),
                });
            }
            None => self
                .containerd
                .pull(&self.registry, &reference, auth)
                .await
                .map_err(|err| ImageError {
                    reason: "ErrImagePull",
                    message: err.to_string(),
                })?,
        };
        Ok(ReadyImage {
            image_id: reference.with_digest(&image.digest),
            image,
        })
    }
}

/// Registry credentials from `kubernetes.io/dockerconfigjson` (or legacy
/// `.dockercfg`) secrets.
pub fn credentials_from_secrets(secrets: &[Secret]) -> RegistryAuth {
    let mut auth = RegistryAuth::new();
    for secret in secrets {
        let data = secret.data.clone().unwrap_or_default();
        let config = data
            .get(".dockerconfigjson")
            .or_else(|| data.get(".dockercfg"))
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes.0).ok());
        let Some(config) = config else { continue };
        let entries = config.get("auths").unwrap_or(&config);
        let Some(entries) = entries.as_object() else {
            continue;
        };
        for (server, entry) in entries {
            let host = registry_host(server);
            if let Some(credentials) = entry_credentials(entry) {
                auth.entry(host).or_insert(credentials);
            }
        }
    }
    auth
}

/// "https://index.docker.io/v1/" and friends name Docker Hub, whose
/// images say docker.io.
fn registry_host(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

fn entry_credentials(entry: &serde_json::Value) -> Option<Credentials> {
    let field = |key: &str| {
        entry
            .get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(field("auth")?)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use serde_json::json;

    use super::*;

    #[test]
    fn pull_secrets_become_credentials_by_registry() {
        let config = json!({ "auths": {
            "127.0.0.1:5000": { "auth": "YWxpY2U6czNjcmV0" },
            "https://index.docker.io/v1/": { "username": "bob", "password": "pw" },
        } });
        let secret = Secret {
            data: Some(
                [(
                    ".dockerconfigjson".to_owned(),
                    ByteString(config.to_string().into_bytes()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let auth = credentials_from_secrets(&[secret]);
        assert_eq!(
            auth["127.0.0.1:5000"],
            Credentials {
                username: "alice".to_owned(),
                password: "s3cret".to_owned()
            }
        );
        assert_eq!(auth["docker.io"].username, "bob");
    }
}
