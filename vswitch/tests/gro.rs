//! Software GRO without root: trains of segments in, frames out.
//!
//! Segments are cut from a super-frame built by an independent encoder
//! (etherparse) with the datapath's own segmentation (`vswitch::gso`), laid
//! out as a `UDP_GRO` train (an 8-byte VXLAN header in front of each) and
//! merged back; the merged frame must cut back into exactly the same
//! segments.

use std::ops::Range;

use etherparse::{PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};
use proptest::prelude::*;
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::gro::{self, Merge};
use vswitch::gso;

const MSS: usize = 1398;
const SRC: [u8; 6] = [0x02, 0x42, 10, 0, 0, 1];
const DST: [u8; 6] = [0x02, 0x42, 10, 0, 0, 2];

fn payload(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() ^ salt)
        .collect()
}

/// A TCP/IPv4 frame of flow `sport` → 80, timestamps option, ACK (and PSH).
fn tcp(sport: u16, seq: u32, data: &[u8], psh: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC, DST)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(sport, 80, seq, 501)
        .ack(77)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(1000, 2000),
        ])
        .unwrap();
    let b = if psh { b.psh() } else { b };
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

/// The super-frame's segments, as the datapath cuts them.
fn segments(sport: u16, seq: u32, data: &[u8]) -> Vec<Vec<u8>> {
    let frame = tcp(sport, seq, data, true);
    let mut src = PacketBuf::from_frame(&frame).unwrap();
    src.vnet = VnetHdr {
        gso_type: VnetHdr::GSO_TCPV4,
        gso_size: u16::try_from(MSS).unwrap(),
        hdr_len: 66,
        ..VnetHdr::default()
    };
    let mut out = PacketBuf::new();
    let mut segs = Vec::new();
    gso::segment(&src, &mut out, |b| segs.push(b.frame().to_vec())).unwrap();
    segs
}

/// A train: each frame behind an 8-byte header, and the ranges of the
/// frames in it.
fn train(frames: &[Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut bytes = Vec::new();
    let mut ranges = Vec::new();
    for f in frames {
        bytes.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0xcc, 0]);
        ranges.push(bytes.len()..bytes.len() + f.len());
        bytes.extend_from_slice(f);
    }
    (bytes, ranges)
}

/// Plans frames as the receive path does: each frame starts a merge or is
/// pushed onto the open one. Returns the groups (frame indexes).
fn plan(frames: &[Vec<u8>]) -> Vec<(Range<usize>, Option<Merge>)> {
    let mut out: Vec<(Range<usize>, Option<Merge>)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if let Some((r, Some(m))) = out.last_mut()
            && m.push(&frames[r.start], f)
        {
            r.end = i + 1;
            continue;
        }
        out.push((i..i + 1, Merge::start(f)));
    }
    out
}

/// The group's frame, built in the train's own buffer when the train fits
/// in one (as received), else copied out of it.
fn merged(frames: &[Vec<u8>], group: &(Range<usize>, Option<Merge>)) -> PacketBuf {
    let (bytes, ranges) = train(frames);
    let m = group.1.as_ref().filter(|m| m.count() > 1);
    if let Ok(mut buf) = PacketBuf::from_frame(&bytes) {
        gro::merge_in_place(&mut buf, &ranges[group.0.clone()], m);
        buf
    } else {
        let mut buf = PacketBuf::new();
        gro::merge_into(&mut buf, &bytes, &ranges[group.0.clone()], m);
        buf
    }
}

fn resegment(buf: &PacketBuf) -> Vec<Vec<u8>> {
    let mut out = PacketBuf::new();
    let mut segs = Vec::new();
    gso::segment(buf, &mut out, |b| segs.push(b.frame().to_vec())).unwrap();
    segs
}

