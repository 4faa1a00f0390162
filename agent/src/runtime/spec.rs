//! The OCI runtime spec of a container: containerd's default Linux spec,
//! the image's configuration, and what the container asks for on top.
//!
//! Command and arguments follow Kubernetes: `command` replaces the image's
//! entrypoint, `args` its cmd; giving only `command` drops the image's cmd.

use oci_spec::image::ImageConfiguration;
use serde_json::{Value, json};

use super::{
    ContainerConfig,
    config::{Mount, MountSource, Resources, Security, SharedNamespaces},
};

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

/// Every capability a privileged container gets (up to Linux 5.9).
const ALL_CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Why a container cannot be given a spec. The first two are the pod's
/// configuration at fault (Kubernetes' CreateContainerConfigError); the
/// others the image.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container has runAsNonRoot and image will run as root")]
    RunsAsRoot,
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({0}), cannot verify user is non-root"
    )]
    NonNumericUser(String),
    #[error("no command specified: the image has no entrypoint or cmd and none was given")]
    NoCommand,
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

impl SpecError {
    /// True when the pod's own settings refuse the image.
    pub fn is_config_error(&self) -> bool {
        matches!(self, Self::RunsAsRoot | Self::NonNumericUser(_))
    }
}

/// The user a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Files of an image's root filesystem (/etc/passwd, /etc/group), read
/// without mounting it.
pub trait RootfsFiles {
    fn read(&self, path: &str) -> Option<String>;
}

/// The user of `container`: its security context over the image's USER,
/// names resolved through the image's /etc/passwd and /etc/group.
pub fn process_user(
    image_user: &str,
    security: &Security,
    rootfs: &dyn RootfsFiles,
) -> Result<ProcessUser, SpecError> {
    let (user, group) = match image_user.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (image_user, None),
    };
    let passwd = rootfs.read("/etc/passwd").unwrap_or_default();
    let (uid, passwd_gid) = match security.run_as_user {
        Some(uid) => (uid, passwd_entry(&passwd, |e| e.uid == uid).map(|e| e.gid)),
        None if user.is_empty() => (0, Some(0)),
        None => match user.parse::<u32>() {
            Ok(uid) => (uid, passwd_entry(&passwd, |e| e.uid == uid).map(|e| e.gid)),
            Err(_) if security.run_as_non_root => {
                return Err(SpecError::NonNumericUser(user.to_owned()));
            }
            Err(_) => {
                let entry = passwd_entry(&passwd, |e| e.name == user)
                    .ok_or_else(|| SpecError::UnknownUser(user.to_owned()))?;
                (entry.uid, Some(entry.gid))
            }
        },
    };
    if security.run_as_non_root && uid == 0 {
        return Err(SpecError::RunsAsRoot);
    }
    let gid = match (security.run_as_group, group) {
        (Some(gid), _) => gid,
        (None, Some(group)) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_gid(&rootfs.read("/etc/group").unwrap_or_default(), group)
                .ok_or_else(|| SpecError::UnknownGroup(group.to_owned()))?,
        },
        (None, None) => passwd_gid.unwrap_or(0),
    };
    Ok(ProcessUser {
        uid,
        gid,
        additional_gids: security.supplemental_groups.clone(),
    })
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entry<'a>(
    passwd: &'a str,
    wanted: impl Fn(&PasswdEntry<'a>) -> bool,
) -> Option<PasswdEntry<'a>> {
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(PasswdEntry { name, uid, gid })
        })
        .find(|entry| wanted(entry))
}

