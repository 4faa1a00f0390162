//! `cargo xtask image`: the test images, built from local files only.
//!
//! Each image is an OCI image layout tarball (`oci-layout`, `index.json`,
//! `blobs/sha256/...`), importable by the agent, `ctr images import` and
//! skopeo. Layers are written deterministically (fixed mtimes and owners,
//! sorted entries) so the same inputs give the same digests.
//!
//! - busybox: busybox-static with a link per applet, /etc/passwd and group.
//! - testapp: the busybox layer plus /testapp (capstan-testapp, musl static).
//! - ghost-user: busybox running as a user its /etc/passwd does not have.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use flate2::{Compression, write::GzEncoder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{cmd, paths};

pub const BUSYBOX_IMAGE: &str = "capstan.invalid/busybox:v1";
pub const TESTAPP_IMAGE: &str = "capstan.invalid/testapp:v1";
/// busybox whose configuration names a user its /etc/passwd lacks: a spec
/// that passes validation but cannot run.
pub const GHOST_USER_IMAGE: &str = "capstan.invalid/ghost-user:v1";

const BUSYBOX: &str = "/bin/busybox";
/// Layer entries' modification time: fixed, for reproducible digests.
const MTIME: u64 = 1_700_000_000;
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the test application and the images; returns the tarballs.
pub fn build() -> anyhow::Result<Vec<PathBuf>> {
    let mut cargo = cmd::cargo(None);
    cargo
        .current_dir(paths::workspace())
        .args(["build", "--release", "-p", "capstan-testapp", "--target"])
        .arg(paths::TESTAPP_TARGET);
    cmd::run(&mut cargo).context("building the test application")?;

    let busybox = busybox_layer()?;
    let testapp = file_layer(&[("testapp", &paths::testapp_binary(), 0o755)])?;
    let dir = paths::images_dir();
    fs::create_dir_all(&dir)?;

    let written = vec![
        write_image(
            &dir.join("busybox.tar"),
            BUSYBOX_IMAGE,
            &[&busybox],
            json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }),
        )?,
        write_image(
            &dir.join("testapp.tar"),
            TESTAPP_IMAGE,
            &[&busybox, &testapp],
            json!({
                "Env": [PATH_ENV],
                "Entrypoint": ["/testapp"],
                "Cmd": ["serve"],
                "ExposedPorts": { "8080/tcp": {}, "8081/tcp": {}, "8082/udp": {} },
            }),
        )?,
        write_image(
            &dir.join("ghost-user.tar"),
            GHOST_USER_IMAGE,
            &[&busybox],
            json!({ "Env": [PATH_ENV], "Cmd": ["sh"], "User": "ghost" }),
        )?,
    ];
    for tarball in &written {
        println!("image: {}", tarball.display());
    }
    Ok(written)
}

/// A gzipped layer and the digests the manifest and config need.
#[derive(Debug)]
struct Layer {
    gzip: Vec<u8>,
    diff_id: String,
}

impl Layer {
    fn from_tar(tar: Vec<u8>) -> anyhow::Result<Self> {
        let diff_id = digest(&tar);
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&tar)?;
        Ok(Self {
            gzip: gz.finish()?,
            diff_id,
        })
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

type TarBuilder = tar::Builder<Vec<u8>>;

fn add_file(tar: &mut TarBuilder, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut header, name, data)
}

fn add_dir(tar: &mut TarBuilder, name: &str, mode: u32) -> std::io::Result<()> {
    tar.append_data(
        &mut header(tar::EntryType::Directory, mode, 0),
        name,
        std::io::empty(),
    )
}

fn busybox_layer() -> anyhow::Result<Layer> {
    let binary = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian package busybox-static)"))?;
    let applets = cmd::stdout(Command::new(BUSYBOX).arg("--list-full"))?;
    let mut applets: Vec<&str> = applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "bin/busybox")
        .collect();
    applets.sort_unstable();

    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: Vec<&str> = vec![
        "bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var",
    ];
    dirs.sort_unstable();
    for dir in dirs {
        add_dir(&mut tar, dir, 0o755)?;
    }
    add_dir(&mut tar, "tmp", 0o1777)?;
    let passwd =
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = b"root:x:0:\nnogroup:x:65534:\n";
    add_file(&mut tar, "etc/passwd", passwd, 0o644)?;
    add_file(&mut tar, "etc/group", group, 0o644)?;
    add_file(&mut tar, "bin/busybox", &binary, 0o755)?;
    for applet in applets {
        let mut link = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut link, applet, "/bin/busybox")?;
    }
    Layer::from_tar(tar.into_inner()?)
}

/// A layer holding the given files at the image root.
fn file_layer(files: &[(&str, &Path, u32)]) -> anyhow::Result<Layer> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, source, mode) in files {
        let data = fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        add_file(&mut tar, name, &data, *mode)?;
    }
    Layer::from_tar(tar.into_inner()?)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest(data), "size": data.len() })
}

/// Writes an OCI layout tarball holding one image called `name`.
fn write_image(
    path: &Path,
    name: &str,
    layers: &[&Layer],
    config: Value,
) -> anyhow::Result<PathBuf> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| json!({ "created_by": "cargo xtask image" })).collect::<Vec<_>>(),
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers
            .iter()
            .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &l.gzip))
            .collect::<Vec<_>>(),
    }))?;
    let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let mut manifest_descriptor =
        descriptor("application/vnd.oci.image.manifest.v1+json", &manifest);
    manifest_descriptor["annotations"] = json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    }))?;

    let mut tar = tar::Builder::new(Vec::new());
    add_file(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    add_dir(&mut tar, "blobs", 0o755)?;
    add_dir(&mut tar, "blobs/sha256", 0o755)?;
    let mut blobs: Vec<&[u8]> = layers.iter().map(|l| l.gzip.as_slice()).collect();
    blobs.extend([config.as_slice(), manifest.as_slice()]);
    for blob in blobs {
        let hex = digest(blob);
        let name = format!("blobs/sha256/{}", hex.trim_start_matches("sha256:"));
        add_file(&mut tar, &name, blob, 0o644)?;
    }
    add_file(&mut tar, "index.json", &index, 0o644)?;
    fs::write(path, tar.into_inner()?).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}
