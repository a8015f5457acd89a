//! Software segmentation and checksum completion, checked against
//! etherparse's independent parsing and checksums.

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, LinkExtHeader,
    NetHeaders, PacketHeaders, SingleVlanHeader, TcpHeader, TcpOptionElement, TransportHeader,
    UdpHeader, VlanId, VlanPcp,
};
use proptest::prelude::*;
use vswitch::buf::{HEADROOM, PacketBuf, VnetHdr};
use vswitch::gso::{
    GsoError, Segmenter, UDP_MAX_SEGMENTS, complete_checksum, partial_checksum, segment,
};

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SRC4: [u8; 4] = [172, 18, 0, 2];
const DST4: [u8; 4] = [172, 18, 0, 3];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
/// Close to the wrap, so segmentation must wrap the sequence number.
const SEQ: u32 = 0xffff_f000;
/// Close to the wrap, so segmentation must wrap the identification.
const IP_ID: u16 = 0xfff0;

/// Which super-frame to build.
#[derive(Debug, Clone, Copy)]
struct Spec {
    v6: bool,
    udp: bool,
    vlan: bool,
}

const TCP4: Spec = Spec {
    v6: false,
    udp: false,
    vlan: false,
};
const TCP6: Spec = Spec {
    v6: true,
    udp: false,
    vlan: false,
};
const UDP4: Spec = Spec {
    v6: false,
    udp: true,
    vlan: false,
};
const UDP6: Spec = Spec {
    v6: true,
    udp: true,
    vlan: false,
};

impl Spec {
    fn l3(self) -> usize {
        if self.vlan { 18 } else { 14 }
    }

    fn l4(self) -> usize {
        self.l3() + if self.v6 { 40 } else { 20 }
    }

    /// TCP carries a timestamp option (12 bytes with padding), as Linux's do.
    fn l4_header_len(self) -> usize {
        if self.udp { 8 } else { 32 }
    }

    fn csum_offset(self) -> usize {
        if self.udp { 6 } else { 16 }
    }

    fn gso_type(self) -> u8 {
        match (self.udp, self.v6) {
            (true, _) => VnetHdr::GSO_UDP_L4,
            (false, false) => VnetHdr::GSO_TCPV4,
            (false, true) => VnetHdr::GSO_TCPV6,
        }
    }

    /// The header Linux attaches: partial checksum, and `hdr_len` set to
    /// the linear length rather than the header length.
    fn vnet(self, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: self.gso_type(),
            hdr_len: 1234,
            gso_size: mss,
            csum_start: u16::try_from(self.l4()).unwrap(),
            csum_offset: u16::try_from(self.csum_offset()).unwrap(),
        }
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 251) % 256).unwrap())
        .collect()
}

/// A frame with complete, correct checksums (TCP with ACK, PSH, FIN, CWR
/// and ECE set).
fn build(spec: Spec, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let ip_type = if spec.v6 {
        EtherType::IPV6
    } else {
        EtherType::IPV4
    };
    Ethernet2Header {
        source: SRC_MAC,
        destination: DST_MAC,
        ether_type: if spec.vlan {
            EtherType::VLAN_TAGGED_FRAME
        } else {
            ip_type
        },
    }
    .write(&mut f)
    .unwrap();
    if spec.vlan {
        SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: VlanId::try_new(42).unwrap(),
            ether_type: ip_type,
        }
        .write(&mut f)
        .unwrap();
    }
    let proto = if spec.udp {
        IpNumber::UDP
    } else {
        IpNumber::TCP
    };
    let l4_len = u16::try_from(spec.l4_header_len() + payload.len()).unwrap();
    let mut tcp = TcpHeader::new(40000, 80, SEQ, 512);
    tcp.ack = true;
    tcp.acknowledgment_number = 77;
    tcp.psh = true;
    tcp.fin = true;
    tcp.cwr = true;
    tcp.ece = true;
    tcp.set_options(&[TcpOptionElement::Timestamp(1, 2)])
        .unwrap();
    let mut udp = UdpHeader {
        source_port: 5000,
        destination_port: 443,
        length: l4_len,
        checksum: 0,
    };
    if spec.v6 {
        let ip = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: l4_len,
            next_header: proto,
            hop_limit: 64,
            source: SRC6,
            destination: DST6,
        };
        tcp.checksum = tcp.calc_checksum_ipv6(&ip, payload).unwrap();
        udp.checksum = udp.calc_checksum_ipv6(&ip, payload).unwrap();
        ip.write(&mut f).unwrap();
    } else {
        let mut ip = Ipv4Header::new(l4_len, 64, proto, SRC4, DST4).unwrap();
        ip.identification = IP_ID;
        ip.dont_fragment = true;
        ip.header_checksum = ip.calc_header_checksum();
        tcp.checksum = tcp.calc_checksum_ipv4(&ip, payload).unwrap();
        udp.checksum = udp.calc_checksum_ipv4(&ip, payload).unwrap();
        ip.write(&mut f).unwrap();
    }
    if spec.udp {
        udp.write(&mut f).unwrap();
    } else {
        tcp.write(&mut f).unwrap();
    }
    f.extend_from_slice(payload);
    f
}

