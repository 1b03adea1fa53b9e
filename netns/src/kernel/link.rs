//! Interfaces and addresses over rtnetlink: finding the interface k0s's rules name, and
//! adding and removing the virtual addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{Handle, LinkDummy, RouteMessageBuilder};

/// One interface as the daemon needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel index.
    pub index: u32,
    /// Name (`eth0`).
    pub name: String,
    /// Hardware address (empty for interfaces without one).
    pub mac: Vec<u8>,
    /// Usable: administratively up and with carrier (see [`link_up`]). An interface
    /// that is set up but whose cable (or veth peer) is gone cannot carry VRRP.
    pub up: bool,
}

/// An address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// A secondary address (IPv4: not the first in its subnet).
    pub secondary: bool,
    /// IPv6 link-local scope.
    pub link_local: bool,
}

/// What [`Netlink::remove_address`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The address was not there.
    Absent,
    /// It was, and is gone.
    Removed,
    /// It is there, but someone else added it: left alone.
    NotOurs,
}

/// An rtnetlink connection.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

/// What went wrong talking to the kernel, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {cause}")]
pub struct LinkError {
    what: String,
    cause: rtnetlink::Error,
}

impl LinkError {
    pub(crate) fn new(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Self { what: what.into(), cause: source }
    }

    /// The kernel's errno, when it answered with one.
    pub fn errno(&self) -> Option<i32> {
        match &self.cause {
            rtnetlink::Error::NetlinkError(e) => e.code.map(|c| -c.get()),
            _ => None,
        }
    }
}

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
/// `IFNAMSIZ - 1`: the longest interface name the kernel takes.
const IFNAME_MAX: usize = 15;
const EADDRNOTAVAIL: i32 = 99;

impl Netlink {
    /// Opens a connection; its I/O runs on a task of the current tokio runtime.
    pub fn open() -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Every interface.
    pub async fn interfaces(&self) -> Result<Vec<Interface>, LinkError> {
        Ok(dump_links(&self.handle).await?.iter().map(interface_of).collect())
    }

    /// The interface named `name`, `None` when there is none (a name the kernel could
    /// never hold, empty or longer than 15 bytes, is not looked up at all).
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Interface>, LinkError> {
        if name.is_empty() || name.len() > IFNAME_MAX || name.contains('\0') {
            return Ok(None);
        }
        let found: Result<Vec<LinkMessage>, _> =
            self.handle.link().get().match_name(name).execute().try_collect().await;
        match found {
            Ok(links) => Ok(links.iter().map(interface_of).find(|i| i.name == name)),
            Err(e) => {
                let err = LinkError::new(format!("looking up interface {name:?}"), e);
                if err.errno() == Some(ENODEV) { Ok(None) } else { Err(err) }
            }
        }
    }

    /// The interface k0s would use for `spec`: a name, a MAC address (`aa:bb:..`), or, when
    /// empty, the interface of the default route of `family_v4`'s family.
    pub async fn resolve_interface(
        &self,
        spec: &str,
        family_v4: bool,
    ) -> Result<Interface, ResolveError> {
        let all = self.interfaces().await.map_err(ResolveError::Netlink)?;
        if spec.is_empty() {
            let index = self.default_route_interface(family_v4).await?;
            return all
                .into_iter()
                .find(|i| i.index == index)
                .ok_or(ResolveError::NoDefaultRoute { v4: family_v4 });
        }
        if let Some(found) = all.iter().find(|i| i.name == spec) {
            return Ok(found.clone());
        }
        if let Some(found) = parse_mac(spec).and_then(|mac| all.iter().find(|i| i.mac == mac)) {
            return Ok(found.clone());
        }
        Err(ResolveError::NotFound {
            spec: spec.to_owned(),
            known: all.iter().map(|i| i.name.clone()).collect(),
        })
    }

