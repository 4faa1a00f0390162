//! Pulling an image from a registry on the client side, as `ctr pull`
//! does (containerd 1.6 has no transfer service): manifest, config and
//! layers fetched here, stored with containerd's GC labels, unpacked.

use std::collections::HashMap;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{
    Containerd, ImportedImage, Reference, RuntimeError,
    image::{BlobSource, chain_id},
    oci_layout::{ResolvedImage, host_manifest, is_index, parse},
    registry::{RegistryAuth, RegistryClient, RegistryError},
};

/// Layers larger than this are refused.
const MAX_BLOB: usize = 4 << 30;
/// Image configurations larger than this are refused.
const MAX_CONFIG: usize = 16 << 20;

/// Why a pull failed, in words for a container's waiting message.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("failed to pull image \"{image}\": {source}")]
    Registry {
        image: String,
        #[source]
        source: RegistryError,
    },
    #[error("failed to pull image \"{image}\": {source}")]
    Store {
        image: String,
        #[source]
        source: RuntimeError,
    },
}

/// A registry repository as a source of blobs, with the manifests already
/// fetched served from memory.
struct RegistrySource<'a> {
    client: &'a RegistryClient,
    image: &'a Reference,
    auth: &'a RegistryAuth,
    fetched: HashMap<String, Bytes>,
}

impl BlobSource for RegistrySource<'_> {
    async fn fetch(&self, digest: &str) -> Result<Bytes, RuntimeError> {
        if let Some(data) = self.fetched.get(digest) {
            return Ok(data.clone());
        }
        self.client
            .blob(self.image, digest, self.auth, MAX_BLOB)
            .await
            .map_err(|err| RuntimeError::Image {
                image: self.image.to_string(),
                message: err.to_string(),
            })
    }
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Result<Descriptor, RuntimeError> {
    serde_json::from_value(serde_json::json!({
        "mediaType": media_type, "digest": digest, "size": size,
    }))
    .map_err(|err| RuntimeError::Image {
        image: digest.to_owned(),
        message: err.to_string(),
    })
}

impl Containerd {
    /// Pulls `image` into containerd under its normalised name.
    pub async fn pull(
        &self,
        client: &RegistryClient,
        image: &Reference,
        auth: &RegistryAuth,
    ) -> Result<ImportedImage, PullError> {
        let name = image.to_string();
        let registry = |source| PullError::Registry {
            image: name.clone(),
            source,
        };
        let store = |source| PullError::Store {
            image: name.clone(),
            source,
        };
        let top = client
            .manifest(image, image.manifest_reference(), auth)
            .await
            .map_err(registry)?;
        let mut fetched = HashMap::from([(top.digest.clone(), top.body.clone())]);
        let top_descriptor =
            descriptor(&top.media_type, &top.digest, top.body.len()).map_err(store)?;
        let mut indexes = Vec::new();
        let mut manifest = top.clone();
        let mut target = top_descriptor.clone();
        if is_index(target.media_type()) {
            let index: ImageIndex =
                parse(&top.digest, &top.body).map_err(|err| store(RuntimeError::Layout(err)))?;
            let chosen = host_manifest(&index).map_err(|err| store(RuntimeError::Layout(err)))?;
            manifest = client
                .manifest(image, chosen.digest().as_ref(), auth)
                .await
                .map_err(registry)?;
            fetched.insert(manifest.digest.clone(), manifest.body.clone());
            indexes.push(top_descriptor);
            target = chosen;
        }
        let parsed: ImageManifest = parse(&manifest.digest, &manifest.body)
            .map_err(|err| store(RuntimeError::Layout(err)))?;
        let config_digest = parsed.config().digest().to_string();
        let config_bytes = client
            .blob(image, &config_digest, auth, MAX_CONFIG)
            .await
            .map_err(registry)?;
        let config: ImageConfiguration =
            parse(&config_digest, &config_bytes).map_err(|err| store(RuntimeError::Layout(err)))?;
        fetched.insert(config_digest, config_bytes);

        let resolved = ResolvedImage {
            target,
            manifest: parsed,
            config,
            indexes,
        };
        let chain_id = chain_id(&resolved, &name).map_err(store)?;
        let source = RegistrySource {
            client,
            image,
            auth,
            fetched,
        };
        self.store_image(&source, &resolved, &name, &chain_id)
            .await
            .map_err(store)?;
        Ok(ImportedImage {
            name,
            digest: resolved
                .indexes
                .first()
                .unwrap_or(&resolved.target)
                .digest()
                .to_string(),
            config: resolved.config,
            chain_id,
        })
    }
}
