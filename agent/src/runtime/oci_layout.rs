//! OCI image layout archives: a tar holding `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, as `cargo xtask image`, `skopeo copy oci-archive:`
//! and `docker save` (since 25) write them.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

/// Annotation containerd and `xtask image` give a manifest: the full name.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading image archive {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image archive has no {0}")]
    Missing(String),
    #[error("image archive: blob {name} has digest sha256:{actual}")]
    DigestMismatch { name: String, actual: String },
    #[error("image archive: {what} is not valid JSON: {message}")]
    Json { what: String, message: String },
    #[error("image archive holds {0} images; name the one to import")]
    Ambiguous(usize),
    #[error("image archive has no image named {0}")]
    NoSuchImage(String),
    #[error("image archive has no manifest for {os}/{arch}")]
    NoPlatform {
        os: &'static str,
        arch: &'static str,
    },
}

/// A whole archive in memory, every blob checked against its digest.
#[derive(Debug)]
pub struct OciArchive {
    index: ImageIndex,
    blobs: HashMap<String, Vec<u8>>,
}

/// One image, wherever it came from (an archive, a registry, containerd's
/// content store): what an image record points to, and what it takes to
/// unpack and run it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The manifest descriptor (after platform selection).
    pub target: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    /// Index descriptors walked to reach `target`, outermost first.
    pub indexes: Vec<Descriptor>,
}

impl OciArchive {
    pub fn open(path: &Path) -> Result<Self, LayoutError> {
        let file = File::open(path).map_err(|source| LayoutError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::read(file).map_err(|err| match err {
            LayoutError::Read { source, .. } => LayoutError::Read {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    pub fn read(reader: impl Read) -> Result<Self, LayoutError> {
        let read_err = |source| LayoutError::Read {
            path: PathBuf::new(),
            source,
        };
        let mut archive = tar::Archive::new(reader);
        let mut index = None;
        let mut blobs = HashMap::new();
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let name = entry
                .path()
                .map_err(read_err)?
                .to_string_lossy()
                .into_owned();
            let name = name.trim_start_matches("./").to_owned();
            if name == "index.json" {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(read_err)?;
                index = Some(parse::<ImageIndex>("index.json", &data)?);
            } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(read_err)?;
                let actual = hex::encode(Sha256::digest(&data));
                if actual != hex {
                    return Err(LayoutError::DigestMismatch { name, actual });
                }
                blobs.insert(format!("sha256:{hex}"), data);
            }
        }
        let index = index.ok_or_else(|| LayoutError::Missing("index.json".to_owned()))?;
        Ok(Self { index, blobs })
    }

    /// The bytes of blob `digest` ("sha256:<hex>").
    pub fn blob(&self, digest: &str) -> Result<&[u8], LayoutError> {
        self.blobs
            .get(digest)
            .map(Vec::as_slice)
            .ok_or_else(|| LayoutError::Missing(format!("blob {digest}")))
    }

    /// The image called `name`, or the only image when `name` is None.
    pub fn image(&self, name: Option<&str>) -> Result<ResolvedImage, LayoutError> {
        let manifests = self.index.manifests();
        let chosen = match name {
            Some(name) => manifests
                .iter()
                .find(|d| annotation(d, IMAGE_NAME_ANNOTATION) == Some(name))
                .ok_or_else(|| LayoutError::NoSuchImage(name.to_owned()))?,
            None if manifests.len() == 1 => &manifests[0],
            None => return Err(LayoutError::Ambiguous(manifests.len())),
        };
        self.resolve(chosen.clone(), Vec::new())
    }

    fn resolve(
        &self,
        descriptor: Descriptor,
        mut indexes: Vec<Descriptor>,
    ) -> Result<ResolvedImage, LayoutError> {
        let digest = descriptor.digest().to_string();
        let data = self.blob(&digest)?;
        if is_index(descriptor.media_type()) {
            let index = parse::<ImageIndex>(&digest, data)?;
            let manifest = host_manifest(&index)?;
            indexes.push(descriptor);
            return self.resolve(manifest, indexes);
        }
        let manifest = parse::<ImageManifest>(&digest, data)?;
        let config_digest = manifest.config().digest().to_string();
        let config = parse::<ImageConfiguration>(&config_digest, self.blob(&config_digest)?)?;
        for layer in manifest.layers() {
            self.blob(layer.digest().as_ref())?;
        }
        Ok(ResolvedImage {
            target: descriptor,
            manifest,
            config,
            indexes,
        })
    }
}

/// Whether a descriptor of this type points to an index (OCI's, or
/// Docker's manifest list) rather than to a manifest.
pub(crate) fn is_index(media_type: &MediaType) -> bool {
    match media_type {
        MediaType::ImageIndex => true,
        MediaType::Other(other) => {
            other == "application/vnd.docker.distribution.manifest.list.v2+json"
        }
        _ => false,
    }
}

/// The manifest of `index` for the platform this agent runs on.
pub(crate) fn host_manifest(index: &ImageIndex) -> Result<Descriptor, LayoutError> {
    let (os, arch) = host_platform();
    index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_none_or(|p| p.os().to_string() == os && p.architecture().to_string() == arch)
        })
        .cloned()
        .ok_or(LayoutError::NoPlatform { os, arch })
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    data: &[u8],
) -> Result<T, LayoutError> {
    serde_json::from_slice(data).map_err(|err| LayoutError::Json {
        what: what.to_owned(),
        message: err.to_string(),
    })
}

fn annotation<'a>(descriptor: &'a Descriptor, key: &str) -> Option<&'a str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The OCI names of the platform this agent runs on.
fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with the given files, in order.
    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn one_image_archive() -> Vec<u8> {
        let layer = b"not really a tar.gz".as_slice();
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},"config":{"Cmd":["/bin/sh"]}}"#.as_slice();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{}","size":{}}}]}}"#,
            sha(config),
            config.len(),
            sha(layer),
            layer.len()
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":{},"annotations":{{"io.containerd.image.name":"capstan.invalid/t:1"}}}}]}}"#,
            sha(manifest.as_bytes()),
            manifest.len()
        );
        tar(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            (&format!("blobs/sha256/{}", sha(layer)), layer),
            (&format!("blobs/sha256/{}", sha(config)), config),
            (
                &format!("blobs/sha256/{}", sha(manifest.as_bytes())),
                manifest.as_bytes(),
            ),
            ("index.json", index.as_bytes()),
        ])
    }

    #[test]
    fn finds_an_image_by_name_or_alone() {
        let archive = OciArchive::read(one_image_archive().as_slice()).unwrap();
        let by_name = archive.image(Some("capstan.invalid/t:1")).unwrap();
        let alone = archive.image(None).unwrap();
        assert_eq!(by_name.target, alone.target);
        assert_eq!(by_name.manifest.layers().len(), 1);
        let cmd = by_name.config.config().as_ref().unwrap().cmd().clone();
        assert_eq!(cmd, Some(vec!["/bin/sh".to_owned()]));
        assert!(matches!(
            archive.image(Some("other")),
            Err(LayoutError::NoSuchImage(_))
        ));
    }

    #[test]
    fn a_blob_that_does_not_match_its_digest_is_refused() {
        let bad = tar(&[(
            "blobs/sha256/0000000000000000000000000000000000000000000000000000000000000000",
            b"x",
        )]);
        let err = OciArchive::read(bad.as_slice()).unwrap_err();
        assert!(matches!(err, LayoutError::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn a_missing_index_is_named() {
        let err = OciArchive::read(tar(&[("oci-layout", b"{}")]).as_slice()).unwrap_err();
        assert_eq!(err.to_string(), "image archive has no index.json");
    }
}