    async fn default_route_interface(&self, v4: bool) -> Result<u32, ResolveError> {
        let message = if v4 {
            RouteMessageBuilder::<Ipv4Addr>::new().build()
        } else {
            RouteMessageBuilder::<Ipv6Addr>::new().build()
        };
        let routes: Vec<_> = self
            .handle
            .route()
            .get(message)
            .execute()
            .try_collect()
            .await
            .map_err(|e| ResolveError::Netlink(LinkError::new("listing routes", e)))?;
        routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(index) => Some(*index),
                    _ => None,
                })
            })
            .ok_or(ResolveError::NoDefaultRoute { v4 })
    }

    /// The link-layer address of each neighbour the kernel has resolved (reachable, stale,
    /// being checked, or set by hand), IPv4 and IPv6, on every interface.
    pub async fn neighbours(&self) -> Result<Vec<(IpAddr, [u8; 6])>, LinkError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::new("listing the neighbour table", e))?;
        Ok(messages.iter().filter_map(neighbour_of).collect())
    }

    /// The addresses on interface `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>, LinkError> {
        Ok(self.address_messages(index).await?.iter().filter_map(address_of).collect())
    }

    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>, LinkError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| LinkError::new(format!("listing the addresses of interface {index}"), e))
    }

    /// Adds `addr/prefix_len` to interface `index`, tagged as cplbd's; present already is
    /// fine (and stays as it was). Returns whether this call added it.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<bool, LinkError> {
        let mut request = self.handle.address().add(index, addr, prefix_len);
        // cplbd's tag: what it removes later is what carries it (see `owned`).
        request.message_mut().attributes.push(AddressAttribute::Protocol(
            rtnetlink::packet_route::address::AddressProtocol::Other(super::owned::ADDRESS_PROTO),
        ));
        if addr.is_ipv6() {
            // A VIP must answer at once: duplicate address detection would hold it
            // tentative for a second, and a VIP is expected on more than one node over time.
            let message = request.message_mut();
            message.attributes.push(AddressAttribute::Flags(
                rtnetlink::packet_route::address::AddressFlags::Nodad,
            ));
        }
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let err =
                    LinkError::new(format!("adding {addr}/{prefix_len} to interface {index}"), e);
                if err.errno() == Some(EEXIST) { Ok(false) } else { Err(err) }
            }
        }
    }

    /// Removes `addr` (any prefix length) from interface `index` if it carries cplbd's tag,
    /// or, untagged, if `untagged_too` (cplbd's record says it added it on a kernel that
    /// keeps no tag); absent is fine.
    pub async fn remove_address(
        &self,
        index: u32,
        addr: IpAddr,
        untagged_too: bool,
    ) -> Result<Removal, LinkError> {
        let mut outcome = Removal::Absent;
        for message in self.address_messages(index).await? {
            if address_of(&message).is_some_and(|a| a.addr == addr) {
                if !untagged_too && !is_tagged(&message) {
                    outcome = Removal::NotOurs;
                    continue;
                }
                match self.handle.address().del(message).execute().await {
                    Ok(()) => outcome = Removal::Removed,
                    Err(e) => {
                        let err =
                            LinkError::new(format!("removing {addr} from interface {index}"), e);
                        if err.errno() != Some(EADDRNOTAVAIL) {
                            return Err(err);
                        }
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// Creates a dummy interface `name` (up) unless one exists; `Ok(None)` when the kernel
    /// has no dummy interfaces. With it, whether this call created it.
    pub async fn ensure_dummy(&self, name: &str) -> Result<Option<(Interface, bool)>, LinkError> {
        let existing = self.interfaces().await?.into_iter().find(|i| i.name == name);
        if let Some(found) = existing {
            self.set_up(found.index).await?;
            return Ok(Some((found, false)));
        }
        if let Err(e) = self.handle.link().add(LinkDummy::new(name).build()).execute().await {
            tracing::debug!(error = %e, "the kernel refused a dummy interface");
            return Ok(None);
        }
        let created = self.interfaces().await?.into_iter().find(|i| i.name == name);
        if let Some(found) = &created {
            self.set_up(found.index).await?;
        }
        Ok(created.map(|c| (c, true)))
    }

    /// Deletes interface `index`.
    pub async fn delete_link(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| LinkError::new(format!("deleting interface {index}"), e))
    }

    async fn set_up(&self, index: u32) -> Result<(), LinkError> {
        let message = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| LinkError::new(format!("setting interface {index} up"), e))
    }
}

/// The interface named in the configuration was not found.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No interface by that name or MAC.
    #[error("interface {spec:?} not found by name or MAC address (interfaces: {})", known.join(", "))]
    NotFound {
        /// What the configuration said.
        spec: String,
        /// The interfaces there are.
        known: Vec<String>,
    },
    /// `interface` empty and no default route.
    #[error("no interface given and no default {} route to take it from", if *v4 { "IPv4" } else { "IPv6" })]
    NoDefaultRoute {
        /// Which family's default route was looked for.
        v4: bool,
    },
    /// Netlink failed.
    #[error(transparent)]
    Netlink(LinkError),
}

/// Whether `link` can carry traffic: administratively up (`IFF_UP`), with carrier
/// (`IFF_LOWER_UP`), and, when the kernel says, an operational state of up or unknown (as
/// the kernel's own `netif_oper_up`: interfaces without carrier reporting, such as `lo`,
/// stay `unknown`; `dormant` ones wait for, e.g., 802.1X and carry nothing yet).
pub(crate) fn link_up(link: &LinkMessage) -> bool {
    let flags = link.header.flags;
    let operational = link.attributes.iter().all(|a| match a {
        LinkAttribute::OperState(state) => matches!(state, State::Up | State::Unknown),
        _ => true,
    });
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp) && operational
}

