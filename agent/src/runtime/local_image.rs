//! Images containerd already holds (imported with `ctr images import`, by
//! `cargo xtask`, or pulled earlier): found by name, read from the content
//! store, and unpacked if their snapshots were collected.

use containerd_client::{
    services::v1::{GetImageRequest, ReadContentRequest},
    tonic::Code,
};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{
    Containerd, ImportedImage, RuntimeError,
    oci_layout::{ResolvedImage, host_manifest, is_index, parse},
};

/// How deep indexes may nest before an image is refused as malformed.
const MAX_INDEX_DEPTH: usize = 4;

impl Containerd {
    /// The image called `name`, ready to run, or None if containerd has no
    /// image of that name.
    pub async fn local_image(&self, name: &str) -> Result<Option<ImportedImage>, RuntimeError> {
        let reply = self
            .client()
            .images()
            .get(self.request(
                GetImageRequest {
                    name: name.to_owned(),
                },
                None,
            ))
            .await;
        let target = match reply {
            Ok(reply) => reply.into_inner().image.and_then(|i| i.target),
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(RuntimeError::call("images.get")(status)),
        };
        let Some(target) = target else {
            return Ok(None);
        };
        let descriptor: Descriptor = serde_json::from_value(serde_json::json!({
            "mediaType": target.media_type,
            "digest": target.digest,
            "size": target.size,
        }))
        .map_err(|err| RuntimeError::Image {
            image: name.to_owned(),
            message: format!("image record has an unusable target: {err}"),
        })?;
        let resolved = self.resolve_stored(name, descriptor).await?;
        Ok(Some(self.ensure_unpacked(name, resolved).await?))
    }

    async fn resolve_stored(
        &self,
        name: &str,
        mut descriptor: Descriptor,
    ) -> Result<ResolvedImage, RuntimeError> {
        let mut indexes = Vec::new();
        while is_index(descriptor.media_type()) {
            if indexes.len() == MAX_INDEX_DEPTH {
                return Err(RuntimeError::Image {
                    image: name.to_owned(),
                    message: "indexes nest too deep".to_owned(),
                });
            }
            let digest = descriptor.digest().to_string();
            let index: ImageIndex = parse(&digest, &self.read_content(&digest).await?)?;
            let manifest = host_manifest(&index)?;
            indexes.push(descriptor);
            descriptor = manifest;
        }
        let digest = descriptor.digest().to_string();
        let manifest: ImageManifest = parse(&digest, &self.read_content(&digest).await?)?;
        let config_digest = manifest.config().digest().to_string();
        let config: ImageConfiguration =
            parse(&config_digest, &self.read_content(&config_digest).await?)?;
        Ok(ResolvedImage {
            target: descriptor,
            manifest,
            config,
            indexes,
        })
    }

    /// The image as a container starts from it, unpacking its layers first
    /// if their snapshots are gone.
    pub(crate) async fn ensure_unpacked(
        &self,
        name: &str,
        image: ResolvedImage,
    ) -> Result<ImportedImage, RuntimeError> {
        let chain_id = super::image::chain_id(&image, name)?;
        if !self.snapshot_exists(&chain_id).await? {
            let lease = self.lease("unpack").await?;
            let unpacked = self.unpack(&lease, &image).await;
            self.end_lease(lease).await?;
            unpacked?;
        }
        Ok(ImportedImage {
            name: name.to_owned(),
            digest: image.target.digest().to_string(),
            config: image.config,
            chain_id,
        })
    }

    /// The whole blob `digest` from the content store.
    pub(crate) async fn read_content(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let mut stream = self
            .client()
            .content()
            .read(self.request(
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(RuntimeError::call("content.read"))?
            .into_inner();
        let mut data = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(RuntimeError::call("content.read"))?
        {
            data.extend_from_slice(&chunk.data);
        }
        Ok(data)
    }
}
