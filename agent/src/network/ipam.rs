//! Pod addresses from the node's pod CIDR, each allocation a file named by
//! the address and holding the pod's uid, written and synced before the
//! address is used: a restarted agent reads them back and never hands an
//! address out twice.
//!
//! Addresses are handed out in turn after the last one given (as CNI's
//! host-local IPAM does), not lowest first: a freed address is reused as
//! late as possible, so peers' ARP caches and connections still pointing at
//! a deleted pod do not reach a new one, or a MAC that is gone.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    net::Ipv4Addr,
    path::PathBuf,
    sync::Mutex,
};

use super::{NetworkError, PodSubnet};

/// The file naming the address handed out last.
const LAST: &str = "last-reserved";

#[derive(Debug)]
pub struct AddressPool {
    dir: PathBuf,
    subnet: PodSubnet,
    /// Serialises allocations within this process; the files' exclusive
    /// creation guards against anything else.
    lock: Mutex<()>,
}

impl AddressPool {
    pub fn open(dir: PathBuf, subnet: PodSubnet) -> Result<Self, NetworkError> {
        fs::create_dir_all(&dir).map_err(NetworkError::io("creating", &dir))?;
        Ok(Self {
            dir,
            subnet,
            lock: Mutex::new(()),
        })
    }

    /// Every allocation: address and owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, NetworkError> {
        let entries = fs::read_dir(&self.dir).map_err(NetworkError::io("reading", &self.dir))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<Ipv4Addr>() else {
                continue;
            };
            if let Ok(owner) = fs::read_to_string(entry.path()) {
                found.push((ip, owner.trim().to_owned()));
            }
        }
        Ok(found)
    }

    /// The address of `owner`: the one it holds, or a free one taken now.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, NetworkError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((ip, _)) = self.allocations()?.into_iter().find(|(_, o)| o == owner) {
            return Ok(ip);
        }
        let all: Vec<Ipv4Addr> = self.subnet.pod_addresses().collect();
        let last = fs::read_to_string(self.dir.join(LAST))
            .ok()
            .and_then(|text| text.trim().parse::<Ipv4Addr>().ok());
        let start = last
            .and_then(|last| all.iter().position(|ip| *ip == last))
            .map_or(0, |at| at + 1);
        for &ip in all[start..].iter().chain(&all[..start]) {
            let path = self.dir.join(ip.to_string());
            let file = OpenOptions::new().write(true).create_new(true).open(&path);
            let mut file = match file {
                Ok(file) => file,
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(NetworkError::io("creating", &path)(err)),
            };
            file.write_all(owner.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(NetworkError::io("writing", &path))?;
            fs::File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(NetworkError::io("syncing", &self.dir))?;
            // Only where the next search starts: losing it costs nothing.
            let _ = fs::write(self.dir.join(LAST), ip.to_string());
            return Ok(ip);
        }
        Err(NetworkError::Exhausted(self.subnet.to_string()))
    }

    /// Frees whatever `owner` holds.
    pub fn release(&self, owner: &str) -> Result<(), NetworkError> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (ip, held_by) in self.allocations()? {
            if held_by == owner {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(NetworkError::io("removing", &path)(err)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_stable_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = PodSubnet::parse("10.244.7.0/24").unwrap();
        let pool = AddressPool::open(dir.path().join("ipam"), subnet).unwrap();
        let a = pool.allocate("uid-a").unwrap();
        let b = pool.allocate("uid-b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 7, 2));
        assert_ne!(a, b);
        assert_eq!(
            pool.allocate("uid-a").unwrap(),
            a,
            "an owner keeps its address"
        );

        let reopened = AddressPool::open(dir.path().join("ipam"), subnet).unwrap();
        let c = reopened.allocate("uid-c").unwrap();
        assert!(c != a && c != b);
        reopened.release("uid-a").unwrap();
        assert_eq!(
            reopened.allocate("uid-d").unwrap(),
            Ipv4Addr::new(10, 244, 7, 5),
            "a released address is reused last, not first"
        );
        assert_eq!(reopened.allocations().unwrap().len(), 3);
    }

    #[test]
    fn the_search_wraps_around_to_freed_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = PodSubnet::parse("10.244.7.0/24").unwrap();
        let pool = AddressPool::open(dir.path().join("ipam"), subnet).unwrap();
        for n in 0..253 {
            pool.allocate(&format!("uid-{n}")).unwrap();
        }
        assert!(matches!(
            pool.allocate("one-too-many"),
            Err(NetworkError::Exhausted(_))
        ));
        pool.release("uid-10").unwrap();
        assert_eq!(
            pool.allocate("late").unwrap(),
            Ipv4Addr::new(10, 244, 7, 12)
        );
    }

    #[test]
    fn a_full_pool_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = PodSubnet::parse("10.244.8.0/24").unwrap();
        let pool = AddressPool::open(dir.path().to_owned(), subnet).unwrap();
        for n in 0..253 {
            pool.allocate(&format!("pod-{n}")).unwrap();
        }
        assert!(matches!(
            pool.allocate("one-more"),
            Err(NetworkError::Exhausted(_))
        ));
    }
}
