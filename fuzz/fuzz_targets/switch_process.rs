//! `Switch::process` on arbitrary frames with arbitrary virtio-net headers,
//! then what the executor does with the result (software GSO or checksum
//! completion for a port that cannot take offloads).
//!
//! Input: a sequence of records `[port][vnet header: 10][len: 2][frame]`,
//! fed to one switch in order so learning and state carry over.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vswitch::buf::{PacketBuf, VnetHdr};
use vswitch::gso;
use vswitch::ids::{MacAddr, NetworkId, PortId};
use vswitch::switch::{
    Action, FdbConfig, FloodLimit, Gateway, NetworkConfig, PortConfig, PortRole, Switch,
    SwitchConfig,
};

fn container(id: u32, network: NetworkId, last: u8, third: u8) -> PortConfig {
    PortConfig {
        id: PortId(id),
        network,
        role: PortRole::Container {
            mac: MacAddr([2, 0x42, 172, third, 0, last]),
            ipv4: Some(Ipv4Addr::new(172, third, 0, last)),
        },
    }
}

fn config() -> SwitchConfig {
    let gw = |third, id| Gateway {
        mac: MacAddr([2, 0x42, 0x5e, 0, 0, id]),
        ip: Ipv4Addr::new(172, third, 0, 1),
    };
    let n0 = NetworkConfig {
        gateway: Some(gw(17, 1)),
        ..NetworkConfig::new(NetworkId(0))
    };
    // IPv6 on, ICC off, a small MTU and a tight flood budget: every guard
    // path is reachable.
    let n1 = NetworkConfig {
        gateway: Some(gw(18, 2)),
        icc: false,
        mtu: 1400,
        ipv6: true,
        flood_limit: FloodLimit { rate: 50, burst: 4 },
        ..NetworkConfig::new(NetworkId(1))
    };
    SwitchConfig::new(
        1,
        [n0, n1],
        [
            container(1, NetworkId(0), 2, 17),
            container(2, NetworkId(0), 3, 17),
            PortConfig {
                id: PortId(3),
                network: NetworkId(0),
                role: PortRole::Uplink,
            },
            container(4, NetworkId(1), 2, 18),
            container(5, NetworkId(1), 3, 18),
        ],
    )
    .expect("a valid configuration")
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut sw = Switch::new(FdbConfig::default());
    sw.apply_config(start, Arc::new(config()));
    let mut out = PacketBuf::new();
    let mut rest = data;
    let mut step = 0u64;
    while let Some((&port, tail)) = rest.split_first() {
        let Some((hdr, tail)) = tail.split_first_chunk::<{ VnetHdr::LEN }>() else {
            break;
        };
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        step += 1;

        let mut buf = PacketBuf::new();
        let frame = &frame[..frame.len().min(vswitch::buf::MAX_FRAME_LEN)];
        if buf.set_frame(frame).is_err() {
            continue;
        }
        buf.vnet = VnetHdr::from_bytes(hdr);
        // Port 0 and ports past the configuration are unknown ports.
        let now = start + Duration::from_millis(step * 97);
        let action = sw.process(now, PortId(u32::from(port % 7)), &mut buf);
        let targets: Vec<PortId> = match action {
            Action::Output(p) | Action::Reply(p) => vec![p],
            Action::Flood {
                network,
                except,
                scope,
            } => sw.flood_targets(network, except, scope).collect(),
            // Handed to the host connector, which has its own target
            // (`connector_frame`).
            Action::Drop(_) | Action::Host(_) => Vec::new(),
        };
        for p in targets {
            sw.record_tx(p, buf.len());
            // What the executor does for a port without offloads.
            if buf.vnet.is_gso() {
                let _ = gso::segment(&buf, &mut out, |_| {});
            } else {
                let mut copy = buf.frame().to_vec();
                let _ = gso::complete_checksum(&mut copy, &buf.vnet);
            }
        }
        if step % 16 == 0 {
            sw.expire(now);
        }
    }
});