/// Folded one's-complement sum of big-endian words (no complement).
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Replaces the L4 checksum with the pseudo-header sum, as Linux leaves it
/// for `CHECKSUM_PARTIAL` (`~csum_tcpudp_magic(.., 0)`).
fn make_partial(frame: &mut [u8], spec: Spec) {
    let l3 = spec.l3();
    let l4 = spec.l4();
    let addrs = if spec.v6 {
        &frame[l3 + 8..l3 + 40]
    } else {
        &frame[l3 + 12..l3 + 20]
    };
    let proto = if spec.udp { 17 } else { 6 };
    let len = u32::try_from(frame.len() - l4).unwrap();
    let pseudo = u16::try_from(sum16(addrs, proto + len)).unwrap();
    let at = l4 + spec.csum_offset();
    frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
}

/// A super-frame as a container's kernel hands it over.
fn super_frame(spec: Spec, payload: &[u8]) -> Vec<u8> {
    let mut f = build(spec, payload);
    make_partial(&mut f, spec);
    f
}

fn run(frame: &[u8], vnet: VnetHdr) -> Result<Vec<Vec<u8>>, GsoError> {
    let mut src = PacketBuf::from_frame(frame).unwrap();
    src.vnet = vnet;
    let mut out = PacketBuf::new();
    let mut segs = Vec::new();
    let n = segment(&src, &mut out, |seg| {
        assert_eq!(seg.vnet, VnetHdr::default());
        assert_eq!(seg.headroom(), HEADROOM);
        segs.push(seg.frame().to_vec());
    })?;
    assert_eq!(n, segs.len());
    Ok(segs)
}

