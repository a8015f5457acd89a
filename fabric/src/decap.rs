//! Decapsulation: from an outer frame (or a UDP datagram's payload) to the
//! inner frame and its network, with every refusal counted by reason.
//!
//! What arrives here comes from the wire and may be anything: every check
//! is a bounds-checked read, every failure a [`DropReason`], never a panic.
//! The order is the cheapest first and the table last, so a flood of junk
//! costs a few comparisons per packet.
//!
//! Two entry points, for the two ways the datapath receives: a UDP socket
//! hands over the payload and the source address
//! ([`Decapsulator::decap_datagram`]); a packet socket or AF_XDP hands over
//! the whole frame ([`Decapsulator::decap_frame`]), whose outer headers are
//! checked here as the kernel's IP and UDP layers would have.

use core::net::Ipv4Addr;
use core::ops::Range;
use std::time::Instant;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

use crate::buf::Headroom;
use crate::mtu;
use crate::vtep::VtepTable;
use crate::wire::{self, HeaderError, Vni};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $s:literal,)*) => {
        /// Why a received packet was dropped; each has a counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
        pub enum DropReason {
            $($(#[doc = $doc])* #[error($s)] $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: [Self; Self::COUNT] = [$(Self::$name,)*];
            /// How many reasons there are.
            pub const COUNT: usize = [$($s,)*].len();

            /// A stable name for counters, logs and `vsctl`.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => $s,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header.
    OuterTruncated => "outer_truncated",
    /// The outer frame is not IPv4.
    OuterNotIpv4 => "outer_not_ipv4",
    /// The outer IPv4 header is malformed (version, header or total length).
    OuterIpMalformed => "outer_ip_malformed",
    /// The outer IPv4 header checksum is wrong.
    OuterIpChecksum => "outer_ip_checksum",
    /// An outer IPv4 fragment: reassembly belongs to the kernel's UDP
    /// socket path, not to a packet-socket receive.
    OuterFragment => "outer_fragment",
    /// The outer packet is not UDP.
    OuterNotUdp => "outer_not_udp",
    /// The outer destination is not this host's VTEP address.
    OuterNotLocal => "outer_not_local",
    /// The UDP length field disagrees with the packet.
    OuterUdpMalformed => "outer_udp_malformed",
    /// A non-zero UDP checksum that does not verify.
    OuterUdpChecksum => "outer_udp_checksum",
    /// UDP to another port than the configured VXLAN port.
    WrongPort => "wrong_port",
    /// Fewer than 8 bytes of VXLAN header.
    HeaderTruncated => "vxlan_truncated",
    /// The I flag is clear.
    MissingIFlag => "vxlan_no_i_flag",
    /// A reserved bit of the VXLAN header is set.
    ReservedBits => "vxlan_reserved_bits",
    /// No local network has this VNI.
    UnknownVni => "unknown_vni",
    /// The sender is not a VTEP of this network.
    UnknownVtep => "unknown_vtep",
    /// The inner frame is shorter than an Ethernet header.
    InnerTruncated => "inner_truncated",
    /// The inner frame is longer than the network's MTU allows.
    InnerTooLong => "inner_too_long",
    /// The inner source MAC is multicast or zero.
    InnerBadSource => "inner_bad_source",
    /// The inner source MAC does not belong to the sending VTEP.
    SourceNotOwned => "source_not_owned",
}

impl From<HeaderError> for DropReason {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::Truncated => Self::HeaderTruncated,
            HeaderError::MissingIFlag => Self::MissingIFlag,
            HeaderError::ReservedBits => Self::ReservedBits,
        }
    }
}

/// One counter per [`DropReason`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Drops counted for `reason`.
    #[must_use]
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// All drops.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// What the receive path checks against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecapConfig {
    /// The VXLAN UDP port.
    pub port: u16,
    /// This host's VTEP address; when set, whole frames to other addresses
    /// are refused.
    pub local_ip: Option<Ipv4Addr>,
    /// The longest inner frame accepted: the overlay MTU plus an Ethernet
    /// header and a VLAN tag. A kernel peer never sends more, and a
    /// container could not receive more.
    pub max_inner_len: usize,
}

impl Default for DecapConfig {
    fn default() -> Self {
        Self::for_mtu(mtu::DEFAULT_MTU)
    }
}

impl DecapConfig {
    /// The default port, no local address check, inner frames up to `mtu`
    /// plus 18 bytes.
    #[must_use]
    pub fn for_mtu(overlay_mtu: u16) -> Self {
        Self {
            port: wire::DEFAULT_PORT,
            local_ip: None,
            max_inner_len: usize::from(overlay_mtu) + 18,
        }
    }
}

/// An accepted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// Its network.
    pub vni: Vni,
    /// The VTEP it came from.
    pub vtep: Ipv4Addr,
    /// Where the inner Ethernet frame is in the input.
    pub inner: Range<usize>,
}

/// The receive side: checks, counters, and the table's verdict.
#[derive(Clone, Debug, Default)]
pub struct Decapsulator {
    config: DecapConfig,
    drops: DropCounters,
}

