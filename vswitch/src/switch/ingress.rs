//! Checks a frame must pass before the switch learns from it or forwards it.
//!
//! A container may send only as itself: from its assigned MAC and, in ARP
//! and IPv4, from its assigned address. Without this one container could
//! poison the FDB or the other containers' ARP caches and take over a
//! neighbour's traffic (the kernel bridge does not check, Docker relies on
//! nobody trying). Frames that fail are dropped and counted by reason.

use core::net::Ipv4Addr;

use super::action::DropReason;
use super::parse::{L3, ParsedFrame, VLAN_TAG_LEN};
use crate::ids::MacAddr;

/// Whether the frame, or each segment a GSO super-frame will be cut into,
/// fits the network's largest frame. `max_frame_len` is the MTU plus the
/// Ethernet header.
pub(crate) fn fits_mtu(frame: &ParsedFrame, max_frame_len: usize) -> bool {
    let limit = if frame.is_vlan() {
        max_frame_len + VLAN_TAG_LEN
    } else {
        max_frame_len
    };
    if !frame.vnet.is_gso() {
        return frame.len <= limit;
    }
    // The virtio header's `hdr_len` is only a hint (Linux fills in the
    // linear part's length), so the headers each segment repeats are
    // measured from the frame itself.
    frame.segment_header_len().is_some_and(|hdr| {
        frame.vnet.gso_size != 0 && hdr + usize::from(frame.vnet.gso_size) <= limit
    })
}

/// Checks a frame from a container port assigned `mac` and `ipv4`. The
/// Ethernet source has been compared with `mac` already, and the network
/// layer parsed ([`ParsedFrame::ensure_l3`]).
pub(crate) fn check_container(
    frame: &ParsedFrame,
    mac: MacAddr,
    ipv4: Option<Ipv4Addr>,
) -> Result<(), DropReason> {
    match frame.l3 {
        L3::Arp(arp) => {
            if arp.sender_mac != mac {
                return Err(DropReason::SrcMacSpoofed);
            }
            // An ARP probe (RFC 5227) carries sender address 0.0.0.0.
            if arp.sender_ip != Ipv4Addr::UNSPECIFIED && Some(arp.sender_ip) != ipv4 {
                return Err(DropReason::SrcIpSpoofed);
            }
            Ok(())
        }
        L3::Ipv4(ip) => {
            if Some(ip.src) != ipv4 {
                return Err(DropReason::SrcIpSpoofed);
            }
            Ok(())
        }
        L3::Vlan => Err(DropReason::VlanTagged),
        // IPv6 is not checked yet (the switch has no IPv6 addresses for its
        // ports); a malformed IPv6 header passes as it did before parsing.
        L3::Malformed if frame.ethertype != smoltcp::wire::EthernetProtocol::Ipv6 => {
            Err(DropReason::Malformed)
        }
        _ => Ok(()),
    }
}
