//! ARP suppression: a request for a remote IP the control plane knows is
//! answered on this host, so an overlay never floods ARP across hosts.
//!
//! This is what Docker gets from the kernel vxlan device's `proxy` flag
//! (`arp_reduce` in the driver): the reply comes from the remote
//! endpoint's MAC as if it had answered itself. The request frame is
//! rewritten in place into the reply, so no buffer is taken.

use core::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};

use crate::vtep::VtepTable;
use crate::wire::Vni;

/// What became of a frame offered for ARP suppression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpVerdict {
    /// The frame is now the reply: send it back out of the port it came
    /// from.
    Replied {
        /// The address asked for.
        ip: Ipv4Addr,
        /// The MAC answered.
        mac: EthernetAddress,
    },
    /// An ARP request for an address the table does not know: switch it
    /// as usual (a static-file network may still learn it).
    Unknown(Ipv4Addr),
    /// Not an ARP request this answers (other protocol, reply, gratuitous
    /// ARP, a malformed packet, a loopback/multicast/broadcast target): the
    /// frame is untouched.
    NotARequest,
}

/// Rewrites an ARP request in `frame` into the reply for the MAC that
/// `resolve` gives, leaving the frame's length (and any padding) as it was.
pub fn reply_in_place(
    frame: &mut [u8],
    resolve: impl FnOnce(Ipv4Addr) -> Option<EthernetAddress>,
) -> ArpVerdict {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
        return ArpVerdict::NotARequest;
    };
    if eth.ethertype() != EthernetProtocol::Arp {
        return ArpVerdict::NotARequest;
    }
    let Ok(arp) = ArpPacket::new_checked(eth.payload_mut()) else {
        return ArpVerdict::NotARequest;
    };
    let Ok(ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: sha,
        source_protocol_addr: spa,
        target_protocol_addr: tpa,
        ..
    }) = ArpRepr::parse(&arp)
    else {
        return ArpVerdict::NotARequest;
    };
    if spa == tpa
        || tpa.is_loopback()
        || tpa.is_multicast()
        || tpa.is_broadcast()
        || tpa.is_unspecified()
    {
        return ArpVerdict::NotARequest;
    }
    let Some(mac) = resolve(tpa) else {
        return ArpVerdict::Unknown(tpa);
    };
    let reply = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: mac,
        source_protocol_addr: tpa,
        target_hardware_addr: sha,
        target_protocol_addr: spa,
    };
    let mut arp = ArpPacket::new_unchecked(eth.payload_mut());
    reply.emit(&mut arp);
    eth.set_dst_addr(sha);
    eth.set_src_addr(mac);
    ArpVerdict::Replied { ip: tpa, mac }
}

impl VtepTable {
    /// Answers an ARP request from a local endpoint of network `vni` for a
    /// remote IP, in place.
    pub fn suppress_arp(&self, vni: Vni, frame: &mut [u8]) -> ArpVerdict {
        reply_in_place(frame, |ip| self.lookup_ip(vni, ip))
    }
}