/// Checks every segment against the super-frame, returning a description
/// of the first discrepancy (for proptest) or `Ok`.
fn verify(spec: Spec, original: &[u8], mss: usize, segs: &[Vec<u8>]) -> Result<(), String> {
    let orig = PacketHeaders::from_ethernet_slice(original).map_err(|e| e.to_string())?;
    let orig_payload = orig.payload.slice();
    let expected = orig_payload.len().div_ceil(mss).max(1);
    if segs.len() != expected {
        return Err(format!("{} segments, expected {expected}", segs.len()));
    }
    let header_len = spec.l4() + spec.l4_header_len();
    let mut reassembled = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == segs.len();
        let h = PacketHeaders::from_ethernet_slice(seg).map_err(|e| format!("seg {i}: {e}"))?;
        let data = h.payload.slice();
        if data.len() > mss || (!last && data.len() != mss) {
            return Err(format!("seg {i}: {} payload bytes", data.len()));
        }
        if seg.len() != header_len + data.len() {
            return Err(format!("seg {i}: frame of {} bytes", seg.len()));
        }
        if h.link != orig.link || h.link_exts != orig.link_exts {
            return Err(format!("seg {i}: link headers differ"));
        }
        if spec.vlan && !matches!(h.link_exts.first(), Some(LinkExtHeader::Vlan(_))) {
            return Err(format!("seg {i}: VLAN tag lost"));
        }
        let net = h.net.clone().ok_or("no IP header")?;
        let transport = h.transport.clone().ok_or("no transport header")?;
        let l4_len = spec.l4_header_len() + data.len();
        let checksum_ok = match (&net, &transport) {
            (NetHeaders::Ipv4(ip, _), _) => {
                let Some(NetHeaders::Ipv4(o, _)) = &orig.net else {
                    return Err("version changed".into());
                };
                if ip.header_checksum != ip.calc_header_checksum() {
                    return Err(format!("seg {i}: IP header checksum"));
                }
                let id = IP_ID.wrapping_add(u16::try_from(i).unwrap());
                if ip.identification != id {
                    return Err(format!("seg {i}: IP id {:#x}", ip.identification));
                }
                if usize::from(ip.total_len) != 20 + l4_len {
                    return Err(format!("seg {i}: IP total length {}", ip.total_len));
                }
                let mut same = ip.clone();
                same.identification = o.identification;
                same.total_len = o.total_len;
                same.header_checksum = o.header_checksum;
                if &same != o {
                    return Err(format!("seg {i}: other IPv4 fields changed"));
                }
                match &transport {
                    TransportHeader::Tcp(t) => {
                        t.checksum == t.calc_checksum_ipv4(ip, data).unwrap()
                    }
                    TransportHeader::Udp(u) => {
                        u.checksum == u.calc_checksum_ipv4(ip, data).unwrap()
                    }
                    _ => return Err("transport".into()),
                }
            }
            (NetHeaders::Ipv6(ip, _), _) => {
                let Some(NetHeaders::Ipv6(o, _)) = &orig.net else {
                    return Err("version changed".into());
                };
                if usize::from(ip.payload_length) != l4_len {
                    return Err(format!("seg {i}: IPv6 payload length"));
                }
                let mut same = ip.clone();
                same.payload_length = o.payload_length;
                if &same != o {
                    return Err(format!("seg {i}: other IPv6 fields changed"));
                }
                match &transport {
                    TransportHeader::Tcp(t) => {
                        t.checksum == t.calc_checksum_ipv6(ip, data).unwrap()
                    }
                    TransportHeader::Udp(u) => {
                        u.checksum == u.calc_checksum_ipv6(ip, data).unwrap()
                    }
                    _ => return Err("transport".into()),
                }
            }
            (NetHeaders::Arp(_), _) => return Err("ARP".into()),
        };
        if !checksum_ok {
            return Err(format!("seg {i}: L4 checksum"));
        }
        match (&transport, &orig.transport) {
            (TransportHeader::Tcp(t), Some(TransportHeader::Tcp(o))) => {
                let offset = u32::try_from(reassembled.len()).unwrap();
                if t.sequence_number != o.sequence_number.wrapping_add(offset) {
                    return Err(format!("seg {i}: seq {:#x}", t.sequence_number));
                }
                if t.fin != (last && o.fin) || t.psh != (last && o.psh) {
                    return Err(format!("seg {i}: FIN/PSH"));
                }
                if t.cwr != (first && o.cwr) {
                    return Err(format!("seg {i}: CWR"));
                }
                let mut same = t.clone();
                same.sequence_number = o.sequence_number;
                same.fin = o.fin;
                same.psh = o.psh;
                same.cwr = o.cwr;
                same.checksum = o.checksum;
                if &same != o {
                    return Err(format!("seg {i}: other TCP fields changed"));
                }
            }
            (TransportHeader::Udp(u), Some(TransportHeader::Udp(o))) => {
                if usize::from(u.length) != l4_len {
                    return Err(format!("seg {i}: UDP length {}", u.length));
                }
                if (u.source_port, u.destination_port) != (o.source_port, o.destination_port) {
                    return Err(format!("seg {i}: UDP ports"));
                }
            }
            _ => return Err(format!("seg {i}: transport changed")),
        }
        reassembled.extend_from_slice(data);
    }
    if reassembled != orig_payload {
        return Err("payloads do not reassemble to the original".into());
    }
    Ok(())
}

fn segments_verify(spec: Spec, payload_len: usize, mss: u16) -> Vec<Vec<u8>> {
    let frame = super_frame(spec, &payload(payload_len));
    let segs = run(&frame, spec.vnet(mss)).unwrap();
    verify(spec, &frame, usize::from(mss), &segs).unwrap();
    segs
}

#[test]
fn tcpv4_super_frame_becomes_mss_sized_segments() {
    let segs = segments_verify(TCP4, 60_000, 1448);
    assert_eq!(segs.len(), 60_000_usize.div_ceil(1448));
    assert_eq!(segs.len(), 42);
    assert_eq!(segs[0].len(), 14 + 20 + 32 + 1448);
}