#[test]
fn a_train_of_one_flow_becomes_one_super_frame_that_cuts_back_into_the_same_segments() {
    let data = payload(45 * MSS - 100, 0);
    let segs = segments(40_000, 1_000_000, &data);
    assert_eq!(segs.len(), 45);
    let groups = plan(&segs);
    assert_eq!(groups.len(), 1, "{groups:?}");
    let buf = merged(&segs, &groups[0]);

    assert_eq!(
        buf.vnet,
        VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: u16::try_from(MSS).unwrap(),
            csum_start: 34,
            csum_offset: 16,
        }
    );
    // What the independent decoder sees: a valid IPv4 header whose length
    // is the frame's, the first segment's TCP header, every payload byte.
    let p = SlicedPacket::from_ethernet(buf.frame()).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(usize::from(h.total_len), buf.len() - 14);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("not TCP")
    };
    assert_eq!(t.sequence_number(), 1_000_000);
    assert_eq!(t.acknowledgment_number(), 77);
    assert!(t.psh() && t.ack() && !t.fin());
    assert_eq!(t.payload(), &data[..]);
    // The checksum field holds the pseudo-header sum, as NEEDS_CSUM asks.
    let mut full = buf.frame().to_vec();
    let whole_frame = VnetHdr {
        gso_type: VnetHdr::GSO_NONE,
        ..buf.vnet
    };
    gso::complete_checksum(&mut full, &whole_frame).unwrap();
    let whole = tcp(40_000, 1_000_000, &data, true);
    assert_eq!(&full[50..52], &whole[50..52], "completed TCP checksum");

    assert_eq!(resegment(&buf), segs);
}

#[test]
fn merging_into_another_buffer_gives_the_same_frame() {
    let segs = segments(40_001, 7, &payload(10 * MSS, 3));
    let groups = plan(&segs);
    assert_eq!(groups.len(), 1);
    let (src, ranges) = train(&segs);
    let mut out = PacketBuf::new();
    gro::merge_into(&mut out, &src, &ranges, groups[0].1.as_ref());
    let in_place = merged(&segs, &groups[0]);
    assert_eq!(out.frame(), in_place.frame());
    assert_eq!(out.vnet, in_place.vnet);
}

/// A super-frame split over two trains (two `UDP_SEGMENT` sends, two
/// receive buffers) merges into the same frame as one train of all its
/// segments would: the first train in place, the second's payloads copied
/// behind it, beyond the length the first train had.
#[test]
fn a_super_frame_continued_in_a_second_buffer_is_the_same_frame() {
    let data = payload(44 * MSS + 500, 9);
    let segs = segments(40_009, 3_000, &data);
    assert_eq!(segs.len(), 45);
    let groups = plan(&segs);
    assert_eq!(groups.len(), 1);
    let whole = merged(&segs, &groups[0]);

    let (head, tail) = segs.split_at(23);
    let (a, a_ranges) = train(head);
    let (b, b_ranges) = train(tail);
    let mut buf = PacketBuf::new();
    let space = buf.rx_space();
    space[..a.len()].copy_from_slice(&a);
    buf.set_received(a.len());
    gro::merge_in_place_with_tail(&mut buf, &a_ranges, &b, &b_ranges, groups[0].1.as_ref());
    assert!(buf.len() > a.len());
    assert_eq!(buf.frame(), whole.frame());
    assert_eq!(buf.vnet, whole.vnet);
    assert_eq!(resegment(&buf), segs);

    // A buffer not as a receive left it (a header pushed in front) takes
    // no tail: the frame is the first train's alone, and says so (no
    // offload claimed for a length the plan did not make).
    let mut moved = PacketBuf::from_frame(&a).unwrap();
    moved.push_front(2).unwrap().fill(0);
    let shifted: Vec<Range<usize>> = a_ranges.iter().map(|r| r.start + 2..r.end + 2).collect();
    gro::merge_in_place_with_tail(&mut moved, &shifted, &b, &b_ranges, groups[0].1.as_ref());
    assert_eq!(moved.vnet, VnetHdr::default());
}

