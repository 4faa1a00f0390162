//! The eBPF datapath: capstan's embedded eBPF object loaded into the kernel,
//! its maps pinned under bpffs, its connect4 program attached to a cgroup.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{HashMap, MapData, MapError},
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError, cgroup_sock_addr::CgroupSockAddrLinkId,
    },
};
use capstan_ebpf_common::{
    BACKENDS_MAP, Backend, CONNECT4_PROGRAM, SERVICES_MAP, ServiceKey, ServiceValue,
};

use super::service_table::{LbMapError, LbMaps};

/// Built by `cargo xtask build-ebpf`; agent/build.rs refuses a stale one.
/// Empty when the agent was built with CAPSTAN_EBPF_SKIP=1.
static OBJECT: &[u8] = include_bytes_aligned!(env!("CAPSTAN_EBPF_OBJECT"));

/// `f_type` of a bpffs mount (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{0} is not on a bpf filesystem: mount one there (mount -t bpf bpf {0})")]
    NotBpffs(PathBuf),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "this agent was built with CAPSTAN_EBPF_SKIP=1 and carries no eBPF object; \
         rebuild it after `cargo xtask build-ebpf`"
    )]
    NotBuilt,
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF object has no {0}")]
    Missing(&'static str),
    #[error("program {CONNECT4_PROGRAM}: {0}")]
    Program(#[from] ProgramError),
    #[error("map: {0}")]
    Map(#[from] MapError),
    #[error("the datapath's maps were already taken")]
    MapsTaken,
}

/// Mounts a bpf filesystem at `dir` unless one is there already.
pub fn mount_bpffs(dir: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(dir).map_err(|source| DatapathError::Io {
        action: "creating",
        path: dir.to_owned(),
        source,
    })?;
    if is_bpffs(dir)? {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| DatapathError::Io {
        action: "mounting bpffs at",
        path: dir.to_owned(),
        source: errno.into(),
    })
}

fn is_bpffs(dir: &Path) -> Result<bool, DatapathError> {
    let stat = nix::sys::statfs::statfs(dir).map_err(|errno| DatapathError::Io {
        action: "statfs",
        path: dir.to_owned(),
        source: errno.into(),
    })?;
    Ok(stat.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

/// The loaded programs and maps. Dropping it detaches the programs; the
/// pinned maps stay, so a restarted agent picks up the same state.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    attached: Option<CgroupSockAddrLinkId>,
}

impl Datapath {
    /// Loads the programs, reusing maps already pinned in `pin_dir` (a
    /// directory on bpffs) and pinning new ones there.
    pub fn load(pin_dir: &Path) -> Result<Self, DatapathError> {
        if OBJECT.is_empty() {
            return Err(DatapathError::NotBuilt);
        }
        let parent = pin_dir.parent().unwrap_or(pin_dir);
        if !is_bpffs(parent)? {
            return Err(DatapathError::NotBpffs(parent.to_owned()));
        }
        fs::create_dir_all(pin_dir).map_err(|source| DatapathError::Io {
            action: "creating",
            path: pin_dir.to_owned(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)?;
        connect4(&mut ebpf)?.load()?;
        Ok(Self {
            ebpf,
            attached: None,
        })
    }

    /// Translates connects made by every process in `cgroup` (a cgroup v2
    /// directory) and its descendants.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        self.detach()?;
        let dir = File::open(cgroup).map_err(|source| DatapathError::Io {
            action: "opening cgroup",
            path: cgroup.to_owned(),
            source,
        })?;
        // A bpf_link attachment (kernel >= 5.7) always coexists with other
        // programs in the cgroup tree; the kernel refuses mode flags on it.
        let link = connect4(&mut self.ebpf)?.attach(dir, CgroupAttachMode::Single)?;
        self.attached = Some(link);
        Ok(())
    }

    /// Stops translating; connects go where they were addressed again.
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        if let Some(link) = self.attached.take() {
            connect4(&mut self.ebpf)?.detach(link)?;
        }
        Ok(())
    }

    /// Hands out the maps, once, for a [`super::ServiceTable`] to own.
    pub fn take_maps(&mut self) -> Result<AyaLbMaps, DatapathError> {
        let services = self
            .ebpf
            .take_map(SERVICES_MAP)
            .ok_or(DatapathError::MapsTaken)?;
        let backends = self
            .ebpf
            .take_map(BACKENDS_MAP)
            .ok_or(DatapathError::MapsTaken)?;
        Ok(AyaLbMaps {
            services: HashMap::try_from(services)?,
            backends: HashMap::try_from(backends)?,
        })
    }
}

fn connect4(ebpf: &mut Ebpf) -> Result<&mut CgroupSockAddr, DatapathError> {
    let program = ebpf
        .program_mut(CONNECT4_PROGRAM)
        .ok_or(DatapathError::Missing(CONNECT4_PROGRAM))?;
    Ok(program.try_into()?)
}

/// The kernel's maps behind [`LbMaps`].
#[derive(Debug)]
pub struct AyaLbMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    backends: HashMap<MapData, u32, Backend>,
}

fn map_error(map: &'static str) -> impl Fn(MapError) -> LbMapError {
    move |err| LbMapError {
        map,
        message: err.to_string(),
    }
}

impl LbMaps for AyaLbMaps {
    fn set_slot(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), LbMapError> {
        self.services
            .insert(key, value, 0)
            .map_err(map_error(SERVICES_MAP))
    }

    fn remove_slot(&mut self, key: &ServiceKey) -> Result<(), LbMapError> {
        match self.services.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other.map_err(map_error(SERVICES_MAP)),
        }
    }

    fn set_backend(&mut self, id: u32, backend: Backend) -> Result<(), LbMapError> {
        self.backends
            .insert(id, backend, 0)
            .map_err(map_error(BACKENDS_MAP))
    }

    fn remove_backend(&mut self, id: u32) -> Result<(), LbMapError> {
        match self.backends.remove(&id) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other.map_err(map_error(BACKENDS_MAP)),
        }
    }
}
