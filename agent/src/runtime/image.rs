//! Image import: an image's blobs into containerd's content store, an image
//! record pointing at its manifest, and its layers unpacked into a chain of
//! overlayfs snapshots a container can start from.
//!
//! Blobs carry the `containerd.io/gc.ref.*` labels containerd's own pull
//! writes, so its garbage collector keeps what an image needs and `ctr` sees
//! the image as unpacked.

use std::collections::HashMap;

use containerd_client::{
    services::v1::{
        ApplyRequest, CreateImageRequest, Image, Info, InfoRequest, UpdateImageRequest,
        UpdateRequest, WriteAction, WriteContentRequest,
        snapshots::{
            CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
            StatSnapshotRequest,
        },
    },
    tonic::{Code, Status},
    types::Descriptor,
};
use oci_spec::image::ImageConfiguration;
use prost_types::FieldMask;
use sha2::{Digest as _, Sha256};

use super::{
    Containerd, RuntimeError, SNAPSHOTTER,
    containerd::Lease,
    oci_layout::{OciArchive, ResolvedImage},
};

/// Content is streamed to containerd in pieces of this size.
const CHUNK: usize = 1 << 20;

/// An image ready to run: its name, its configuration (entrypoint, env, ...)
/// and the snapshot its containers start from.
#[derive(Debug, Clone)]
pub struct ImportedImage {
    pub name: String,
    /// Digest of the manifest, the image id a container status reports.
    pub digest: String,
    pub config: ImageConfiguration,
    /// Name of the top snapshot of the unpacked layers.
    pub chain_id: String,
}

/// Where an image's blobs come from: an archive, a registry.
pub(crate) trait BlobSource {
    async fn fetch(&self, digest: &str) -> Result<bytes::Bytes, RuntimeError>;
}

impl BlobSource for OciArchive {
    async fn fetch(&self, digest: &str) -> Result<bytes::Bytes, RuntimeError> {
        Ok(bytes::Bytes::copy_from_slice(self.blob(digest)?))
    }
}

impl Containerd {
    /// Imports the image `name` from `archive` (its only image when the
    /// archive does not name it), replacing any image of that name.
    pub async fn import_image(
        &self,
        archive: &OciArchive,
        name: &str,
    ) -> Result<ImportedImage, RuntimeError> {
        let image = match archive.image(Some(name)) {
            Err(super::LayoutError::NoSuchImage(_)) => archive.image(None)?,
            other => other?,
        };
        let chain_id = chain_id(&image, name)?;

        self.store_image(archive, &image, name, &chain_id).await?;

        Ok(ImportedImage {
            name: name.to_owned(),
            digest: image.target.digest().to_string(),
            config: image.config,
            chain_id,
        })
    }

    /// Puts `image`'s blobs from `source` into the content store with the
    /// labels containerd's GC follows, unpacks it and names it `name`.
    pub(crate) async fn store_image(
        &self,
        source: &impl BlobSource,
        image: &ResolvedImage,
        name: &str,
        chain_id: &str,
    ) -> Result<(), RuntimeError> {
        let lease = self.lease("image").await?;
        let result = self
            .store_under(&lease, source, image, name, chain_id)
            .await;
        self.end_lease(lease).await?;
        result
    }

