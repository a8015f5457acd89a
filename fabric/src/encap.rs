//! Encapsulation: an outer Ethernet/IPv4/UDP/VXLAN header, prebuilt once
//! per remote VTEP, written into the headroom in front of the inner frame.
//!
//! Everything in the outer header but five fields is the same for every
//! packet to one VTEP, so [`OuterTemplate`] holds those 50 bytes and the
//! IPv4 header's checksum over the constant fields; per packet,
//! [`Encapsulator::encapsulate`] copies them, then fills the IPv4 total
//! length and identification, finishes the checksum from the template's
//! partial sum (RFC 1624's incremental update, with the varying fields
//! zero in the template), and sets the UDP source port, UDP length and
//! VNI. No allocation, no copy of the inner frame.
//!
//! Choices follow the Linux vxlan driver's defaults so a kernel peer sees
//! nothing unusual: UDP checksum zero (RFC 7348 §5 and RFC 768 allow it over
//! IPv4; the inner frame has its own checksums), DF clear (`df unset`), TTL
//! 64 (`ip_default_ttl`, what `ttl auto` resolves to), TOS 0, the source
//! port from a hash of the inner flow in 32768..61000.
//!
//! Offsets within the 50 bytes, for a sender that hands the kernel less
//! than a whole frame: [`IP_OFFSET`] for a raw IP socket, [`VXLAN_OFFSET`]
//! for a UDP socket.

use core::net::Ipv4Addr;
use core::sync::atomic::{AtomicU16, Ordering};

use smoltcp::wire::EthernetAddress;

use crate::buf::Headroom;
use crate::flow::{FlowHasher, PortRange};
use crate::wire::{self, Vni};

/// Outer Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Outer IPv4 header length (no options).
pub const IPV4_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// Everything pushed in front of the inner frame over IPv4: 50 bytes.
pub const OUTER_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + wire::HEADER_LEN;
/// Where the outer IPv4 header starts.
pub const IP_OFFSET: usize = ETH_LEN;
/// Where the UDP header starts.
pub const UDP_OFFSET: usize = ETH_LEN + IPV4_LEN;
/// Where the VXLAN header starts (the UDP payload).
pub const VXLAN_OFFSET: usize = UDP_OFFSET + UDP_LEN;
/// The smallest inner frame: an Ethernet header.
pub const MIN_INNER_LEN: usize = 14;
/// The largest inner frame: what keeps the outer IPv4 total length in 16 bits.
pub const MAX_INNER_LEN: usize = 65_535 - (OUTER_LEN - ETH_LEN);

const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_UDP: u8 = 17;
const IP_DF: u16 = 0x4000;

/// Whether outer packets carry IPv4's don't-fragment bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DfPolicy {
    /// DF clear, the kernel vxlan default (`df unset`): a path with a
    /// smaller MTU fragments instead of dropping. Each packet then gets
    /// its own IPv4 identification, so fragments are never mixed up.
    #[default]
    Unset,
    /// DF set (`df set`): oversize packets are refused on the path, and the
    /// identification is zero as RFC 6864 allows for atomic datagrams.
    Set,
}

/// The local end of the tunnel and the choices that shape every outer
/// header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncapConfig {
    /// This host's VTEP address, the outer source.
    pub local_ip: Ipv4Addr,
    /// The underlay interface's MAC, the outer Ethernet source.
    pub local_mac: EthernetAddress,
    /// Destination UDP port.
    pub port: u16,
    /// Where source ports are picked.
    pub source_ports: PortRange,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer TOS byte (DSCP and ECN).
    pub tos: u8,
    /// DF bit.
    pub df: DfPolicy,
    /// Seed of the flow hash; pick it at random once per process.
    pub flow_seed: u64,
}

