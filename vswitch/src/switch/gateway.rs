//! The network's virtual gateway: what a container sees at its default
//! route's address.
//!
//! The switch answers ARP for the gateway address and ICMP echo to it, the
//! two things a container (and an operator's first `ping`) expect of a
//! router. Replies are built by rewriting the request in place, with the
//! checksums updated incrementally. Anything else addressed to the gateway
//! goes to the L3 stage (NAT and DNS plug in there).

use smoltcp::wire::{
    ArpOperation, ArpPacket, ETHERNET_HEADER_LEN, Icmpv4Message, Icmpv4Packet, IpProtocol,
    Ipv4Packet,
};

use super::action::DropReason;
use super::checksum;
use super::config::Gateway;
use super::parse::{L3, ParsedFrame};

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
pub(crate) fn answer_arp(frame: &mut [u8], parsed: &ParsedFrame, gw: Gateway) -> Answer {
    let L3::Arp(arp) = parsed.l3 else {
        return Answer::Drop(DropReason::Malformed);
    };
    if arp.operation != ArpOperation::Request || arp.target_ip != gw.ip {
        return Answer::NotMine;
    }
    let Some(payload) = frame.get_mut(ETHERNET_HEADER_LEN..) else {
        return Answer::Drop(DropReason::Malformed);
    };
    // Parsing checked the lengths, so the unchecked view stays in bounds.
    let mut view = ArpPacket::new_unchecked(payload);
    view.set_operation(ArpOperation::Reply);
    view.set_source_hardware_addr(&gw.mac.0);
    view.set_source_protocol_addr(&gw.ip.octets());
    view.set_target_hardware_addr(&arp.sender_mac.0);
    view.set_target_protocol_addr(&arp.sender_ip.octets());
    set_ethernet(frame, arp.sender_mac.0, gw);
    Answer::Replied
}

/// Turns an ICMP echo request to the gateway's address into the reply, or
/// says why it cannot.
pub(crate) fn answer_ipv4(frame: &mut [u8], parsed: &ParsedFrame, gw: Gateway) -> Answer {
    let L3::Ipv4(ip) = parsed.l3 else {
        return Answer::Drop(DropReason::Malformed);
    };
    let asker_mac = parsed.src.0;
    let Some(payload) = frame.get_mut(ETHERNET_HEADER_LEN..) else {
        return Answer::Drop(DropReason::Malformed);
    };
    // Parsing checked every length of the header.
    let mut view = Ipv4Packet::new_unchecked(payload);
    if !view.verify_checksum() {
        return Answer::Drop(DropReason::BadChecksum);
    }
    if ip.dst != gw.ip || ip.protocol != IpProtocol::Icmp {
        return Answer::NotMine;
    }
    if ip.fragment {
        return Answer::Drop(DropReason::Fragment);
    }
    {
        let Ok(mut icmp) = Icmpv4Packet::new_checked(view.payload_mut()) else {
            return Answer::Drop(DropReason::Malformed);
        };
        if icmp.msg_type() != Icmpv4Message::EchoRequest {
            return Answer::NotMine;
        }
        if !icmp.verify_checksum() {
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
    view.set_src_addr(ip.dst);
    view.set_dst_addr(ip.src);
    let proto = u8::from(ip.protocol);
    let old = u16::from_be_bytes([ip.ttl, proto]);
    view.set_hop_limit(GATEWAY_TTL);
    let sum = checksum::adjust(
        view.checksum(),
        old,
        u16::from_be_bytes([GATEWAY_TTL, proto]),
    );
    view.set_checksum(sum);
    set_ethernet(frame, asker_mac, gw);
    Answer::Replied
}

/// Addresses the reply from the gateway back to the asker.
fn set_ethernet(frame: &mut [u8], asker_mac: [u8; 6], gw: Gateway) {
    frame[0..6].copy_from_slice(&asker_mac);
    frame[6..12].copy_from_slice(&gw.mac.0);
}
