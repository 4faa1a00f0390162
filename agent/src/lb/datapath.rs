//! The eBPF datapath: capstan's embedded eBPF object loaded into the kernel,
//! its maps pinned under bpffs, its programs attached to a cgroup through
//! links pinned there too, so the datapath outlives the agent: a killed
//! agent leaves Services working, and the next one takes over the same
//! maps and replaces the links without a moment with no program attached.

use std::{
    fs::{self, File},
    io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{HashMap, MapError, PerCpuHashMap},
    pin::PinError,
    programs::{
        CgroupAttachMode, CgroupSockAddr, ProgramError,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use capstan_ebpf_common::{
    AFFINITY_MATCH_MAP, BACKEND_STATS_MAP, BACKENDS_MAP, CONNECT4_PROGRAM, FRONTENDS_MAP,
    GETPEERNAME4_PROGRAM, Ipv4Endpoint, RECVMSG4_PROGRAM, REVERSE_MAP, ReverseKey,
    SENDMSG4_PROGRAM, SLOTS_MAP, STATS_MAP,
};

use super::maps::BpfLbMaps;

/// Every program, attached together.
const PROGRAMS: [&str; 4] = [
    CONNECT4_PROGRAM,
    SENDMSG4_PROGRAM,
    RECVMSG4_PROGRAM,
    GETPEERNAME4_PROGRAM,
];

/// Built by `cargo xtask build-ebpf`; agent/build.rs refuses a stale one.
/// Empty when the agent was built with CAPSTAN_EBPF_SKIP=1.
static OBJECT: &[u8] = include_bytes_aligned!(env!("CAPSTAN_EBPF_OBJECT"));

/// The directory below the bpf filesystem the datapath pins in.
pub const PIN_DIR: &str = "capstan";

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
    #[error("program: {0}")]
    Program(#[from] ProgramError),
    #[error("pinning a link: {0}")]
    Pin(#[from] PinError),
    #[error("taking over a pinned link: {0}")]
    Link(#[from] LinkError),
    #[error("map: {0}")]
    Map(#[from] MapError),
    #[error("pinned map {path}: {message} (is an agent's datapath pinned there?)")]
    Pinned { path: PathBuf, message: String },
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

/// The loaded programs and maps. Dropping it leaves the pinned links, and
/// so the programs, attached.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    links_dir: PathBuf,
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
        let links_dir = pin_dir.join("links");
        fs::create_dir_all(&links_dir).map_err(|source| DatapathError::Io {
            action: "creating",
            path: links_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)?;
        for name in PROGRAMS {
            program(&mut ebpf, name)?.load()?;
        }
        Ok(Self { ebpf, links_dir })
    }

    /// Translates socket calls made by every process in `cgroup` (a
    /// cgroup v2 directory) and its descendants. Links pinned by an
    /// earlier agent are replaced only once the new ones are attached;
    /// meanwhile both run, and the second finds nothing left to translate.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let dir = File::open(cgroup).map_err(|source| DatapathError::Io {
            action: "opening cgroup",
            path: cgroup.to_owned(),
            source,
        })?;
        for name in PROGRAMS {
            let program = program(&mut self.ebpf, name)?;
            // A bpf_link attachment (kernel >= 5.7) always coexists with
            // other programs in the cgroup tree; the kernel refuses mode
            // flags on it.
            let id = program.attach(&dir, CgroupAttachMode::Single)?;
            let link = FdLink::try_from(program.take_link(id)?)?;
            let pin = self.links_dir.join(name);
            unpin(&pin)?;
            link.pin(&pin)?;
        }
        Ok(())
    }

    /// Stops translating: the pinned links are removed, and connects go
    /// where they were addressed again.
    pub fn detach(&mut self) -> Result<(), DatapathError> {
        for name in PROGRAMS {
            unpin(&self.links_dir.join(name))?;
        }
        Ok(())
    }

    /// Hands out the maps the agent writes, once.
    pub fn take_maps(&mut self) -> Result<BpfLbMaps, DatapathError> {
        let mut take = |name| self.ebpf.take_map(name).ok_or(DatapathError::MapsTaken);
        Ok(BpfLbMaps {
            frontends: HashMap::try_from(take(FRONTENDS_MAP)?)?,
            slots: HashMap::try_from(take(SLOTS_MAP)?)?,
            backends: HashMap::try_from(take(BACKENDS_MAP)?)?,
            affinity_matches: HashMap::try_from(take(AFFINITY_MATCH_MAP)?)?,
            stats: PerCpuHashMap::try_from(take(STATS_MAP)?)?,
            backend_stats: PerCpuHashMap::try_from(take(BACKEND_STATS_MAP)?)?,
        })
    }

    /// Hands out the reverse map (which sockets were translated to which
    /// backend), once, for the stale socket reaper to read.
    pub fn take_reverse_map(
        &mut self,
    ) -> Result<HashMap<aya::maps::MapData, ReverseKey, Ipv4Endpoint>, DatapathError> {
        let map = self
            .ebpf
            .take_map(REVERSE_MAP)
            .ok_or(DatapathError::MapsTaken)?;
        Ok(HashMap::try_from(map)?)
    }
}

/// Removes the link pinned at `pin`, if any: its program is detached once
/// the last reference (the pin) goes.
fn unpin(pin: &Path) -> Result<(), DatapathError> {
    if !pin.exists() {
        return Ok(());
    }
    let link = PinnedLink::from_pin(pin)?
        .unpin()
        .map_err(|source| DatapathError::Io {
            action: "unpinning",
            path: pin.to_owned(),
            source,
        })?;
    drop(link);
    Ok(())
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    let program = ebpf.program_mut(name).ok_or(DatapathError::Missing(name))?;
    Ok(program.try_into()?)
}
