//! Pod volumes on the node: emptyDir (a directory of the pod, or a tmpfs
//! for medium Memory) and hostPath, and the mounts each container's
//! volumeMounts ask for. Volume kinds that need the API (configMap,
//! secret, projected, persistentVolumeClaim) come with the storage work
//! and are refused by name until then.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::runtime::{Mount, MountSource};
use capstan_quantity as quantity;

/// Host paths of a pod's volumes, by volume name.
pub type VolumePaths = HashMap<String, PathBuf>;

/// Makes every volume of `pod` under `dir` (the pod's volume directory).
/// The error is a sentence for the pod's status.
pub fn prepare(pod: &Pod, dir: &Path) -> Result<VolumePaths, String> {
    let mut paths = VolumePaths::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path =
            prepare_one(volume, dir).map_err(|why| format!("volume \"{}\": {why}", volume.name))?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

fn prepare_one(volume: &Volume, dir: &Path) -> Result<PathBuf, String> {
    if let Some(empty) = &volume.empty_dir {
        let path = dir.join("empty-dir").join(&volume.name);
        create_dir(&path, 0o777)?;
        if empty.medium.as_deref() == Some("Memory") && !is_mount_point(&path) {
            let mut options = String::from("mode=1777");
            if let Some(limit) = &empty.size_limit {
                let bytes = quantity::bytes(&limit.0)
                    .ok_or_else(|| format!("sizeLimit {:?} is not a quantity", limit.0))?;
                options.push_str(&format!(",size={bytes}"));
            }
            mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|err| format!("mounting a tmpfs at {}: {err}", path.display()))?;
        }
        return Ok(path);
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path(&path, host.type_.as_deref().unwrap_or(""))?;
        return Ok(path);
    }
    let kind = [
        (volume.config_map.is_some(), "configMap"),
        (volume.secret.is_some(), "secret"),
        (volume.projected.is_some(), "projected"),
        (
            volume.persistent_volume_claim.is_some(),
            "persistentVolumeClaim",
        ),
        (volume.downward_api.is_some(), "downwardAPI"),
    ]
    .into_iter()
    .find_map(|(present, kind)| present.then_some(kind))
    .unwrap_or("this kind of");
    Err(format!(
        "{kind} volumes are not supported by this agent yet (emptyDir and hostPath are)"
    ))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|err| format!("creating {}: {err}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|err| format!("setting the mode of {}: {err}", path.display()))
}

/// Checks (or makes) a hostPath by its type, as the kubelet does.
fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let meta = fs::metadata(path);
    let is = |test: fn(&fs::Metadata) -> bool| meta.as_ref().is_ok_and(test);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {} is not {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" if !path.exists() => create_dir(path, 0o755),
        "DirectoryOrCreate" | "Directory" if is(fs::Metadata::is_dir) => Ok(()),
        "DirectoryOrCreate" | "Directory" => fail("a directory"),
        "FileOrCreate" if !path.exists() => {
            if let Some(parent) = path.parent() {
                create_dir(parent, 0o755)?;
            }
            fs::File::create(path)
                .map(drop)
                .map_err(|err| format!("creating {}: {err}", path.display()))
        }
        "FileOrCreate" | "File" if is(fs::Metadata::is_file) => Ok(()),
        "FileOrCreate" | "File" => fail("a file"),
        "Socket" if is(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => fail("a socket"),
        "CharDevice" if is(|m| m.file_type().is_char_device()) => Ok(()),
        "CharDevice" => fail("a character device"),
        "BlockDevice" if is(|m| m.file_type().is_block_device()) => Ok(()),
        "BlockDevice" => fail("a block device"),
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.display().to_string();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_str()))
}

/// The mounts `container` asks for, from the pod's prepared volumes.
pub fn container_mounts(
    container: &Container,
    volumes: &VolumePaths,
) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for wanted in container.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&wanted.name)
            .ok_or_else(|| format!("volumeMount \"{}\" names no volume of the pod", wanted.name))?;
        let source = match wanted.sub_path.as_deref().filter(|p| !p.is_empty()) {
            Some(sub) => {
                if Path::new(sub).is_absolute() || sub.split('/').any(|part| part == "..") {
                    return Err(format!(
                        "subPath {sub:?} must be a relative path within the volume"
                    ));
                }
                let path = base.join(sub);
                if !path.exists() {
                    create_dir(&path, 0o755)?;
                }
                path
            }
            None => base.clone(),
        };
        mounts.push(Mount {
            destination: wanted.mount_path.clone(),
            source: MountSource::Bind(source),
            read_only: wanted.read_only.unwrap_or(false),
        });
    }
    Ok(mounts)
}

/// Unmounts the pod's tmpfs volumes and removes its volume directory.
pub fn remove(dir: &Path) -> std::io::Result<()> {
    let empty = dir.join("empty-dir");
    if let Ok(entries) = fs::read_dir(&empty) {
        for entry in entries.flatten() {
            let _ = umount2(&entry.path(), MntFlags::MNT_DETACH);
        }
    }
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn empty_dirs_and_host_paths_become_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-data");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "volumes": [
                { "name": "scratch", "emptyDir": {} },
                { "name": "data", "hostPath": { "path": host, "type": "DirectoryOrCreate" } },
            ] },
        }))
        .unwrap();
        let volumes = prepare(&pod, &dir.path().join("volumes")).unwrap();
        assert!(host.is_dir());
        let container: Container = serde_json::from_value(json!({
            "name": "c", "volumeMounts": [
                { "name": "scratch", "mountPath": "/scratch", "subPath": "logs" },
                { "name": "data", "mountPath": "/data", "readOnly": true },
            ],
        }))
        .unwrap();
        let mounts = container_mounts(&container, &volumes).unwrap();
        assert_eq!(mounts[0].destination, "/scratch");
        let MountSource::Bind(scratch) = &mounts[0].source;
        assert!(scratch.ends_with("empty-dir/scratch/logs") && scratch.is_dir());
        assert_eq!(mounts[1].source, MountSource::Bind(host));
        assert!(mounts[1].read_only);

        remove(&dir.path().join("volumes")).unwrap();
        assert!(!dir.path().join("volumes").exists());
    }

    #[test]
    fn unsupported_and_broken_volumes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "volumes": [
                { "name": "cfg", "configMap": { "name": "app" } } ] },
        }))
        .unwrap();
        let err = prepare(&pod, dir.path()).unwrap_err();
        assert!(
            err.starts_with("volume \"cfg\": configMap volumes are not supported"),
            "{err}"
        );

        let missing: Pod = serde_json::from_value(json!({
            "metadata": { "name": "p" },
            "spec": { "containers": [], "volumes": [
                { "name": "d", "hostPath": { "path": "/nonexistent/capstan", "type": "Directory" } } ] },
        }))
        .unwrap();
        let err = prepare(&missing, dir.path()).unwrap_err();
        assert!(err.contains("is not a directory"), "{err}");
    }
}