impl EncapConfig {
    /// The kernel's defaults around this host's address and MAC.
    #[must_use]
    pub fn new(local_ip: Ipv4Addr, local_mac: EthernetAddress) -> Self {
        Self {
            local_ip,
            local_mac,
            port: wire::DEFAULT_PORT,
            source_ports: PortRange::default(),
            ttl: 64,
            tos: 0,
            df: DfPolicy::Unset,
            flow_seed: 0,
        }
    }
}

/// Why a frame could not be encapsulated. These come from our own
/// switch, never from the wire, and mean a configuration or buffer
/// problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    /// The buffer has less headroom than the outer header needs.
    #[error("less headroom than the {OUTER_LEN}-byte outer header needs")]
    NoHeadroom,
    /// The output buffer cannot hold header and frame.
    #[error("output buffer of {have} bytes, {need} needed")]
    OutputTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Shorter than an Ethernet header.
    #[error("inner frame of {len} bytes is shorter than an Ethernet header")]
    InnerTooShort {
        /// Inner frame length.
        len: usize,
    },
    /// Would not fit in one IPv4 packet.
    #[error("inner frame of {len} bytes exceeds the {MAX_INNER_LEN} an IPv4 packet can carry")]
    InnerTooLong {
        /// Inner frame length.
        len: usize,
    },
}

/// The outer header to one remote VTEP, built once when the VTEP (or its
/// next hop) becomes known.
#[derive(Debug)]
pub struct OuterTemplate {
    bytes: [u8; OUTER_LEN],
    /// One's-complement sum of the IPv4 header with total length,
    /// identification and checksum zero, not yet folded.
    partial_sum: u32,
    remote: Ipv4Addr,
    df: DfPolicy,
    /// Next IPv4 identification: per destination, as the kernel's
    /// generator is per (destination, protocol) bucket. Atomic so that
    /// workers share one template.
    ident: AtomicU16,
}

impl OuterTemplate {
    /// The remote VTEP this header is addressed to.
    #[must_use]
    pub fn remote(&self) -> Ipv4Addr {
        self.remote
    }

    /// The template bytes (length, identification, checksum, source port
    /// and VNI zero).
    #[must_use]
    pub fn bytes(&self) -> &[u8; OUTER_LEN] {
        &self.bytes
    }

    fn next_ident(&self) -> u16 {
        match self.df {
            DfPolicy::Unset => self.ident.fetch_add(1, Ordering::Relaxed),
            DfPolicy::Set => 0,
        }
    }
}

/// Builds templates and encapsulates frames.
#[derive(Clone, Debug)]
pub struct Encapsulator {
    config: EncapConfig,
    flows: FlowHasher,
}

impl Encapsulator {
    /// An encapsulator for this host.
    #[must_use]
    pub fn new(config: EncapConfig) -> Self {
        Self {
            flows: FlowHasher::new(config.flow_seed, config.source_ports),
            config,
        }
    }

    /// The configuration it was made with.
    #[must_use]
    pub fn config(&self) -> &EncapConfig {
        &self.config
    }

    /// The flow hasher that picks source ports.
    #[must_use]
    pub fn flows(&self) -> &FlowHasher {
        &self.flows
    }