#[test]
fn interleaved_flows_are_never_merged_together() {
    let a = segments(40_000, 1, &payload(3 * MSS, 1));
    let b = segments(40_002, 1, &payload(3 * MSS, 2));
    let mixed = vec![
        a[0].clone(),
        a[1].clone(),
        b[0].clone(),
        b[1].clone(),
        a[2].clone(),
    ];
    let groups = plan(&mixed);
    let spans: Vec<Range<usize>> = groups.iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..2, 2..4, 4..5]);
    for g in &groups {
        let buf = merged(&mixed, g);
        let parts = if g.0.len() > 1 {
            resegment(&buf)
        } else {
            vec![buf.frame().to_vec()]
        };
        assert_eq!(parts, mixed[g.0.clone()]);
    }
}

#[test]
fn a_damaged_segment_travels_alone_and_splits_the_train() {
    let mut segs = segments(40_000, 1, &payload(5 * MSS, 4));
    // One payload bit flipped on the way: its TCP checksum is wrong.
    segs[2][100] ^= 0x40;
    let groups = plan(&segs);
    let spans: Vec<Range<usize>> = groups.iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..2, 2..3, 3..5]);
    let alone = merged(&segs, &groups[1]);
    assert_eq!(alone.frame(), &segs[2][..], "passed on untouched");
    assert_eq!(alone.vnet, VnetHdr::default(), "no checksum vouched for");

    // A damaged IPv4 header checksum too.
    let mut segs = segments(40_000, 1, &payload(3 * MSS, 4));
    segs[1][24] ^= 1;
    let spans: Vec<Range<usize>> = plan(&segs).iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..1, 1..2, 2..3]);
}

#[test]
fn a_hole_a_short_segment_or_a_push_ends_the_super_frame() {
    let segs = segments(40_000, 1, &payload(6 * MSS, 5));
    // Segment 2 lost: 3 does not continue 1.
    let holed = vec![
        segs[0].clone(),
        segs[1].clone(),
        segs[3].clone(),
        segs[4].clone(),
    ];
    let spans: Vec<Range<usize>> = plan(&holed).iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..2, 2..4]);

    // A short segment ends it (a later full one starts another).
    let short = tcp(
        40_000,
        1 + 2 * u32::try_from(MSS).unwrap(),
        &payload(100, 0),
        false,
    );
    let next = tcp(
        40_000,
        101 + 2 * u32::try_from(MSS).unwrap(),
        &payload(MSS, 0),
        false,
    );
    let frames = vec![segs[0].clone(), segs[1].clone(), short, next];
    let spans: Vec<Range<usize>> = plan(&frames).iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..3, 3..4]);

    // PSH on a middle segment ends it there.
    let seq = |i: usize| 1 + u32::try_from(i * MSS).unwrap();
    let frames = vec![
        tcp(40_000, seq(0), &payload(MSS, 0), false),
        tcp(40_000, seq(1), &payload(MSS, 0), true),
        tcp(40_000, seq(2), &payload(MSS, 0), false),
    ];
    let spans: Vec<Range<usize>> = plan(&frames).iter().map(|g| g.0.clone()).collect();
    assert_eq!(spans, [0..2, 2..3]);
}

#[test]
fn only_plain_tcp_ipv4_data_segments_start_a_merge() {
    let data = payload(MSS, 0);
    let ok = tcp(40_000, 1, &data, false);
    assert!(Merge::start(&ok).is_some());

    let with_flag = |set: fn(PacketBuilder_) -> PacketBuilder_| {
        let b = PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40_000, 80, 1, 501)
            .ack(77);
        let mut v = Vec::new();
        set(b).write(&mut v, &data).unwrap();
        v
    };
    for (name, f) in [
        ("fin", with_flag(|b| b.fin())),
        ("syn", with_flag(|b| b.syn())),
        ("rst", with_flag(|b| b.rst())),
        ("urg", with_flag(|b| b.urg(1))),
        ("ece", with_flag(|b| b.ece())),
        ("cwr", with_flag(|b| b.cwr())),
    ] {
        assert!(Merge::start(&f).is_none(), "{name}");
    }
    // A pure ACK carries nothing to merge.
    assert!(Merge::start(&tcp(40_000, 1, &[], false)).is_none());
    // UDP, IPv6.
    let mut udp = Vec::new();
    PacketBuilder::ethernet2(SRC, DST)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1, 2)
        .write(&mut udp, &data)
        .unwrap();
    assert!(Merge::start(&udp).is_none());
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(SRC, DST)
        .ipv6([1; 16], [2; 16], 64)
        .tcp(40_000, 80, 1, 501)
        .ack(1)
        .write(&mut v6, &data)
        .unwrap();
    assert!(Merge::start(&v6).is_none());
    // Ethernet padding (the IP length short of the frame), a fragment,
    // IPv4 options.
    let mut padded = ok.clone();
    padded.extend_from_slice(&[0; 4]);
    assert!(Merge::start(&padded).is_none());
    let mut frag = ok.clone();
    frag[20] |= 0x20; // MF
    fix_ip_checksum(&mut frag);
    assert!(Merge::start(&frag).is_none());
    let mut opts = ok;
    opts[14] = 0x46;
    fix_ip_checksum(&mut opts);
    assert!(Merge::start(&opts).is_none());
}

