//! The network's virtual gateway: what a container sees at its default
//! route's address.
//!
//! The switch answers ARP for the gateway address and ICMP echo to it, the
//! two things a container (and an operator's first `ping`) expect of a
//! router. Replies are built by rewriting the request in place, with the
//! checksums updated incrementally. Anything else addressed to the gateway
//! goes to the L3 stage (NAT and DNS plug in there).

use smoltcp::wire::{ArpOperation, Icmpv4Message, Icmpv4Packet, IpProtocol};

use super::action::DropReason;
use super::checksum;
use super::config::{ETH_HEADER_LEN, Gateway};
use super::ingress::{ipv4_at, parse_arp, parse_ipv4};

/// TTL of packets the gateway originates (Linux's default).
const GATEWAY_TTL: u8 = 64;

/// What the gateway made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The frame was rewritten into the reply.
    Replied,
    /// Not something the gateway answers itself.
    NotMine,
    /// Not answerable: dropped for this reason.
    Drop(DropReason),
}

/// Turns an ARP request for the gateway's address into the reply.
pub(crate) fn answer_arp(frame: &mut [u8], gw: Gateway) -> Answer {
    let Some(payload) = frame.get_mut(ETH_HEADER_LEN..) else {
        return Answer::Drop(DropReason::Malformed);
    };
    let mut arp = match parse_arp(payload) {
        Ok(arp) => arp,
        Err(reason) => return Answer::Drop(reason),
    };
    if arp.operation() != ArpOperation::Request || ipv4_at(arp.target_protocol_addr()) != gw.ip {
        return Answer::NotMine;
    }
    let mut asker_mac = [0u8; 6];
    asker_mac.copy_from_slice(arp.source_hardware_addr());
    let mut asker_ip = [0u8; 4];
    asker_ip.copy_from_slice(arp.source_protocol_addr());

    arp.set_operation(ArpOperation::Reply);
    arp.set_source_hardware_addr(&gw.mac.0);
    arp.set_source_protocol_addr(&gw.ip.octets());
    arp.set_target_hardware_addr(&asker_mac);
    arp.set_target_protocol_addr(&asker_ip);
    set_ethernet(frame, asker_mac, gw);
    Answer::Replied
}

/// Turns an ICMP echo request to the gateway's address into the reply, or
/// says why it cannot.
pub(crate) fn answer_ipv4(frame: &mut [u8], gw: Gateway) -> Answer {
    let mut asker_mac = [0u8; 6];
    asker_mac.copy_from_slice(&frame[6..12]);
    let Some(payload) = frame.get_mut(ETH_HEADER_LEN..) else {
        return Answer::Drop(DropReason::Malformed);
    };
    let mut ip = match parse_ipv4(payload) {
        Ok(ip) => ip,
        Err(reason) => return Answer::Drop(reason),
    };
    // Under a fuzzer a wrong checksum must not end the input's run early.
    if !ip.verify_checksum() && !cfg!(fuzzing) {
        return Answer::Drop(DropReason::BadChecksum);
    }
    if ip.dst_addr() != gw.ip || ip.next_header() != IpProtocol::Icmp {
        return Answer::NotMine;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Answer::Drop(DropReason::Fragment);
    }
    {
        let Ok(mut icmp) = Icmpv4Packet::new_checked(ip.payload_mut()) else {
            return Answer::Drop(DropReason::Malformed);
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest {
            return Answer::NotMine;
        }
        if !icmp.verify_checksum() && !cfg!(fuzzing) {
            return Answer::Drop(DropReason::BadChecksum);
        }
        let code = icmp.msg_code();
        let old = u16::from_be_bytes([u8::from(Icmpv4Message::EchoRequest), code]);
        let new = u16::from_be_bytes([u8::from(Icmpv4Message::EchoReply), code]);
        icmp.set_msg_type(Icmpv4Message::EchoReply);
        let sum = checksum::adjust(icmp.checksum(), old, new);
        icmp.set_checksum(sum);
    }
    // Swapping source and destination leaves the header sum unchanged; only
    // the TTL word changes.
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    let proto = u8::from(ip.next_header());
    let old = u16::from_be_bytes([ip.hop_limit(), proto]);
    ip.set_hop_limit(GATEWAY_TTL);
    let sum = checksum::adjust(ip.checksum(), old, u16::from_be_bytes([GATEWAY_TTL, proto]));
    ip.set_checksum(sum);
    set_ethernet(frame, asker_mac, gw);
    Answer::Replied
}

/// Addresses the reply from the gateway back to the asker.
fn set_ethernet(frame: &mut [u8], asker_mac: [u8; 6], gw: Gateway) {
    frame[0..6].copy_from_slice(&asker_mac);
    frame[6..12].copy_from_slice(&gw.mac.0);
}