fn group_gid(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The runtime spec (config.json) for `container` from `image`, running
/// as `user` (see [`process_user`]).
pub fn runtime_spec(
    container: &ContainerConfig,
    image: &ImageConfiguration,
    user: &ProcessUser,
) -> Result<Value, SpecError> {
    let image = image.config().clone().unwrap_or_default();
    let args = process_args(
        &container.command,
        &container.args,
        image.entrypoint().as_deref().unwrap_or_default(),
        image.cmd().as_deref().unwrap_or_default(),
    );
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let env = environment(image.env().as_deref().unwrap_or_default(), &container.env);
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.working_dir().clone())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let security = &container.security;
    let capabilities = capabilities(security);
    let mut mounts = default_mounts(security.privileged);
    for mount in &container.mounts {
        mounts.push(mount_entry(mount));
    }
    let mut linux = json!({
        "cgroupsPath": container.cgroups_path,
        "resources": resources(&container.resources, security.privileged),
        "namespaces": namespaces(&container.namespaces),
    });
    if !security.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": capabilities,
                "effective": capabilities,
                "permitted": capabilities,
            },
            "noNewPrivileges": !security.allow_privilege_escalation && !security.privileged,
        },
        "root": { "path": "rootfs", "readonly": security.read_only_root },
        "hostname": container.hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

