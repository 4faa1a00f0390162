//! The node's uplink: the interface that holds the node's address. Its
//! subnet decides which peer nodes are reached directly (host-gw) and
//! which through the overlay; its MTU bounds the pods' MTU.

use std::net::Ipv4Addr;

use super::NetworkError;

/// The interface holding the node's address, as found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
}

impl Uplink {
    /// The interface of this network namespace that holds `address`.
    pub fn find(address: Ipv4Addr) -> Result<Self, NetworkError> {
        let sys = |source| NetworkError::Sys {
            action: "listing the host's addresses",
            source,
        };
        let found = nix::ifaddrs::getifaddrs()
            .map_err(sys)?
            .find_map(|ifaddr| {
                let ip = ifaddr.address?.as_sockaddr_in()?.ip();
                let mask = ifaddr.netmask?.as_sockaddr_in()?.ip();
                (ip == address).then_some((ifaddr.interface_name, mask))
            })
            .ok_or(NetworkError::NoUplink(address))?;
        let (name, mask) = found;
        let mtu = interface_mtu(&name)?;
        Ok(Self {
            name,
            address,
            prefix_len: u32::from(mask).leading_ones() as u8,
            mtu,
        })
    }

    /// Whether `peer` is on the uplink's subnet, so packets reach it
    /// without a router on the way.
    pub fn on_link(&self, peer: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(peer) & mask == u32::from(self.address) & mask
    }
}

/// The MTU of interface `name` in this network namespace. Asked of a
/// socket, not read from /sys/class/net, whose view is the namespace that
/// mounted sysfs rather than the caller's.
fn interface_mtu(name: &str) -> Result<u32, NetworkError> {
    let sys = |source| NetworkError::Sys {
        action: "reading the uplink's MTU",
        source,
    };
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys)?;
    // SAFETY: an all-zero ifreq is valid; the name is copied bounded with
    // its terminating NUL kept, and the ioctl writes only ifru_mtu.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *slot = byte as libc::c_char;
    }
    let result = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SIOCGIFMTU,
            &mut request,
        )
    };
    if result < 0 {
        return Err(sys(nix::Error::last()));
    }
    // SAFETY: SIOCGIFMTU filled the union's mtu member.
    let mtu = unsafe { request.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uplink(address: [u8; 4], prefix_len: u8) -> Uplink {
        Uplink {
            name: "eth0".into(),
            address: address.into(),
            prefix_len,
            mtu: 1500,
        }
    }

    #[test]
    fn a_peer_is_on_link_when_it_shares_the_subnet() {
        let lan = uplink([198, 18, 0, 1], 24);
        assert!(lan.on_link(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!lan.on_link(Ipv4Addr::new(198, 18, 1, 2)));
        assert!(uplink([10, 0, 0, 1], 0).on_link(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!uplink([10, 0, 0, 1], 32).on_link(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn the_loopback_interface_is_found_by_its_address() {
        let lo = Uplink::find(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(lo.name, "lo");
        assert_eq!(lo.prefix_len, 8);
        assert!(lo.mtu >= 1500, "{lo:?}");
        assert!(matches!(
            Uplink::find(Ipv4Addr::new(192, 0, 2, 123)),
            Err(NetworkError::NoUplink(_))
        ));
    }
}
