//! `GET /v1/capture`: a port's frames as a pcapng stream.
//!
//! The filter is a tcpdump expression compiled by libpcap (`pcap`
//! crate, on a "dead" Ethernet handle) and run in userspace on this
//! connection's thread, never on the datapath. Each packet block records
//! its direction in the `epb_flags` option (inbound 1, outbound 2) and, for
//! a frame the switch dropped, the reason as its comment. The stream ends
//! after `count` frames or when the client leaves; it closes with an
//! interface statistics block whose `isb_ifdrop` is the number of frames
//! the capture lost to its full queue.

use std::borrow::Cow;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::{
    InterfaceStatisticsBlock, InterfaceStatisticsOption,
};

use super::Backend;
use super::server::Reply;

/// How often a quiet capture checks that its client is still there.
const TICK: Duration = Duration::from_millis(200);

/// Whether `url` is the capture route.
pub(super) fn is_capture(url: &str) -> bool {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    matches!(path, "/v1/capture" | "/v1/capture/")
}

/// The query: `target` (SANDBOX[:IFACE] or a port number), `count`,
/// `filter`.
fn params(url: &str) -> Result<(String, Option<u64>, String), String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let (mut target, mut count, mut filter) = (None, None, String::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = super::server::percent_decode(value)
            .ok_or_else(|| format!("invalid percent-encoding in {key}"))?;
        match key {
            "target" => target = Some(value),
            "count" => {
                count = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| format!("count must be a number, not {value:?}"))?,
                );
            }
            "filter" => filter = value,
            _ => {}
        }
    }
    let target = target.ok_or("give the sandbox (SANDBOX[:IFACE]) or port to capture")?;
    Ok((target, count, filter))
}

/// Serves the capture; an error before the stream starts is a reply.
pub(super) fn serve(
    backend: &dyn Backend,
    url: &str,
    stream: &mut UnixStream,
) -> Result<(), Reply> {
    let (target, count, filter) = params(url).map_err(|e| Reply::error(400, &e))?;
    let program = if filter.trim().is_empty() {
        None
    } else {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)
            .map_err(|e| Reply::error(500, &format!("cannot compile the filter: {e}")))?;
        Some(
            dead.compile(&filter, true)
                .map_err(|e| Reply::error(400, &format!("invalid filter {filter:?}: {e}")))?,
        )
    };
    let (name, capture) = backend
        .capture(&target)
        .map_err(|e| Reply::from_error(&e))?;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-pcapng\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return Ok(());
    }
    let Ok(mut out) = PcapNgWriter::new(&mut *stream) else {
        return Ok(());
    };
    let idb = InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        // Timestamps are written in nanoseconds; say so (the default is µs).
        options: vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(name)),
            InterfaceDescriptionOption::IfTsResol(9),
        ],
    };
    if out.write_pcapng_block(idb).is_err() {
        return Ok(());
    }
    let mut written = 0u64;
    while count.is_none_or(|c| written < c) {
        let c = match capture.frames.recv_timeout(TICK) {
            Ok(c) => c,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Nothing to send; a zero-length write would not notice a
                // client that left, so peek at the socket instead.
                if client_gone(out.get_mut()) {
                    return Ok(());
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        if program.as_ref().is_some_and(|p| !p.filter(&c.frame)) {
            continue;
        }
        let mut options = vec![EnhancedPacketOption::Flags(if c.outbound { 2 } else { 1 })];
        if let Some(reason) = c.drop {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "dropped: {}",
                reason.as_str()
            ))));
        }
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: c.time.duration_since(UNIX_EPOCH).unwrap_or_default(),
            original_len: u32::try_from(c.frame.len()).unwrap_or(u32::MAX),
            data: Cow::Borrowed(&c.frame),
            options,
        };
        if out.write_pcapng_block(epb).is_err() {
            return Ok(());
        }
        written += 1;
    }
    let isb = InterfaceStatisticsBlock {
        interface_id: 0,
        timestamp: std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        options: vec![
            InterfaceStatisticsOption::IsbIfDrop(capture.dropped.load(Ordering::Relaxed)),
            InterfaceStatisticsOption::IsbOsDrop(0),
        ],
    };
    let _ = out.write_pcapng_block(isb);
    let _ = out.get_mut().flush();
    Ok(())
}

fn client_gone(stream: &mut UnixStream) -> bool {
    let mut byte = [0u8; 1];
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let gone = match std::io::Read::read(stream, &mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}