/// The name in a link message (`IFLA_IFNAME`), if it has one.
pub(crate) fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn interface_of(link: &LinkMessage) -> Interface {
    let mut out = Interface {
        index: link.header.index,
        name: String::new(),
        mac: Vec::new(),
        up: link_up(link),
    };
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(name) => out.name.clone_from(name),
            LinkAttribute::Address(mac) => out.mac.clone_from(mac),
            _ => {}
        }
    }
    out
}

pub(crate) fn address_of(message: &AddressMessage) -> Option<Address> {
    // IPv4 `Local` is the interface's own address (`Address` is the peer on point-to-point
    // links); IPv6 has only `Address`.
    let addr = message
        .attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(a) => Some(*a),
            _ => None,
        })
        .or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            })
        })?;
    Some(Address {
        addr,
        prefix_len: message.header.prefix_len,
        secondary: message
            .header
            .flags
            .contains(rtnetlink::packet_route::address::AddressHeaderFlags::Secondary),
        link_local: message.header.scope == AddressScope::Link,
    })
}

/// Whether an address carries cplbd's `IFA_PROTO` tag.
fn is_tagged(message: &AddressMessage) -> bool {
    message.attributes.iter().any(|a| {
        matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == super::owned::ADDRESS_PROTO)
    })
}

/// A resolved neighbour's address and Ethernet address; `None` for entries being resolved
/// or that failed, and for other link layers.
fn neighbour_of(message: &NeighbourMessage) -> Option<(IpAddr, [u8; 6])> {
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourState};
    let resolved = matches!(
        message.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    );
    if !resolved {
        return None;
    }
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some((*v4).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some((*v6).into());
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(&bytes[..]).ok()
            }
            _ => {}
        }
    }
    Some((ip?, mac?))
}

/// Reads `aa:bb:cc:dd:ee:ff` (or with `-`), case-insensitive.
pub fn parse_mac(text: &str) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    parts.iter().map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None }).collect()
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Every link message of the kernel (a dump), on any rtnetlink handle.
pub(crate) async fn dump_links(handle: &Handle) -> Result<Vec<LinkMessage>, LinkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| LinkError::new("listing interfaces", e))
}

/// Every address message of the kernel (a dump), on any rtnetlink handle.
pub(crate) async fn dump_addresses(handle: &Handle) -> Result<Vec<AddressMessage>, LinkError> {
    handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| LinkError::new("listing addresses", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_in_both_notations_and_reject_garbage() {
        assert_eq!(parse_mac("02:AA:bb:0c:0d:0e"), Some(vec![2, 0xaa, 0xbb, 0x0c, 0x0d, 0x0e]));
        assert_eq!(parse_mac("02-aa-bb-0c-0d-0e"), Some(vec![2, 0xaa, 0xbb, 0x0c, 0x0d, 0x0e]));
        assert_eq!(parse_mac("eth0"), None);
        assert_eq!(parse_mac("02:aa:bb:0c:0d"), None);
        assert_eq!(parse_mac("02:aa:bb:0c:0d:zz"), None);
        assert_eq!(format_mac(&[2, 0xaa, 0, 1, 2, 3]), "02:aa:00:01:02:03");
    }
}