/// containerd's defaults, less what the security context drops, plus what
/// it adds; "ALL" stands for every capability.
fn capabilities(security: &Security) -> Vec<String> {
    if security.privileged {
        return ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect();
    }
    let full = |name: &str| {
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let drops: Vec<String> = security.drop_capabilities.iter().map(|c| full(c)).collect();
    let adds: Vec<String> = security.add_capabilities.iter().map(|c| full(c)).collect();
    let mut caps: Vec<String> = if drops.iter().any(|c| c == "CAP_ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drops.contains(c))
            .collect()
    };
    let added: Vec<String> = if adds.iter().any(|c| c == "CAP_ALL") {
        ALL_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    } else {
        adds
    };
    for cap in added {
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    caps
}

fn namespaces(shared: &SharedNamespaces) -> Value {
    let entry = |kind: &str, path: &Option<std::path::PathBuf>| match path {
        Some(path) => json!({ "type": kind, "path": path }),
        None => json!({ "type": kind }),
    };
    json!([
        { "type": "pid" },
        entry("ipc", &shared.ipc),
        entry("uts", &shared.uts),
        { "type": "mount" },
        entry("network", &shared.network),
    ])
}

fn resources(limits: &Resources, privileged: bool) -> Value {
    let devices = if privileged {
        json!([{ "allow": true, "access": "rwm" }])
    } else {
        json!([{ "allow": false, "access": "rwm" }])
    };
    let mut resources = json!({ "devices": devices });
    let mut cpu = serde_json::Map::new();
    if let Some(shares) = limits.cpu_shares {
        cpu.insert("shares".to_owned(), json!(shares));
    }
    if let Some(quota) = limits.cpu_quota {
        cpu.insert("quota".to_owned(), json!(quota));
    }
    if let Some(period) = limits.cpu_period {
        cpu.insert("period".to_owned(), json!(period));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(limit) = limits.memory_limit {
        // Swap equal to the limit means no swap: the limit is the limit.
        resources["memory"] = json!({ "limit": limit, "swap": limit });
    }
    resources
}

fn mount_entry(mount: &Mount) -> Value {
    match &mount.source {
        MountSource::Bind(source) => json!({
            "destination": mount.destination,
            "type": "bind",
            "source": source,
            "options": ["rbind", "rprivate", if mount.read_only { "ro" } else { "rw" }],
        }),
    }
}

fn default_mounts(privileged: bool) -> Vec<Value> {
    let sys = if privileged { "rw" } else { "ro" };
    vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc",
          "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
          "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
          "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
          "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
          "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
          "options": ["nosuid", "noexec", "nodev", sys] }),
    ]
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

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::PathBuf};

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
            hostname: "web-0".to_owned(),
            namespaces: SharedNamespaces {
                network: Some(PathBuf::from("/run/netns/pod")),
                ..Default::default()
            },
            cgroups_path: "/capstan/pod1/c1".to_owned(),
            ..Default::default()
        }
    }

    struct Files(HashMap<&'static str, &'static str>);

    impl RootfsFiles for Files {
        fn read(&self, path: &str) -> Option<String> {
            self.0.get(path).map(|s| s.to_string())
        }
    }

    fn files() -> Files {
        Files(HashMap::from([
            (
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65533:nobody:/:/bin/false\n",
            ),
            ("/etc/group", "root:x:0:\nstaff:x:50:\n"),
        ]))
    }

    fn root() -> ProcessUser {
        ProcessUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
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
        let image =
            image(json!({ "Entrypoint": ["/testapp"], "Cmd": ["serve"], "WorkingDir": "/srv" }));
        let mut config = container();
        config.resources = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
        };
        config.mounts.push(Mount {
            destination: "/data".to_owned(),
            source: MountSource::Bind(PathBuf::from("/var/lib/pod/data")),
            read_only: true,
        });
        let user = ProcessUser {
            uid: 65534,
            gid: 65534,
            additional_gids: vec![50],
        };
        let spec = runtime_spec(&config, &image, &user).unwrap();
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
        let cpu = linux.resources().as_ref().unwrap().cpu().as_ref().unwrap();
        assert_eq!((cpu.shares(), cpu.quota()), (Some(512), Some(50_000)));
        assert_eq!(
            spec["linux"]["namespaces"][4],
            json!({ "type": "network", "path": "/run/netns/pod" })
        );
        assert_eq!(spec["linux"]["namespaces"][1], json!({ "type": "ipc" }));
        assert_eq!(
            spec["mounts"][6]["options"],
            json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(parsed.hostname().as_deref(), Some("web-0"));
    }

    #[test]
    fn an_image_without_a_command_is_refused() {
        let err = runtime_spec(&container(), &image(json!({})), &root()).unwrap_err();
        assert!(matches!(err, SpecError::NoCommand));
    }

    #[test]
    fn users_resolve_through_the_image_and_the_security_context() {
        let none = Security::default();
        let user = |image: &str, security: &Security| process_user(image, security, &files());
        assert_eq!(user("", &none).unwrap(), root());
        assert_eq!(user("nobody", &none).unwrap().gid, 65533);
        assert_eq!(user("nobody:staff", &none).unwrap().gid, 50);
        assert_eq!(user("1000:1000", &none).unwrap().uid, 1000);
        assert!(matches!(
            user("ghost", &none),
            Err(SpecError::UnknownUser(name)) if name == "ghost"
        ));
        let non_root = Security {
            run_as_non_root: true,
            ..Default::default()
        };
        assert!(matches!(user("", &non_root), Err(SpecError::RunsAsRoot)));
        assert!(matches!(
            user("nobody", &non_root),
            Err(SpecError::NonNumericUser(_))
        ));
        let as_nobody = Security {
            run_as_user: Some(65534),
            run_as_non_root: true,
            ..Default::default()
        };
        assert_eq!(user("", &as_nobody).unwrap().uid, 65534);
        assert_eq!(user("", &as_nobody).unwrap().gid, 65533);
    }

    #[test]
    fn capabilities_follow_the_security_context() {
        let caps = |add: &[&str], drop: &[&str]| {
            capabilities(&Security {
                add_capabilities: strings(add),
                drop_capabilities: strings(drop),
                ..Default::default()
            })
        };
        assert_eq!(caps(&[], &[]).len(), DEFAULT_CAPABILITIES.len());
        assert_eq!(
            caps(&["NET_BIND_SERVICE"], &["ALL"]),
            strings(&["CAP_NET_BIND_SERVICE"])
        );
        let with_admin = caps(&["NET_ADMIN"], &["KILL"]);
        assert!(with_admin.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(!with_admin.contains(&"CAP_KILL".to_owned()));
        let privileged = Security {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(capabilities(&privileged).len(), ALL_CAPABILITIES.len());
    }
}
