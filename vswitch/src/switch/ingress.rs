//! Checks a frame must pass before the switch learns from it or forwards it.
//!
//! A container may send only as itself: from its assigned MAC and, in ARP
//! and IPv4, from its assigned address. Without this one container could
//! poison the FDB or the other containers' ARP caches and take over a
//! neighbour's traffic (the kernel bridge does not check, Docker relies on
//! nobody trying). Frames that fail are dropped and counted by reason.

use core::net::Ipv4Addr;

use smoltcp::wire::{ArpHardware, ArpPacket, EthernetProtocol, Ipv4Packet};

use super::action::DropReason;
use super::config::ETH_HEADER_LEN;
use crate::buf::VnetHdr;
use crate::ids::MacAddr;

/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherTypes of 802.1Q and 802.1ad tags (and the old pre-standard QinQ).
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// Whether the frame, or each segment a GSO super-frame will be cut into,
/// fits the network's largest frame. `max_frame_len` is the MTU plus the
/// Ethernet header.
pub(crate) fn fits_mtu(frame: &[u8], vnet: &VnetHdr, ethertype: u16, max_frame_len: usize) -> bool {
    let limit = if ETHERTYPE_VLAN.contains(&ethertype) {
        max_frame_len + 4
    } else {
        max_frame_len
    };
    if !vnet.is_gso() {
        return frame.len() <= limit;
    }
    // The virtio header's `hdr_len` is only a hint (Linux fills in the
    // linear part's length), so the headers each segment repeats are
    // measured from the frame itself.
    segment_header_len(frame, ethertype, vnet.gso_type & !VnetHdr::GSO_ECN)
        .is_some_and(|hdr| vnet.gso_size != 0 && hdr + usize::from(vnet.gso_size) <= limit)
}

/// Length of the Ethernet, IP and L4 headers in front of a GSO frame's
/// payload, or `None` when they cannot be read.
fn segment_header_len(frame: &[u8], ethertype: u16, gso_type: u8) -> Option<usize> {
    let l3 = frame.get(ETH_HEADER_LEN..)?;
    let (ip_len, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            (ihl, l3.get(ihl..)?)
        }
        ETHERTYPE_IPV6 => (40, l3.get(40..)?),
        _ => return None,
    };
    let l4_len = match gso_type {
        VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6 => usize::from(l4.get(12)? >> 4) * 4,
        VnetHdr::GSO_UDP | VnetHdr::GSO_UDP_L4 => 8,
        _ => return None,
    };
    Some(ETH_HEADER_LEN + ip_len + l4_len)
}

/// Checks a frame from a container port assigned `mac` and `ipv4`. The
/// Ethernet source has been compared with `mac` already.
pub(crate) fn check_container(
    frame: &[u8],
    ethertype: u16,
    mac: MacAddr,
    ipv4: Option<Ipv4Addr>,
) -> Result<(), DropReason> {
    let payload = frame.get(ETH_HEADER_LEN..).unwrap_or_default();
    match ethertype {
        ETHERTYPE_ARP => {
            let arp = parse_arp(payload)?;
            if arp.source_hardware_addr() != mac.0 {
                return Err(DropReason::SrcMacSpoofed);
            }
            // An ARP probe (RFC 5227) carries sender address 0.0.0.0.
            let spa = ipv4_at(arp.source_protocol_addr());
            if spa != Ipv4Addr::UNSPECIFIED && Some(spa) != ipv4 {
                return Err(DropReason::SrcIpSpoofed);
            }
            Ok(())
        }
        ETHERTYPE_IPV4 => {
            let ip = parse_ipv4(payload)?;
            if Some(ip.src_addr()) != ipv4 {
                return Err(DropReason::SrcIpSpoofed);
            }
            Ok(())
        }
        t if ETHERTYPE_VLAN.contains(&t) => Err(DropReason::VlanTagged),
        _ => Ok(()),
    }
}

/// An ARP packet for IPv4 over Ethernet with every field in bounds.
pub(crate) fn parse_arp<T: AsRef<[u8]>>(payload: T) -> Result<ArpPacket<T>, DropReason> {
    let arp = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    let ipv4_over_ethernet = arp.hardware_type() == ArpHardware::Ethernet
        && arp.protocol_type() == EthernetProtocol::Ipv4
        && arp.hardware_len() == 6
        && arp.protocol_len() == 4;
    if ipv4_over_ethernet {
        Ok(arp)
    } else {
        Err(DropReason::Malformed)
    }
}

/// An IPv4 header whose lengths are consistent with the buffer.
pub(crate) fn parse_ipv4<T: AsRef<[u8]>>(payload: T) -> Result<Ipv4Packet<T>, DropReason> {
    let ip = Ipv4Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    if ip.version() == 4 {
        Ok(ip)
    } else {
        Err(DropReason::Malformed)
    }
}

/// Reads an IPv4 address from a 4-byte ARP field (length checked by
/// [`parse_arp`]).
pub(crate) fn ipv4_at(bytes: &[u8]) -> Ipv4Addr {
    <[u8; 4]>::try_from(bytes).map_or(Ipv4Addr::UNSPECIFIED, Ipv4Addr::from)
}
