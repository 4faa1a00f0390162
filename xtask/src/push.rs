//! `cargo xtask push <image.tar> <host:port/repo:tag>`: pushes an image
//! tarball of `cargo xtask image` to a registry on loopback (plain HTTP,
//! as registries on loopback are spoken to), with the OCI distribution
//! API: each blob uploaded unless present, then the manifest under the tag.

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// A pushed image's blobs and manifest, read from an image layout tar.
struct Layout {
    blobs: HashMap<String, Vec<u8>>,
    manifest: Vec<u8>,
}

fn read_layout(path: &Path) -> anyhow::Result<Layout> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(file);
    let mut blobs = HashMap::new();
    let mut index = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == "index.json" {
            index = Some(data);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{hex}"), data);
        }
    }
    let index: Value = serde_json::from_slice(&index.context("the tarball has no index.json")?)?;
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json names no manifest")?;
    let manifest = blobs
        .get(digest)
        .with_context(|| format!("the tarball lacks manifest {digest}"))?
        .clone();
    Ok(Layout { blobs, manifest })
}

/// One HTTP/1.1 exchange with a registry on loopback.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn request(
    address: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the registry's answer has no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("the registry's answer has no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn upload(address: &str, repository: &str, digest: &str, data: &[u8]) -> anyhow::Result<()> {
    let exists = request(
        address,
        "HEAD",
        &format!("/v2/{repository}/blobs/{digest}"),
        None,
        &[],
    )?;
    if exists.status == 200 {
        return Ok(());
    }
    let started = request(
        address,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        None,
        &[],
    )?;
    ensure!(
        started.status == 202,
        "starting an upload: {} {}",
        started.status,
        String::from_utf8_lossy(&started.body)
    );
    let location = started
        .headers
        .get("location")
        .context("the registry gave no upload location")?;
    // The location may be absolute; only its path and query are sent.
    let location = location
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .unwrap_or_else(|| location.clone());
    let separator = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{separator}digest={digest}");
    let done = request(address, "PUT", &put, Some("application/octet-stream"), data)?;
    ensure!(
        done.status == 201,
        "uploading {digest}: {} {}",
        done.status,
        String::from_utf8_lossy(&done.body)
    );
    Ok(())
}

/// Pushes `tarball` as `reference` (host:port/repository:tag).
pub fn run(tarball: &Path, reference: &str) -> anyhow::Result<()> {
    let (address, rest) = reference
        .split_once('/')
        .context("the reference must start with the registry, host:port/")?;
    let (repository, tag) = rest.rsplit_once(':').unwrap_or((rest, "latest"));
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    if !(host == "localhost" || host.starts_with("127.")) {
        bail!("push speaks plain HTTP, so only to a registry on loopback, not {address}");
    }
    let layout = read_layout(tarball)?;
    let manifest: Value = serde_json::from_slice(&layout.manifest)?;
    let mut digests = vec![
        manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ];
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        digests.push(layer["digest"].as_str().unwrap_or_default().to_owned());
    }
    for digest in &digests {
        let data = layout
            .blobs
            .get(digest)
            .with_context(|| format!("the tarball lacks blob {digest}"))?;
        upload(address, repository, digest, data)?;
    }
    let media_type = manifest["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    let put = request(
        address,
        "PUT",
        &format!("/v2/{repository}/manifests/{tag}"),
        Some(media_type),
        &layout.manifest,
    )?;
    ensure!(
        put.status == 201,
        "putting the manifest: {} {}",
        put.status,
        String::from_utf8_lossy(&put.body)
    );
    println!("pushed {reference}");
    Ok(())
}
