//! The OCI runtime spec of a container: containerd's default Linux spec,
//! the image's configuration, and what the container asks for on top.
//!
//! Command and arguments follow Kubernetes: `command` replaces the image's
//! entrypoint, `args` its cmd; giving only `command` drops the image's cmd.

use oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};

use super::ContainerConfig;

/// The PATH a container gets when neither the image nor the pod sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set (oci.WithDefaultSpec).
const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {0}: no command: the image has no entrypoint or cmd and none was given")]
    NoCommand(String),
    #[error("container {id}: user {user:?} is not numeric; only uid[:gid] is supported")]
    User { id: String, user: String },
}

/// The runtime spec (config.json) for `container` from `image`.
pub fn runtime_spec(
    container: &ContainerConfig,
    image: &ImageConfiguration,
) -> Result<Value, SpecError> {
    let image = image.config().clone().unwrap_or_default();
    let args = process_args(
        &container.command,
        &container.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    );
    if args.is_empty() {
        return Err(SpecError::NoCommand(container.id.clone()));
    }
    let (uid, gid) = user(&container.id, image.user().as_deref().unwrap_or_default())?;
    let env = environment(image.env().as_deref().unwrap_or_default(), &container.env);
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir().clone())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".to_owned());

    let mut network = json!({ "type": "network" });
    if let Some(path) = &container.network_namespace {
        network["path"] = json!(path);
    }

    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": uid, "gid": gid },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs" },
        "hostname": container.hostname,
        "mounts": default_mounts(),
        "linux": {
            "cgroupsPath": container.cgroups_path,
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                network,
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

fn default_mounts() -> Value {
    json!([
        { "destination": "/proc", "type": "proc", "source": "proc",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
        { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", "ro"] },
        { "destination": "/run", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    ])
}

fn process_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    let (first, rest) = match (command.is_empty(), args.is_empty()) {
        (false, _) => (command, args),
        (true, false) => (entrypoint, args),
        (true, true) => (entrypoint, cmd),
    };
    first.iter().chain(rest).cloned().collect()
}

/// The image's environment with the container's variables set over it.
fn environment(image: &[String], container: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<String> = image.to_vec();
    if !env.iter().any(|var| var.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    for (name, value) in container {
        let prefix = format!("{name}=");
        env.retain(|var| !var.starts_with(&prefix));
        env.push(format!("{name}={value}"));
    }
    env
}

fn user(id: &str, user: &str) -> Result<(u32, u32), SpecError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let invalid = || SpecError::User {
        id: id.to_owned(),
        user: user.to_owned(),
    };
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    Ok((
        uid.parse().map_err(|_| invalid())?,
        gid.parse().map_err(|_| invalid())?,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image(config: Value) -> ImageConfiguration {
        serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": config,
        }))
        .unwrap()
    }

    fn container() -> ContainerConfig {
        ContainerConfig {
            id: "c1".to_owned(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            hostname: "web-0".to_owned(),
            network_namespace: Some(PathBuf::from("/run/netns/pod")),
            cgroups_path: "/capstan/pod1/c1".to_owned(),
            log_path: PathBuf::from("/var/log/pods/c1.log"),
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let ep = strings(&["/entry"]);
        let cmd = strings(&["--default"]);
        let none: Vec<String> = Vec::new();
        let args = |c: &[&str], a: &[&str]| process_args(&strings(c), &strings(a), &ep, &cmd);
        assert_eq!(args(&[], &[]), strings(&["/entry", "--default"]));
        assert_eq!(args(&[], &["-x"]), strings(&["/entry", "-x"]));
        assert_eq!(args(&["/bin/sh"], &[]), strings(&["/bin/sh"]));
        assert_eq!(
            args(&["/bin/sh"], &["-c", "true"]),
            strings(&["/bin/sh", "-c", "true"])
        );
        assert_eq!(process_args(&none, &none, &none, &none), none);
    }

    #[test]
    fn container_env_overrides_the_image_and_path_is_always_set() {
        let env = environment(
            &strings(&["HOME=/root", "MODE=image"]),
            &[("MODE".to_owned(), "pod".to_owned())],
        );
        assert_eq!(env, strings(&[DEFAULT_PATH, "HOME=/root", "MODE=pod"]));
        let kept = environment(&strings(&["PATH=/app"]), &[]);
        assert_eq!(kept, strings(&["PATH=/app"]));
    }

    #[test]
    fn the_spec_is_a_valid_oci_runtime_spec() {
        let image = image(
            json!({ "Entrypoint": ["/testapp"], "Cmd": ["serve"], "User": "65534:65534", "WorkingDir": "/srv" }),
        );
        let spec = runtime_spec(&container(), &image).unwrap();
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(spec.clone()).unwrap();

        let process = parsed.process().as_ref().unwrap();
        assert_eq!(
            process.args().as_ref().unwrap(),
            &strings(&["/testapp", "serve"])
        );
        assert_eq!((process.user().uid(), process.user().gid()), (65534, 65534));
        assert_eq!(process.cwd(), &PathBuf::from("/srv"));
        assert_eq!(process.no_new_privileges(), Some(true));
        let linux = parsed.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some("/capstan/pod1/c1".as_ref())
        );
        let netns = &spec["linux"]["namespaces"][4];
        assert_eq!(
            netns,
            &json!({ "type": "network", "path": "/run/netns/pod" })
        );
        assert_eq!(parsed.hostname().as_deref(), Some("web-0"));
    }

    #[test]
    fn an_image_without_a_command_is_refused_by_name() {
        let err = runtime_spec(&container(), &image(json!({}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container c1: no command: the image has no entrypoint or cmd and none was given"
        );
    }

    #[test]
    fn a_user_name_is_refused_rather_than_run_as_root() {
        let err = runtime_spec(
            &container(),
            &image(json!({ "Cmd": ["x"], "User": "nobody" })),
        );
        assert!(matches!(err, Err(SpecError::User { .. })));
    }
}