    /// The template for `remote`, reached through `next_hop` (its MAC if on
    /// the same link, otherwise the underlay gateway's, as the daemon's
    /// neighbour lookup says).
    #[must_use]
    pub fn template(&self, remote: Ipv4Addr, next_hop: EthernetAddress) -> OuterTemplate {
        let c = &self.config;
        let mut b = [0u8; OUTER_LEN];
        b[0..6].copy_from_slice(next_hop.as_bytes());
        b[6..12].copy_from_slice(c.local_mac.as_bytes());
        b[12..14].copy_from_slice(&ETH_P_IPV4);
        let ip = IP_OFFSET;
        b[ip] = 0x45;
        b[ip + 1] = c.tos;
        let frag = if c.df == DfPolicy::Set { IP_DF } else { 0 };
        b[ip + 6..ip + 8].copy_from_slice(&frag.to_be_bytes());
        b[ip + 8] = c.ttl;
        b[ip + 9] = IPPROTO_UDP;
        b[ip + 12..ip + 16].copy_from_slice(&c.local_ip.octets());
        b[ip + 16..ip + 20].copy_from_slice(&remote.octets());
        let partial_sum = b[ip..ip + IPV4_LEN]
            .chunks_exact(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let udp = UDP_OFFSET;
        b[udp + 2..udp + 4].copy_from_slice(&c.port.to_be_bytes());
        b[VXLAN_OFFSET] = wire::FLAG_I;
        OuterTemplate {
            bytes: b,
            partial_sum,
            remote,
            df: c.df,
            ident: AtomicU16::new(0),
        }
    }

    /// Pushes the outer header for `template` and `vni` in front of the
    /// frame in `buf`.
    pub fn encapsulate<B: Headroom + ?Sized>(
        &self,
        template: &OuterTemplate,
        vni: Vni,
        buf: &mut B,
    ) -> Result<(), EncapError> {
        let inner = buf.frame();
        let len = inner.len();
        check_inner(len)?;
        let sport = self.flows.source_port(inner);
        let ident = template.next_ident();
        let Some(hdr) = buf.push_front(OUTER_LEN) else {
            return Err(EncapError::NoHeadroom);
        };
        write_header(template, vni, len, sport, ident, hdr);
        Ok(())
    }

    /// Writes header and a copy of `inner` into `out`, for head-end
    /// replication, where every VTEP but one needs its own copy anyway.
    /// Returns the length written.
    pub fn encapsulate_into(
        &self,
        template: &OuterTemplate,
        vni: Vni,
        inner: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncapError> {
        let len = inner.len();
        check_inner(len)?;
        let total = OUTER_LEN + len;
        let have = out.len();
        let Some(out) = out.get_mut(..total) else {
            return Err(EncapError::OutputTooSmall { need: total, have });
        };
        let (hdr, body) = out.split_at_mut(OUTER_LEN);
        body.copy_from_slice(inner);
        write_header(
            template,
            vni,
            len,
            self.flows.source_port(inner),
            template.next_ident(),
            hdr,
        );
        Ok(total)
    }
}

fn check_inner(len: usize) -> Result<(), EncapError> {
    if len < MIN_INNER_LEN {
        Err(EncapError::InnerTooShort { len })
    } else if len > MAX_INNER_LEN {
        Err(EncapError::InnerTooLong { len })
    } else {
        Ok(())
    }
}

/// Fills one outer header; `inner_len` was checked against
/// [`MAX_INNER_LEN`], so both lengths fit in 16 bits.
fn write_header(
    t: &OuterTemplate,
    vni: Vni,
    inner_len: usize,
    sport: u16,
    ident: u16,
    hdr: &mut [u8],
) {
    hdr.copy_from_slice(&t.bytes);
    let udp_len = u16::try_from(UDP_LEN + wire::HEADER_LEN + inner_len).unwrap_or(u16::MAX);
    let ip_len = udp_len.saturating_add(20);
    let ip = IP_OFFSET;
    hdr[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
    hdr[ip + 4..ip + 6].copy_from_slice(&ident.to_be_bytes());
    let mut sum = t.partial_sum + u32::from(ip_len) + u32::from(ident);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let csum = !u16::try_from(sum).unwrap_or(u16::MAX);
    hdr[ip + 10..ip + 12].copy_from_slice(&csum.to_be_bytes());
    let udp = UDP_OFFSET;
    hdr[udp..udp + 2].copy_from_slice(&sport.to_be_bytes());
    hdr[udp + 4..udp + 6].copy_from_slice(&udp_len.to_be_bytes());
    hdr[VXLAN_OFFSET + 4..VXLAN_OFFSET + 7].copy_from_slice(&vni.to_bytes());
}