#[test]
fn tcpv6_super_frame_becomes_mss_sized_segments() {
    let segs = segments_verify(TCP6, 60_000, 1428);
    assert_eq!(segs.len(), 60_000_usize.div_ceil(1428));
}

#[test]
fn udp_l4_super_frames_become_whole_datagrams() {
    assert_eq!(segments_verify(UDP4, 60_000, 1472).len(), 41);
    assert_eq!(segments_verify(UDP6, 60_000, 1452).len(), 42);
}

#[test]
fn vlan_tagged_super_frames_keep_their_tag() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        let spec = Spec { vlan: true, ..spec };
        segments_verify(spec, 10_000, 1400);
    }
}

#[test]
fn ecn_bit_is_accepted() {
    let frame = super_frame(TCP4, &payload(5000));
    let mut vnet = TCP4.vnet(1000);
    vnet.gso_type |= VnetHdr::GSO_ECN;
    let segs = run(&frame, vnet).unwrap();
    verify(TCP4, &frame, 1000, &segs).unwrap();
}

#[test]
fn odd_mss_and_odd_last_segment_checksum_right() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        segments_verify(spec, 9999, 1001);
    }
}

#[test]
fn payload_within_one_segment_yields_one_complete_frame() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        assert_eq!(segments_verify(spec, 1000, 1448).len(), 1);
        assert_eq!(segments_verify(spec, 1448, 1448).len(), 1);
        assert_eq!(segments_verify(spec, 0, 1448).len(), 1);
    }
}

#[test]
fn trailing_padding_is_not_payload() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        let frame = super_frame(spec, &payload(3000));
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0xee; 7]);
        assert_eq!(
            run(&padded, spec.vnet(1000)).unwrap(),
            run(&frame, spec.vnet(1000)).unwrap()
        );
    }
}

#[test]
fn super_frame_without_needs_csum_is_segmented_the_same() {
    let frame = super_frame(TCP4, &payload(5000));
    let mut vnet = TCP4.vnet(1448);
    vnet.flags = 0;
    vnet.csum_start = 0;
    vnet.csum_offset = 0;
    assert_eq!(
        run(&frame, vnet).unwrap(),
        run(&frame, TCP4.vnet(1448)).unwrap()
    );
}

#[test]
fn segmenter_hands_out_segments_into_any_buffer_and_can_stop() {
    let frame = super_frame(TCP4, &payload(5000));
    let vnet = TCP4.vnet(1000);
    let mut s = Segmenter::new(&frame, &vnet).unwrap();
    assert_eq!(s.segments(), 5);
    assert_eq!(s.header_len(), 14 + 20 + 32);
    let (mut a, mut b) = (PacketBuf::new(), PacketBuf::new());
    assert!(s.next_into(&mut a));
    assert!(s.next_into(&mut b));
    assert_eq!(s.remaining(), 3);
    let first = PacketHeaders::from_ethernet_slice(a.frame()).unwrap();
    let second = PacketHeaders::from_ethernet_slice(b.frame()).unwrap();
    let seq = |h: &PacketHeaders<'_>| match &h.transport {
        Some(TransportHeader::Tcp(t)) => t.sequence_number,
        _ => panic!("not TCP"),
    };
    assert_eq!(seq(&second), seq(&first).wrapping_add(1000));
    // A segment handed over can still take a tunnel header in front, and
    // the next one is written at full headroom regardless.
    assert!(b.push_front(50).is_some());
    assert!(s.next_into(&mut b));
    assert_eq!(b.headroom(), HEADROOM);
}

#[test]
fn headers_apart_and_payload_in_place_make_the_same_segments() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        for (len, mss) in [(5000, 1000), (4999, 999), (3, 1), (0, 1448), (9001, 1448)] {
            let frame = super_frame(spec, &payload(len));
            let vnet = spec.vnet(mss);
            let want = run(&frame, vnet).unwrap();
            let mut s = Segmenter::new(&frame, &vnet).unwrap();
            let hlen = s.header_len();
            assert_eq!(s.mss(), usize::from(mss));
            // Too short a head: nothing written, nothing consumed.
            let mut short = vec![0u8; hlen - 1];
            assert!(s.next_headers_into(&mut short).is_none());
            let mut got = Vec::new();
            let mut head = vec![0u8; hlen + 7];
            while let Some(body) = s.next_headers_into(&mut head) {
                let mut seg = head[..hlen].to_vec();
                seg.extend_from_slice(&frame[body]);
                got.push(seg);
            }
            assert_eq!(got, want, "{spec:?} len {len} mss {mss}");
        }
    }
}

