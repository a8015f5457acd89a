//! Interface, address and route configuration through rtnetlink, the
//! protocol `ip` speaks; the daemon never runs `ip` itself.
//!
//! A [`Netlink`] handle is one `NETLINK_ROUTE` socket, and a netlink socket
//! acts on the namespace it was created in for its whole life, whichever
//! thread uses it: [`Netlink::new`] configures the caller's namespace,
//! [`Netlink::in_netns`] another one (the socket is made inside it with
//! [`run_in`]).
//!
//! Each operation is one synchronous request: the message goes out with a
//! fresh sequence number and `NLM_F_ACK`, and the answer is read until the
//! kernel's acknowledgement (or `NLMSG_DONE` for a dump); a negative error
//! code becomes the operation's error, with the errno kept as the
//! `io::Error`'s raw OS error. Answers to other sequence numbers are
//! skipped unparsed.
//!
//! [`Netlink::configure_endpoint`] is what the daemon does for a container:
//! move the device into the sandbox's namespace, name it, address it, route
//! through the gateway, as Docker's bridge driver leaves a container's
//! `eth0`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::MsgFlags;

use crate::ids::MacAddr;
use crate::netns::{Netns, NetnsError, run_in};

/// How long to wait for the kernel's answer before giving up. The kernel
/// answers rtnetlink requests synchronously, so this only bounds a bug.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of `struct nlmsghdr`: no message is shorter.
const NLMSG_HDR_LEN: usize = 16;

/// Longest IPv4 prefix.
const MAX_PREFIX_LEN: u8 = 32;