/// Under `cargo fuzz` checksums always pass, so random input reaches the
/// code behind them.
const fn checksum_ok(ok: bool) -> bool {
    cfg!(fuzzing) || ok
}

impl Decapsulator {
    /// A receive side with `config`.
    #[must_use]
    pub fn new(config: DecapConfig) -> Self {
        Self {
            config,
            drops: DropCounters::default(),
        }
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &DecapConfig {
        &self.config
    }

    /// Drops so far, by reason.
    #[must_use]
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// A UDP datagram's payload from `src` (the kernel already checked the
    /// outer headers and the port).
    pub fn decap_datagram(
        &mut self,
        table: &mut VtepTable,
        now: Instant,
        src: Ipv4Addr,
        payload: &[u8],
    ) -> Result<Decapsulated, DropReason> {
        let r = self.check_vxlan(table, now, src, payload);
        if let Err(reason) = r {
            self.drops.count(reason);
            table.record_drop(src);
        }
        r.map(|(vni, inner)| Decapsulated {
            vni,
            vtep: src,
            inner,
        })
    }

    /// A whole outer frame: Ethernet, IPv4, UDP, VXLAN, inner frame.
    pub fn decap_frame(
        &mut self,
        table: &mut VtepTable,
        now: Instant,
        frame: &[u8],
    ) -> Result<Decapsulated, DropReason> {
        let (src, udp_payload) = match self.check_outer(frame) {
            Ok(v) => v,
            Err(reason) => {
                self.drops.count(reason);
                return Err(reason);
            }
        };
        let base = udp_payload.start;
        let mut d = self.decap_datagram(table, now, src, &frame[udp_payload])?;
        d.inner = d.inner.start + base..d.inner.end + base;
        Ok(d)
    }

    /// [`Decapsulator::decap_frame`] on a buffer, leaving only the inner
    /// frame in it (the outer bytes become headroom, nothing is copied).
    pub fn decap_in_place<B: Headroom + ?Sized>(
        &mut self,
        table: &mut VtepTable,
        now: Instant,
        buf: &mut B,
    ) -> Result<(Vni, Ipv4Addr), DropReason> {
        let d = self.decap_frame(table, now, buf.frame())?;
        // The inner frame runs to the UDP length: padding the outer frame
        // carried is cut too.
        let _ = buf.pull_front(d.inner.start);
        buf.truncate(d.inner.len());
        Ok((d.vni, d.vtep))
    }

    /// Outer Ethernet/IPv4/UDP checks; the outer source and where the UDP
    /// payload is.
    fn check_outer(&self, frame: &[u8]) -> Result<(Ipv4Addr, Range<usize>), DropReason> {
        let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::OuterTruncated)?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return Err(DropReason::OuterNotIpv4);
        }
        let ip =
            Ipv4Packet::new_checked(eth.payload()).map_err(|_| DropReason::OuterIpMalformed)?;
        if ip.version() != 4 || ip.header_len() < 20 {
            return Err(DropReason::OuterIpMalformed);
        }
        if !checksum_ok(ip.verify_checksum()) {
            return Err(DropReason::OuterIpChecksum);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(DropReason::OuterFragment);
        }
        if ip.next_header() != IpProtocol::Udp {
            return Err(DropReason::OuterNotUdp);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if self.config.local_ip.is_some_and(|l| l != dst) {
            return Err(DropReason::OuterNotLocal);
        }
        let udp =
            UdpPacket::new_checked(ip.payload()).map_err(|_| DropReason::OuterUdpMalformed)?;
        if udp.dst_port() != self.config.port {
            return Err(DropReason::WrongPort);
        }
        if udp.checksum() != 0
            && !checksum_ok(udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)))
        {
            return Err(DropReason::OuterUdpChecksum);
        }
        let start = EthernetFrame::<&[u8]>::header_len() + usize::from(ip.header_len()) + 8;
        let end = start + udp.payload().len();
        Ok((src, start..end))
    }

    /// VXLAN header, inner frame, table; the VNI and where the inner frame
    /// is in `payload`.
    fn check_vxlan(
        &self,
        table: &mut VtepTable,
        now: Instant,
        src: Ipv4Addr,
        payload: &[u8],
    ) -> Result<(Vni, Range<usize>), DropReason> {
        let packet = wire::Packet::new_checked(payload)?;
        let repr = wire::Repr::parse(&packet)?;
        let inner = packet.payload();
        if inner.len() < 14 {
            return Err(DropReason::InnerTruncated);
        }
        if inner.len() > self.config.max_inner_len {
            return Err(DropReason::InnerTooLong);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&inner[6..12]);
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(DropReason::InnerBadSource);
        }
        table.accept_rx(
            now,
            repr.vni,
            src,
            smoltcp::wire::EthernetAddress(mac),
            inner.len(),
        )?;
        Ok((repr.vni, wire::HEADER_LEN..payload.len()))
    }
}