#[test]
fn partial_checksum_names_what_complete_checksum_stores() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        for len in [0, 1, 101, 1448] {
            let want = build(spec, &payload(len));
            let mut frame = want.clone();
            make_partial(&mut frame, spec);
            let mut vnet = spec.vnet(0);
            vnet.gso_type = VnetHdr::GSO_NONE;
            let (at, sum) = partial_checksum(&frame, &vnet).unwrap().unwrap();
            assert_eq!(at, spec.l4() + spec.csum_offset());
            assert_eq!(&want[at..at + 2], &sum.to_be_bytes(), "{spec:?} len {len}");
            vnet.flags = 0;
            assert_eq!(partial_checksum(&frame, &vnet), Ok(None));
        }
    }
}

#[test]
fn complete_checksum_matches_etherparse_for_tcp_and_udp_over_v4_and_v6() {
    for spec in [TCP4, TCP6, UDP4, UDP6] {
        for len in [0, 1, 2, 3, 100, 1447, 1448, 9001] {
            let want = build(spec, &payload(len));
            let mut frame = want.clone();
            make_partial(&mut frame, spec);
            let mut vnet = spec.vnet(0);
            vnet.gso_type = VnetHdr::GSO_NONE;
            complete_checksum(&mut frame, &vnet).unwrap();
            assert_eq!(frame, want, "{spec:?} len {len}");
        }
    }
}

#[test]
fn complete_checksum_stores_a_zero_udp_checksum_as_ffff() {
    for spec in [UDP4, UDP6, TCP4, TCP6] {
        // Choose the last payload word so that the data sums to 0xffff:
        // the complement is zero, which UDP must send as 0xffff.
        let mut data = payload(100);
        data[98..].fill(0);
        let zeroed = build(spec, &data);
        let at = spec.l4() + spec.csum_offset();
        let c = u16::from_be_bytes([zeroed[at], zeroed[at + 1]]);
        let c = if c == 0xffff && spec.udp { 0 } else { c };
        data[98..].copy_from_slice(&c.to_be_bytes());
        let want = build(spec, &data);
        let stored = u16::from_be_bytes([want[at], want[at + 1]]);
        assert_eq!(stored, if spec.udp { 0xffff } else { 0 }, "{spec:?}");
        let mut frame = want.clone();
        make_partial(&mut frame, spec);
        let mut vnet = spec.vnet(0);
        vnet.gso_type = VnetHdr::GSO_NONE;
        complete_checksum(&mut frame, &vnet).unwrap();
        assert_eq!(frame, want, "{spec:?}");
    }
}

#[test]
fn udp_segment_whose_checksum_comes_out_zero_carries_ffff() {
    for spec in [UDP4, UDP6] {
        // The first segment is the datagram `build` makes of its payload;
        // pick its last word so that its data sums to 0xffff.
        let mut first = payload(100);
        first[98..].fill(0);
        let at = spec.l4() + 6;
        let alone = build(spec, &first);
        let c = u16::from_be_bytes([alone[at], alone[at + 1]]);
        let c = if c == 0xffff { 0 } else { c };
        first[98..].copy_from_slice(&c.to_be_bytes());
        let mut data = first;
        data.extend_from_slice(&payload(100));
        let frame = super_frame(spec, &data);
        let segs = run(&frame, spec.vnet(100)).unwrap();
        verify(spec, &frame, 100, &segs).unwrap();
        assert_eq!(&segs[0][at..at + 2], &[0xff, 0xff], "{spec:?}");
    }
}

#[test]
fn complete_checksum_leaves_frames_without_needs_csum_alone() {
    let mut frame = super_frame(TCP4, &payload(100));
    let before = frame.clone();
    complete_checksum(&mut frame, &VnetHdr::default()).unwrap();
    assert_eq!(frame, before);
}