/// A netlink configuration operation failed. One variant per operation,
/// naming the link and the value it was about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetconfError {
    /// Creating or binding the netlink socket failed.
    #[error("cannot open a netlink socket: {source}")]
    Socket {
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Entering the namespace to create the socket there failed.
    #[error("cannot open a netlink socket in a network namespace: {source}")]
    EnterNetns {
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// Looking up a link by name failed (`ENODEV`: no such link).
    #[error("cannot find link {name}: {source}")]
    LinkIndex {
        /// The link name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Reading a link's counters failed.
    #[error("cannot read the counters of link {name}: {source}")]
    LinkStats {
        /// The link name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Dumping the links failed.
    #[error("cannot list links: {source}")]
    ListLinks {
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Creating a veth pair failed (`EEXIST`: a name is taken).
    #[error("cannot create veth pair {name} and {peer}: {source}")]
    CreateVeth {
        /// The first end.
        name: String,
        /// The peer end.
        peer: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Moving a link into another namespace failed.
    #[error("cannot move link {name} to network namespace {netns}: {source}")]
    MoveLink {
        /// The link name.
        name: String,
        /// The namespace's file.
        netns: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Renaming a link failed (`EBUSY` when it is up, `EEXIST` when the
    /// name is taken).
    #[error("cannot rename link {name} to {new_name}: {source}")]
    Rename {
        /// The link name.
        name: String,
        /// The name asked for.
        new_name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting a link's MAC address failed.
    #[error("cannot set the mac address of link {name} to {mac}: {source}")]
    SetMac {
        /// The link name.
        name: String,
        /// The address asked for.
        mac: MacAddr,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting a link's MTU failed (`EINVAL` when out of the device's
    /// range).
    #[error("cannot set the mtu of link {name} to {mtu}: {source}")]
    SetMtu {
        /// The link name.
        name: String,
        /// The MTU asked for.
        mtu: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Bringing a link up or down failed.
    #[error("cannot bring link {name} {}: {source}", if *up { "up" } else { "down" })]
    SetState {
        /// The link name.
        name: String,
        /// Whether it was to go up.
        up: bool,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting a link's transmit queue length failed.
    #[error("cannot set the transmit queue length of link {name} to {len}: {source}")]
    SetTxQueueLen {
        /// The link name.
        name: String,
        /// The length asked for.
        len: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Setting or clearing a link's `IFF_NOARP` flag failed.
    #[error("cannot turn arp {} on link {name}: {source}", if *on { "on" } else { "off" })]
    SetArp {
        /// The link name.
        name: String,
        /// Whether ARP was to be on.
        on: bool,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A prefix length above 32 was given for an IPv4 address or route.
    #[error("invalid prefix length {prefix_len} for {address}")]
    InvalidPrefix {
        /// The address.
        address: Ipv4Addr,
        /// The prefix length.
        prefix_len: u8,
    },
    /// Adding an address failed (`EEXIST`: it is there already).
    #[error("cannot add address {address}/{prefix_len} to link {name}: {source}")]
    AddAddress {
        /// The link name.
        name: String,
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Adding a route failed (`EEXIST`: one is there already;
    /// `ENETUNREACH`: the gateway is not on a connected network).
    #[error("cannot add route to {destination}/{prefix_len} on link {name}: {source}")]
    AddRoute {
        /// The link name.
        name: String,
        /// The destination network.
        destination: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
        /// The gateway, if any.
        gateway: Option<Ipv4Addr>,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Deleting a link failed.
    #[error("cannot delete link {name}: {source}")]
    DeleteLink {
        /// The link name.
        name: String,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// What a container's interface looks like once configured: the shape
/// Docker gives `eth0` on a bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The name inside the namespace, usually `eth0`.
    pub name: String,
    /// The interface's MAC address.
    pub mac: MacAddr,
    /// The IPv4 address.
    pub address: Ipv4Addr,
    /// The prefix length of the network, e.g. 16 for 172.17.0.0/16.
    pub prefix_len: u8,
    /// The MTU.
    pub mtu: u32,
    /// The default gateway; `None` for an internal network (no default
    /// route).
    pub gateway: Option<Ipv4Addr>,
    /// The transmit queue length; `None` keeps the device's default.
    pub txqueuelen: Option<u32>,
}

/// A synchronous rtnetlink handle bound to one network namespace.
#[derive(Debug)]
pub struct Netlink {
    /// Never cloned: `netlink_sys::Socket` closes its descriptor on drop.
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The last link this handle looked up or renamed, by name: the steps
    /// that configure one device then skip a `RTM_GETLINK` each. Forgotten
    /// when the link leaves the namespace or is deleted through the handle.
    known: Option<(String, u32)>,
}

impl Netlink {
    /// A handle on the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetconfError::Socket`].
    pub fn new() -> Result<Self, NetconfError> {
        let socket = open_socket().map_err(|source| NetconfError::Socket { source })?;
        Ok(Self::with_socket(socket))
    }

    /// A handle on `netns`: the socket is created inside it, on a helper
    /// thread.
    ///
    /// # Errors
    /// [`NetconfError::EnterNetns`], [`NetconfError::Socket`].
    pub fn in_netns(netns: &Netns) -> Result<Self, NetconfError> {
        let socket = run_in(netns, open_socket)
            .map_err(|source| NetconfError::EnterNetns { source })?
            .map_err(|source| NetconfError::Socket { source })?;
        Ok(Self::with_socket(socket))
    }

    fn with_socket(socket: Socket) -> Self {
        Self {
            socket,
            seq: 0,
            buf: vec![0; 32 * 1024],
            known: None,
        }
    }

    /// The index of link `name`.
    ///
    /// # Errors
    /// [`NetconfError::LinkIndex`], with `ENODEV` when there is no such link.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetconfError> {
        self.index(name).map_err(|source| NetconfError::LinkIndex {
            name: name.to_owned(),
            source,
        })
    }

    /// Whether link `name` exists.
    ///
    /// # Errors
    /// [`NetconfError::LinkIndex`] for any failure but `ENODEV`.
    pub fn link_exists(&mut self, name: &str) -> Result<bool, NetconfError> {
        // Asked of the kernel, not of what this handle last saw.
        self.known = None;
        match self.index(name) {
            Ok(_) => Ok(true),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(NetconfError::LinkIndex {
                name: name.to_owned(),
                source,
            }),
        }
    }

    /// The names of all links in the namespace, in index order.
    ///
    /// # Errors
    /// [`NetconfError::ListLinks`].
    pub fn link_names(&mut self) -> Result<Vec<String>, NetconfError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|source| NetconfError::ListLinks { source })?;
        let mut links: Vec<(u32, String)> = replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => {
                    let index = link.header.index;
                    link.attributes.into_iter().find_map(|attr| match attr {
                        LinkAttribute::IfName(name) => Some((index, name)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect();
        links.sort_unstable();
        Ok(links.into_iter().map(|(_, name)| name).collect())
    }

    /// The MAC of link `name`, or `None` when there is no such link (or it
    /// has no hardware address).
    ///
    /// # Errors
    /// [`NetconfError::ListLinks`].
    pub fn link_mac(&mut self, name: &str) -> Result<Option<MacAddr>, NetconfError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|source| NetconfError::ListLinks { source })?;
        for reply in replies {
            let RouteNetlinkMessage::NewLink(link) = reply else {
                continue;
            };
            let named = link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name));
            if named {
                return Ok(link.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Address(bytes) => {
                        <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
                    }
                    _ => None,
                }));
            }
        }
        Ok(None)
    }

    /// Creates a veth pair `name` — `peer`, both down, in this namespace.
    ///
    /// # Errors
    /// [`NetconfError::CreateVeth`].
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NetconfError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetconfError::CreateVeth {
                name: name.to_owned(),
                peer: peer.to_owned(),
                source,
            })
    }

    /// Moves link `name` into `netns`. It keeps its name and goes down; its
    /// addresses and routes are lost.
    ///
    /// # Errors
    /// [`NetconfError::MoveLink`].
    pub fn move_to_netns(&mut self, name: &str, netns: &Netns) -> Result<(), NetconfError> {
        let fd = netns.fd().as_raw_fd();
        let moved = self.set_link(name, |msg| {
            msg.attributes.push(LinkAttribute::NetNsFd(fd));
        });
        self.known = None;
        moved.map_err(|source| NetconfError::MoveLink {
            name: name.to_owned(),
            netns: netns.path().display().to_string(),
            source,
        })
    }

    /// Renames link `name` to `new_name`. The link must be down.
    ///
    /// # Errors
    /// [`NetconfError::Rename`].
    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<(), NetconfError> {
        let renamed = self.set_link(name, |msg| {
            msg.attributes
                .push(LinkAttribute::IfName(new_name.to_owned()));
        });
        self.known = match (renamed.is_ok(), self.known.take()) {
            (true, Some((_, index))) => Some((new_name.to_owned(), index)),
            _ => None,
        };
        renamed.map_err(|source| NetconfError::Rename {
            name: name.to_owned(),
            new_name: new_name.to_owned(),
            source,
        })
    }

    /// Sets the MAC address of link `name`.
    ///
    /// # Errors
    /// [`NetconfError::SetMac`].
    pub fn set_mac(&mut self, name: &str, mac: MacAddr) -> Result<(), NetconfError> {
        self.set_link(name, |msg| {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        })
        .map_err(|source| NetconfError::SetMac {
            name: name.to_owned(),
            mac,
            source,
        })
    }

    /// Sets the MTU of link `name`.
    ///
    /// # Errors
    /// [`NetconfError::SetMtu`].
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), NetconfError> {
        self.set_link(name, |msg| msg.attributes.push(LinkAttribute::Mtu(mtu)))
            .map_err(|source| NetconfError::SetMtu {
                name: name.to_owned(),
                mtu,
                source,
            })
    }

    /// Brings link `name` up (`true`) or down.
    ///
    /// # Errors
    /// [`NetconfError::SetState`].
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), NetconfError> {
        self.set_link(name, |msg| {
            msg.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
            msg.header.change_mask = LinkFlags::Up;
        })
        .map_err(|source| NetconfError::SetState {
            name: name.to_owned(),
            up,
            source,
        })
    }

    /// Sets the transmit queue length of link `name`.
    ///
    /// # Errors
    /// [`NetconfError::SetTxQueueLen`].
    pub fn set_txqueuelen(&mut self, name: &str, len: u32) -> Result<(), NetconfError> {
        self.set_link(name, |msg| {
            msg.attributes.push(LinkAttribute::TxQueueLen(len));
        })
        .map_err(|source| NetconfError::SetTxQueueLen {
            name: name.to_owned(),
            len,
            source,
        })
    }

    /// Turns ARP on or off on link `name` (clears or sets `IFF_NOARP`).
    ///
    /// With ARP off, the host's own stack never answers ARP on the link;
    /// for the host end of a switch port that means the host cannot claim
    /// a container's gateway address when it happens to own it too.
    ///
    /// # Errors
    /// [`NetconfError::SetArp`].
    pub fn set_arp(&mut self, name: &str, on: bool) -> Result<(), NetconfError> {
        self.set_link(name, |msg| {
            msg.header.flags = if on {
                LinkFlags::empty()
            } else {
                LinkFlags::Noarp
            };
            msg.header.change_mask = LinkFlags::Noarp;
        })
        .map_err(|source| NetconfError::SetArp {
            name: name.to_owned(),
            on,
            source,
        })
    }

    /// Adds `address/prefix_len` to link `name`, with the broadcast address
    /// of the network for prefixes up to /30, as Docker does.
    ///
    /// # Errors
    /// [`NetconfError::InvalidPrefix`], [`NetconfError::AddAddress`].
    pub fn add_ipv4_address(
        &mut self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetconfError> {
        let mask = netmask(address, prefix_len)?;
        let fail = |source| NetconfError::AddAddress {
            name: name.to_owned(),
            address,
            prefix_len,
            source,
        };
        let index = self.index(name).map_err(fail)?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.scope = AddressScope::Universe;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(address)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(address)));
        if prefix_len < 31 {
            let broadcast = Ipv4Addr::from_bits(address.to_bits() | !mask);
            msg.attributes.push(AddressAttribute::Broadcast(broadcast));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(fail)
    }

    /// Adds a route to `destination/prefix_len` out of link `name`: through
    /// `gateway`, or directly connected (scope link) without one.
    ///
    /// # Errors
    /// [`NetconfError::InvalidPrefix`], [`NetconfError::AddRoute`].
    pub fn add_ipv4_route(
        &mut self,
        name: &str,
        destination: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    ) -> Result<(), NetconfError> {
        let mask = netmask(destination, prefix_len)?;
        let fail = |source| NetconfError::AddRoute {
            name: name.to_owned(),
            destination,
            prefix_len,
            gateway,
            source,
        };
        let index = self.index(name).map_err(fail)?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix_len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        // RTPROT_BOOT, as `ip route add` and Docker's netlink library.
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = if gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        msg.header.kind = RouteType::Unicast;
        if prefix_len > 0 {
            let network = Ipv4Addr::from_bits(destination.to_bits() & mask);
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(network)));
        }
        if let Some(gateway) = gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
        .map_err(fail)
    }

    /// Adds the default route through `gateway` out of link `name`.
    ///
    /// # Errors
    /// [`NetconfError::AddRoute`].
    pub fn add_default_route(&mut self, name: &str, gateway: Ipv4Addr) -> Result<(), NetconfError> {
        self.add_ipv4_route(name, Ipv4Addr::UNSPECIFIED, 0, Some(gateway))
    }

    /// Deletes link `name` (both ends, for a veth).
    ///
    /// # Errors
    /// [`NetconfError::DeleteLink`], with `ENODEV` when there is no such
    /// link.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetconfError> {
        let fail = |source| NetconfError::DeleteLink {
            name: name.to_owned(),
            source,
        };
        let index = self.index(name).map_err(fail)?;
        self.known = None;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
            .map(drop)
            .map_err(fail)
    }

    /// Moves link `ifname` of this handle's namespace into `netns` and
    /// configures it there as `config` says: renamed, MAC, MTU, transmit
    /// queue length and address set, it and `lo` brought up, and, with a
    /// gateway, a default route through it (after a connected route to the
    /// gateway when the gateway lies outside the address's network).
    ///
    /// Not atomic: on an error the link stays in `netns` as far as it got;
    /// deleting the namespace (or the link) cleans up.
    ///
    /// # Errors
    /// [`NetconfError::InvalidPrefix`] before anything is done; then the
    /// error of the first step that fails.
    pub fn configure_endpoint(
        &mut self,
        netns: &Netns,
        ifname: &str,
        config: &EndpointConfig,
    ) -> Result<(), NetconfError> {
        netmask(config.address, config.prefix_len)?;
        self.move_to_netns(ifname, netns)?;
        Self::in_netns(netns)?.configure_local(ifname, config)
    }

    /// Configures link `ifname` of this handle's namespace as `config`
    /// says, where it is: MAC, MTU, transmit queue length and address set,
    /// renamed, it and `lo` brought up, and, with a gateway, a default route
    /// through it (after a connected route to the gateway when the gateway
    /// lies outside the address's network). The MAC is set before the
    /// rename, so the device is known by its name or by its MAC at every
    /// step.
    ///
    /// Not atomic: on an error the link stays as far as it got.
    ///
    /// # Errors
    /// [`NetconfError::InvalidPrefix`] before anything is done; then the
    /// error of the first step that fails.
    pub fn configure_local(
        &mut self,
        ifname: &str,
        config: &EndpointConfig,
    ) -> Result<(), NetconfError> {
        let mask = netmask(config.address, config.prefix_len)?;
        self.set_mac(ifname, config.mac)?;
        self.set_mtu(ifname, config.mtu)?;
        if let Some(len) = config.txqueuelen {
            self.set_txqueuelen(ifname, len)?;
        }
        self.add_ipv4_address(ifname, config.address, config.prefix_len)?;
        let name = config.name.as_str();
        if name != ifname {
            self.rename(ifname, name)?;
        }
        self.set_up("lo", true)?;
        self.set_up(name, true)?;
        if let Some(gateway) = config.gateway {
            let on_link = (gateway.to_bits() ^ config.address.to_bits()) & mask == 0;
            if !on_link {
                self.add_ipv4_route(name, gateway, MAX_PREFIX_LEN, None)?;
            }
            self.add_default_route(name, gateway)?;
        }
        Ok(())
    }

    /// Sends `RTM_SETLINK` for link `name` after `edit` filled it in.
    fn set_link(&mut self, name: &str, edit: impl FnOnce(&mut LinkMessage)) -> io::Result<()> {
        let index = self.index(name)?;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    /// The index of link `name`, asked with `RTM_GETLINK` by name.
    /// Frames link `name` dropped on transmit (`tx_dropped` of its 64-bit
    /// counters). For a TAP inside a sandbox, these are the sandbox's
    /// frames the device's queue had no room for because its reader (the
    /// switch) fell behind.
    ///
    /// # Errors
    /// [`NetconfError::LinkStats`], with `ENODEV` when there is no such
    /// link or it reports no counters.
    pub fn tx_dropped(&mut self, name: &str) -> Result<u64, NetconfError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(msg), 0)
            .map_err(|source| NetconfError::LinkStats {
                name: name.to_owned(),
                source,
            })?;
        replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => {
                    link.attributes.into_iter().find_map(|attr| match attr {
                        LinkAttribute::Stats64(stats) => Some(stats.tx_dropped),
                        _ => None,
                    })
                }
                _ => None,
            })
            .ok_or_else(|| NetconfError::LinkStats {
                name: name.to_owned(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })
    }

    fn index(&mut self, name: &str) -> io::Result<u32> {
        if let Some((known, index)) = &self.known
            && known == name
        {
            return Ok(*index);
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self.request(RouteNetlinkMessage::GetLink(msg), 0)?;
        let index = replies
            .into_iter()
            .find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        self.known = Some((name.to_owned(), index));
        Ok(index)
    }

    /// Sends one request and collects the answers up to the
    /// acknowledgement, or up to `NLMSG_DONE` for a dump (`NLM_F_DUMP` in
    /// `flags`; the kernel acknowledges no dump).
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        loop {
            let len = self.recv_datagram()?;
            let mut offset = 0;
            while let Some(bytes) = self.buf.get(offset..len).filter(|b| !b.is_empty()) {
                let frame = NetlinkBuffer::new_checked(bytes).map_err(invalid_data)?;
                let msg_len = usize::try_from(frame.length()).map_err(invalid_data)?;
                if msg_len < NLMSG_HDR_LEN {
                    return Err(invalid_data("netlink message shorter than its header"));
                }
                let msg_seq = frame.sequence_number();
                let this = &bytes[..msg_len.min(bytes.len())];
                offset = offset.saturating_add(msg_len.next_multiple_of(4));
                if msg_seq != seq {
                    continue;
                }
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(this)
                    .map_err(invalid_data)?;
                match reply.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(replies),
                            Some(_) => Err(err.to_io()),
                        };
                    }
                    NetlinkPayload::Done(done) => {
                        return if done.code < 0 {
                            Err(io::Error::from_raw_os_error(done.code.saturating_neg()))
                        } else {
                            Ok(replies)
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// Receives one datagram whole into `self.buf`, growing it when the
    /// datagram is larger, and returns its length.
    fn recv_datagram(&mut self) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        let timed_out = |errno: nix::errno::Errno| {
            if errno == nix::errno::Errno::EAGAIN {
                io::Error::new(io::ErrorKind::TimedOut, "no answer from the kernel")
            } else {
                errno.into()
            }
        };
        // MSG_TRUNC makes netlink report the datagram's full length.
        let len = nix::sys::socket::recv(
            fd,
            &mut self.buf[..0],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        )
        .map_err(timed_out)?;
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
        nix::sys::socket::recv(fd, &mut self.buf, MsgFlags::empty()).map_err(timed_out)
    }
}

/// A connected, bound `NETLINK_ROUTE` socket with a receive timeout, in the
/// calling thread's namespace.
fn open_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(socket)
}

/// The netmask of a prefix length, or [`NetconfError::InvalidPrefix`].
fn netmask(address: Ipv4Addr, prefix_len: u8) -> Result<u32, NetconfError> {
    if prefix_len > MAX_PREFIX_LEN {
        return Err(NetconfError::InvalidPrefix {
            address,
            prefix_len,
        });
    }
    Ok(u32::MAX
        .checked_shl(u32::from(MAX_PREFIX_LEN - prefix_len))
        .unwrap_or(0))
}

fn invalid_data(err: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_cover_every_prefix_length() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(netmask(a, 0).unwrap(), 0);
        assert_eq!(netmask(a, 24).unwrap(), 0xffff_ff00);
        assert_eq!(netmask(a, 32).unwrap(), u32::MAX);
        assert!(matches!(
            netmask(a, 33),
            Err(NetconfError::InvalidPrefix { prefix_len: 33, .. })
        ));
    }

    #[test]
    fn error_messages_name_the_link_and_value() {
        let err = NetconfError::SetState {
            name: "eth0".into(),
            up: true,
            source: io::Error::from_raw_os_error(libc::ENODEV),
        };
        assert!(err.to_string().starts_with("cannot bring link eth0 up: "));
        let err = NetconfError::SetMac {
            name: "eth0".into(),
            mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
            source: io::Error::from_raw_os_error(libc::EINVAL),
        };
        assert!(
            err.to_string()
                .starts_with("cannot set the mac address of link eth0 to 02:42:0a:00:00:02: ")
        );
    }
}