type PacketBuilder_ = etherparse::PacketBuilderStep<etherparse::TcpHeader>;

fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].fill(0);
    let mut sum = 0u32;
    for c in f[14..14 + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!u16::try_from(sum).unwrap()).to_be_bytes());
}

#[test]
fn a_super_frame_stops_at_64_kib_of_ip_packet() {
    let seq = |i: usize| 1 + u32::try_from(i * MSS).unwrap();
    let frames: Vec<Vec<u8>> = (0..60)
        .map(|i| {
            tcp(
                40_000,
                seq(i),
                &payload(MSS, u8::try_from(i).unwrap()),
                false,
            )
        })
        .collect();
    let groups = plan(&frames);
    // 20 + 32 + 46 * 1398 = 64,360 fits; a 47th segment would not.
    assert_eq!(groups[0].0, 0..46);
    assert_eq!(groups[1].0, 46..60);
    let buf = merged(&frames, &groups[0]);
    assert!(buf.len() - 14 <= 65_535);
    let want: Vec<u8> = frames[0..46]
        .iter()
        .flat_map(|f| f[66..].to_vec())
        .collect();
    assert_eq!(&buf.frame()[66..], &want[..]);
    assert_eq!(resegment(&buf).len(), 46);
}

proptest! {
    /// Whatever arrives, planning and merging never panic, every frame
    /// lands in exactly one group, and a merged frame cuts back into its
    /// segments.
    #[test]
    fn any_train_plans_and_merges_without_panicking(
        cuts in proptest::collection::vec((0usize..6, any::<u8>(), 0usize..200), 1..12)
    ) {
        let segs = segments(40_000, 5, &payload(8 * MSS, 9));
        let frames: Vec<Vec<u8>> = cuts
            .iter()
            .map(|&(pick, byte, at)| {
                let mut f = segs[pick % segs.len()].clone();
                if byte % 3 == 0 {
                    let at = at % f.len();
                    f[at] ^= byte | 1;
                }
                // Every datagram but the last is as long as the first.
                f
            })
            .collect();
        let groups = plan(&frames);
        let covered: usize = groups.iter().map(|g| g.0.len()).sum();
        prop_assert_eq!(covered, frames.len());
        for g in &groups {
            let mut buf = PacketBuf::new();
            let ranges: Vec<Range<usize>> = {
                let mut bytes = Vec::new();
                let mut r = Vec::new();
                for f in &frames {
                    r.push(bytes.len()..bytes.len() + f.len());
                    bytes.extend_from_slice(f);
                }
                buf.set_frame(&bytes).unwrap();
                r
            };
            let m = g.1.as_ref().filter(|m| m.count() > 1);
            gro::merge_in_place(&mut buf, &ranges[g.0.clone()], m);
            if m.is_some() {
                prop_assert_eq!(resegment(&buf), frames[g.0.clone()].to_vec());
            } else {
                prop_assert_eq!(buf.frame(), &frames[g.0.start][..]);
            }
        }
    }
}