#[test]
fn complete_checksum_rejects_bad_offsets_and_super_frames() {
    let mut frame = super_frame(TCP4, &payload(100));
    let len = frame.len();
    let before = frame.clone();
    let csum = |start: usize, offset: usize| VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: u16::try_from(start).unwrap(),
        csum_offset: u16::try_from(offset).unwrap(),
        ..VnetHdr::default()
    };
    assert_eq!(
        complete_checksum(&mut frame, &csum(len + 1, 0)),
        Err(GsoError::CsumStartBeyondFrame {
            start: len + 1,
            len
        })
    );
    assert_eq!(
        complete_checksum(&mut frame, &csum(34, len - 34 - 1)),
        Err(GsoError::CsumFieldBeyondFrame { at: len - 1, len })
    );
    assert_eq!(
        complete_checksum(&mut frame, &csum(len, 0)),
        Err(GsoError::CsumFieldBeyondFrame { at: len, len })
    );
    assert_eq!(
        complete_checksum(&mut frame, &csum(0xffff, 0xffff)),
        Err(GsoError::CsumStartBeyondFrame { start: 0xffff, len })
    );
    assert_eq!(
        complete_checksum(&mut frame, &TCP4.vnet(1448)),
        Err(GsoError::SuperFrame)
    );
    assert_eq!(frame, before);
    // The field may end exactly at the end of the frame.
    assert_eq!(
        complete_checksum(&mut frame, &csum(34, len - 34 - 2)),
        Ok(())
    );
}

#[test]
fn malformed_super_frames_are_refused() {
    let good = super_frame(TCP4, &payload(3000));
    let vnet = TCP4.vnet(1448);
    let err = |frame: &[u8], vnet: VnetHdr| run(frame, vnet).unwrap_err();

    assert_eq!(err(&good, TCP4.vnet(0)), GsoError::ZeroGsoSize);
    assert_eq!(
        err(
            &good,
            VnetHdr {
                gso_type: VnetHdr::GSO_NONE,
                ..vnet
            }
        ),
        GsoError::NotGso
    );
    assert_eq!(
        err(
            &good,
            VnetHdr {
                gso_type: VnetHdr::GSO_UDP,
                ..vnet
            }
        ),
        GsoError::Ufo
    );
    assert_eq!(
        err(
            &good,
            VnetHdr {
                gso_type: 2,
                ..vnet
            }
        ),
        GsoError::UnknownGsoType(2)
    );
    // A TCPv6 header on an IPv4 frame, and TCP GSO on a UDP frame.
    assert_eq!(err(&good, TCP6.vnet(1448)), GsoError::IpVersionMismatch);
    let udp = super_frame(UDP4, &payload(3000));
    assert_eq!(err(&udp, vnet), GsoError::TransportMismatch(17));

    // Truncations at every layer.
    assert_eq!(err(&good[..13], vnet), GsoError::TruncatedEthernet);
    assert_eq!(err(&good[..30], vnet), GsoError::TruncatedIpHeader);
    let mut short = good[..40].to_vec();
    short[16..18].copy_from_slice(&26u16.to_be_bytes());
    assert_eq!(err(&short, vnet), GsoError::TruncatedTcpHeader);
    // A data offset pointing past the packet.
    let mut doff = good.clone();
    doff[16..18].copy_from_slice(&40u16.to_be_bytes());
    doff[34 + 12] = 0x60;
    assert_eq!(err(&doff[..54], vnet), GsoError::TruncatedTcpHeader);
    // IP length beyond the frame.
    assert_eq!(
        err(&good[..good.len() - 1], vnet),
        GsoError::BadIpLength {
            ip_len: good.len() - 14,
            frame_len: good.len() - 15
        }
    );
    let mut tiny = good.clone();
    tiny[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert!(matches!(err(&tiny, vnet), GsoError::BadIpLength { .. }));
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    assert_eq!(err(&ihl, vnet), GsoError::BadIpv4HeaderLength(4));
    let mut version = good.clone();
    version[14] = 0x65;
    assert_eq!(err(&version, vnet), GsoError::IpVersionMismatch);
    let mut frag = good.clone();
    frag[20] |= 0x20;
    assert_eq!(err(&frag, vnet), GsoError::Ipv4Fragment);
    let mut bad_doff = good.clone();
    bad_doff[34 + 12] = 0x40;
    assert_eq!(err(&bad_doff, vnet), GsoError::BadTcpDataOffset(4));
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(err(&arp, vnet), GsoError::UnsupportedEthertype(0x0806));

    // UDP headers cut short, and UDP GSO beyond the kernel's limit.
    let mut udp_short = udp[..40].to_vec();
    udp_short[16..18].copy_from_slice(&26u16.to_be_bytes());
    assert_eq!(
        err(&udp_short, UDP4.vnet(1448)),
        GsoError::TruncatedUdpHeader
    );
    assert_eq!(err(&udp, UDP4.vnet(1)), GsoError::TooManySegments(3000));
    let at_limit = super_frame(UDP4, &payload(UDP_MAX_SEGMENTS * 10));
    assert_eq!(
        run(&at_limit, UDP4.vnet(10)).unwrap().len(),
        UDP_MAX_SEGMENTS
    );
}

#[test]
fn a_slice_longer_than_any_buffer_is_refused() {
    let huge = vec![0u8; vswitch::buf::MAX_FRAME_LEN + 1];
    assert_eq!(
        Segmenter::new(&huge, &TCP4.vnet(1448)).unwrap_err(),
        GsoError::FrameTooLong(huge.len())
    );
}

#[test]
fn ipv6_extension_headers_are_refused() {
    let mut frame = super_frame(TCP6, &payload(3000));
    for ext in [0u8, 43, 44, 60] {
        frame[14 + 6] = ext;
        assert_eq!(
            run(&frame, TCP6.vnet(1448)).unwrap_err(),
            GsoError::Ipv6ExtensionHeader(ext)
        );
    }
}

#[test]
fn stacked_vlan_tags_are_refused() {
    let spec = Spec { vlan: true, ..TCP4 };
    let mut frame = super_frame(spec, &payload(3000));
    frame[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(
        run(&frame, spec.vnet(1448)).unwrap_err(),
        GsoError::UnsupportedEthertype(0x8100)
    );
    assert_eq!(
        run(&frame[..17], spec.vnet(1448)).unwrap_err(),
        GsoError::TruncatedEthernet
    );
}

fn any_vnet() -> impl Strategy<Value = VnetHdr> {
    (
        any::<u8>(),
        prop_oneof![
            Just(0u8),
            Just(1),
            Just(3),
            Just(4),
            Just(5),
            Just(0x81),
            any::<u8>()
        ],
        any::<u16>(),
        prop_oneof![Just(0u16), 1u16..100, any::<u16>()],
        prop_oneof![0u16..100, any::<u16>()],
        prop_oneof![0u16..20, any::<u16>()],
    )
        .prop_map(
            |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| VnetHdr {
                flags,
                gso_type,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            },
        )
}

fn any_spec() -> impl Strategy<Value = Spec> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(v6, udp, vlan)| Spec { v6, udp, vlan })
}