    async fn store_under(
        &self,
        lease: &Lease,
        archive: &impl BlobSource,
        image: &ResolvedImage,
        name: &str,
        chain_id: &str,
    ) -> Result<(), RuntimeError> {
        let manifest = &image.manifest;
        let diff_ids = image.config.rootfs().diff_ids();
        for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let labels = [("containerd.io/uncompressed".to_owned(), diff_id.clone())];
            self.put_blob(lease, archive, layer.digest().as_ref(), &labels)
                .await?;
        }
        let config = manifest.config().digest().to_string();
        let snapshot_label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}");
        self.put_blob(
            lease,
            archive,
            &config,
            &[(snapshot_label, chain_id.to_owned())],
        )
        .await?;

        let mut refs = vec![("containerd.io/gc.ref.content.config".to_owned(), config)];
        for (i, layer) in manifest.layers().iter().enumerate() {
            refs.push((
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest().to_string(),
            ));
        }
        self.put_blob(lease, archive, image.target.digest().as_ref(), &refs)
            .await?;
        // Indexes walked to reach the manifest: each refers to its child.
        let mut child = &image.target;
        for index in image.indexes.iter().rev() {
            let refs = [(
                "containerd.io/gc.ref.content.m.0".to_owned(),
                child.digest().to_string(),
            )];
            self.put_blob(lease, archive, index.digest().as_ref(), &refs)
                .await?;
            child = index;
        }

        self.unpack(lease, image).await?;
        let top = image.indexes.first().unwrap_or(&image.target);
        self.put_image_record(name, top).await
    }

    /// Writes one blob of `source` into the content store, or labels it if
    /// present.
    async fn put_blob(
        &self,
        lease: &Lease,
        source: &impl BlobSource,
        digest: &str,
        labels: &[(String, String)],
    ) -> Result<(), RuntimeError> {
        let labels: HashMap<String, String> = labels.iter().cloned().collect();
        if self.content_exists(lease, digest).await? {
            return self.label_blob(lease, digest, labels).await;
        }
        let data = source.fetch(digest).await?;
        self.write_blob(lease, digest, &data, labels).await
    }

    /// Whether the content store holds blob `digest`.
    pub(crate) async fn content_exists(
        &self,
        lease: &Lease,
        digest: &str,
    ) -> Result<bool, RuntimeError> {
        let info = self
            .client()
            .content()
            .info(self.request(
                InfoRequest {
                    digest: digest.to_owned(),
                },
                Some(lease),
            ))
            .await;
        match info {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(RuntimeError::call("content.info")(status)),
        }
    }

    /// Writes `data` as blob `digest` with `labels`; containerd checks the
    /// digest.
    pub(crate) async fn write_blob(
        &self,
        lease: &Lease,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let reference = format!("capstan-write-{digest}-{}", std::process::id());
        let total = data.len() as i64;
        let mut requests: Vec<WriteContentRequest> = data
            .chunks(CHUNK)
            .scan(0_i64, |offset, chunk| {
                let request = WriteContentRequest {
                    action: WriteAction::Write.into(),
                    r#ref: reference.clone(),
                    total,
                    expected: digest.to_owned(),
                    offset: *offset,
                    data: chunk.to_vec(),
                    labels: HashMap::new(),
                };
                *offset += chunk.len() as i64;
                Some(request)
            })
            .collect();
        requests.push(WriteContentRequest {
            action: WriteAction::Commit.into(),
            r#ref: reference,
            total,
            expected: digest.to_owned(),
            offset: total,
            data: Vec::new(),
            labels,
        });

        let stream = tokio_stream::iter(requests);
        let result: Result<(), Status> = async {
            let mut responses = self
                .client()
                .content()
                .write(self.request(stream, Some(lease)))
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok(())
        }
        .await;
        match result {
            Err(status) if status.code() != Code::AlreadyExists => {
                Err(RuntimeError::call("content.write")(status))
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn label_blob(
        &self,
        lease: &Lease,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let paths = labels.keys().map(|key| format!("labels.{key}")).collect();
        let request = UpdateRequest {
            info: Some(Info {
                digest: digest.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        };
        self.client()
            .content()
            .update(self.request(request, Some(lease)))
            .await
            .map_err(RuntimeError::call("content.update"))?;
        Ok(())
    }

    /// Applies each layer on top of the previous one, skipping layers whose
    /// snapshot exists already (shared with another image).
    pub(crate) async fn unpack(
        &self,
        lease: &Lease,
        image: &ResolvedImage,
    ) -> Result<(), RuntimeError> {
        let mut parent = String::new();
        for (layer, diff_id) in image
            .manifest
            .layers()
            .iter()
            .zip(image.config.rootfs().diff_ids())
        {
            let chain_id = next_chain_id(&parent, diff_id);
            if !self.snapshot_exists(&chain_id).await? {
                self.apply_layer(lease, &parent, &chain_id, descriptor(layer), diff_id)
                    .await?;
            }
            parent = chain_id;
        }
        Ok(())
    }

    async fn apply_layer(
        &self,
        lease: &Lease,
        parent: &str,
        chain_id: &str,
        layer: Descriptor,
        diff_id: &str,
    ) -> Result<(), RuntimeError> {
        let key = format!("extract-{}-{chain_id}", std::process::id());
        let snapshots = self.client().snapshots();
        let prepare = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.clone(),
            parent: parent.to_owned(),
            labels: HashMap::new(),
        };
        let mounts = snapshots
            .clone()
            .prepare(self.request(prepare, Some(lease)))
            .await
            .map_err(RuntimeError::call("snapshots.prepare"))?
            .into_inner()
            .mounts;

        let layer_digest = layer.digest.clone();
        let applied = self
            .client()
            .diff()
            .apply(self.request(
                ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: true,
                },
                Some(lease),
            ))
            .await
            .map_err(RuntimeError::call("diff.apply"));
        let applied = match applied {
            Ok(reply) => reply.into_inner().applied.map(|d| d.digest),
            Err(err) => {
                self.remove_snapshot(&key).await?;
                return Err(err);
            }
        };
        if applied.as_deref() != Some(diff_id) {
            self.remove_snapshot(&key).await?;
            return Err(RuntimeError::Image {
                image: layer_digest,
                message: format!("layer unpacked to {applied:?}, config says {diff_id}"),
            });
        }
        let commit = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            name: chain_id.to_owned(),
            key,
            labels: HashMap::new(),
        };
        snapshots
            .clone()
            .commit(self.request(commit, Some(lease)))
            .await
            .map_err(RuntimeError::call("snapshots.commit"))?;
        Ok(())
    }

    pub(crate) async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let request = StatSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.to_owned(),
        };
        match self
            .client()
            .snapshots()
            .stat(self.request(request, None))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(RuntimeError::call("snapshots.stat")(status)),
        }
    }

    /// Removes snapshot `key`; one that does not exist is already removed.
    pub(crate) async fn remove_snapshot(&self, key: &str) -> Result<(), RuntimeError> {
        let request = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.to_owned(),
            key: key.to_owned(),
        };
        match self
            .client()
            .snapshots()
            .remove(self.request(request, None))
            .await
        {
            Err(status) if status.code() != Code::NotFound => {
                Err(RuntimeError::call("snapshots.remove")(status))
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn put_image_record(
        &self,
        name: &str,
        target: &oci_spec::image::Descriptor,
    ) -> Result<(), RuntimeError> {
        let image = Image {
            name: name.to_owned(),
            target: Some(descriptor(target)),
            ..Default::default()
        };
        let images = self.client().images();
        let created = images
            .clone()
            .create(self.request(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                None,
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let update = UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(FieldMask {
                        paths: vec!["target".to_owned()],
                    }),
                    source_date_epoch: None,
                };
                images
                    .clone()
                    .update(self.request(update, None))
                    .await
                    .map_err(RuntimeError::call("images.update"))?;
                Ok(())
            }
            Err(status) => Err(RuntimeError::call("images.create")(status)),
        }
    }
}

pub(crate) fn descriptor(d: &oci_spec::image::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: d.annotations().clone().unwrap_or_default(),
    }
}

/// The snapshot name of the unpacked layers: the OCI chain id of the
/// image's diff ids.
pub(crate) fn chain_id(image: &ResolvedImage, name: &str) -> Result<String, RuntimeError> {
    let diff_ids = image.config.rootfs().diff_ids();
    if diff_ids.is_empty() || diff_ids.len() != image.manifest.layers().len() {
        return Err(RuntimeError::Image {
            image: name.to_owned(),
            message: format!(
                "{} layers but {} diff ids in its config",
                image.manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    Ok(diff_ids.iter().fold(String::new(), |parent, diff_id| {
        next_chain_id(&parent, diff_id)
    }))
}

/// ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
fn next_chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_owned();
    }
    let digest = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
    format!("sha256:{}", hex::encode(digest))
}