/// A valid super-frame with some bytes overwritten and possibly cut short:
/// gets past the first checks far more often than random bytes do.
fn mangled_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any_spec(),
        0usize..3000,
        prop::collection::vec((0usize..120, any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(spec, len, edits, cut)| {
            let mut f = super_frame(spec, &payload(len));
            for (at, byte) in edits {
                if let Some(b) = f.get_mut(at) {
                    *b = byte;
                }
            }
            let keep = cut.index(f.len() + 1);
            f.truncate(keep.max(f.len() / 2));
            f
        })
}

proptest! {
    #[test]
    fn random_input_never_panics(
        frame in prop_oneof![prop::collection::vec(any::<u8>(), 0..400), mangled_frame()],
        vnet in any_vnet(),
    ) {
        if let Ok(segs) = run(&frame, vnet) {
            prop_assert!(!segs.is_empty());
            for seg in &segs {
                prop_assert!(seg.len() <= frame.len());
            }
        }
        let mut copy = frame.clone();
        if complete_checksum(&mut copy, &vnet).is_err() {
            prop_assert_eq!(copy, frame);
        }
    }

    #[test]
    fn segments_reassemble_and_every_checksum_verifies(
        spec in any_spec(),
        len in 0usize..20_000,
        mss in prop_oneof![1u16..64, 64u16..2000, 2000u16..=u16::MAX],
    ) {
        let frame = super_frame(spec, &payload(len));
        let segments = len.div_ceil(usize::from(mss)).max(1);
        match run(&frame, spec.vnet(mss)) {
            Ok(segs) => {
                if let Err(e) = verify(spec, &frame, usize::from(mss), &segs) {
                    return Err(TestCaseError::fail(e));
                }
            }
            Err(e) => {
                prop_assert!(spec.udp && segments > UDP_MAX_SEGMENTS, "{e}");
                prop_assert_eq!(e, GsoError::TooManySegments(segments));
            }
        }
    }

    #[test]
    fn complete_checksum_matches_etherparse_for_any_payload(
        spec in any_spec(),
        data in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let want = build(spec, &data);
        let mut frame = want.clone();
        make_partial(&mut frame, spec);
        let mut vnet = spec.vnet(0);
        vnet.gso_type = VnetHdr::GSO_NONE;
        complete_checksum(&mut frame, &vnet).unwrap();
        prop_assert_eq!(frame, want);
    }
}

/// Two uplinks on one network (MTU 1500): the destination is unknown, so
/// every frame from port 1 goes out of port 2.
fn two_uplinks() -> vswitch::testing::SwitchHarness {
    use vswitch::ids::{NetworkId, PortId};
    use vswitch::switch::{NetworkConfig, PortConfig, PortRole, SwitchConfig};
    let net = NetworkConfig::new(NetworkId(0));
    let ports = [1, 2].map(|p| PortConfig {
        id: PortId(p),
        network: NetworkId(0),
        role: PortRole::Uplink,
    });
    vswitch::testing::SwitchHarness::new(SwitchConfig::new(1, [net], ports).unwrap())
}

#[test]
fn the_executor_segments_a_super_frame_for_a_port_without_gso() {
    use vswitch::ids::PortId;
    use vswitch::port::PortCaps;
    for spec in [TCP4, TCP6, UDP4] {
        let frame = super_frame(spec, &payload(20_000));
        let mut h = two_uplinks();
        let mut buf = PacketBuf::from_frame(&frame).unwrap();
        buf.vnet = spec.vnet(1400);
        // A port that takes super-frames gets the frame whole.
        let whole = h.inject_buf(PortId(1), buf);
        assert_eq!(whole.out, vec![(PortId(2), frame.clone())]);

        h.set_port_caps(PortId(2), PortCaps::NONE);
        let mut buf = PacketBuf::from_frame(&frame).unwrap();
        buf.vnet = spec.vnet(1400);
        let d = h.inject_buf(PortId(1), buf);
        assert!(d.out.iter().all(|(p, _)| *p == PortId(2)));
        let segs: Vec<Vec<u8>> = d.out.into_iter().map(|(_, f)| f).collect();
        verify(spec, &frame, 1400, &segs).unwrap();
        assert_eq!(
            h.switch.stats().port(PortId(2)).tx_packets,
            1 + segs.len() as u64
        );
    }
}

#[test]
fn the_executor_completes_a_partial_checksum_for_a_port_without_offloads() {
    use vswitch::ids::PortId;
    use vswitch::port::PortCaps;
    let complete = build(TCP4, &payload(100));
    let mut partial = complete.clone();
    make_partial(&mut partial, TCP4);
    let vnet = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        csum_start: u16::try_from(TCP4.l4()).unwrap(),
        csum_offset: u16::try_from(TCP4.csum_offset()).unwrap(),
        ..VnetHdr::default()
    };
    let mut h = two_uplinks();
    h.set_port_caps(PortId(2), PortCaps::NONE);
    let mut buf = PacketBuf::from_frame(&partial).unwrap();
    buf.vnet = vnet;
    let d = h.inject_buf(PortId(1), buf);
    assert_eq!(d.out, vec![(PortId(2), complete)]);
}

#[test]
fn a_super_frame_that_cannot_be_segmented_is_counted_not_dropped_silently() {
    use vswitch::ids::PortId;
    use vswitch::port::PortCaps;
    use vswitch::switch::DropReason;
    let frame = super_frame(UDP4, &payload(3000));
    let mut h = two_uplinks();
    h.set_port_caps(PortId(2), PortCaps::NONE);
    let mut buf = PacketBuf::from_frame(&frame).unwrap();
    // UFO (IP fragmentation of one datagram) is not supported.
    buf.vnet = VnetHdr {
        gso_type: VnetHdr::GSO_UDP,
        ..UDP4.vnet(1000)
    };
    let d = h.inject_buf(PortId(1), buf);
    assert!(d.out.is_empty());
    assert_eq!(
        h.switch
            .stats()
            .port(PortId(1))
            .drops
            .get(DropReason::Unsegmentable),
        1
    );
}
