//! The daemon's counters in the Prometheus text exposition format, served
//! at `GET /metrics` on the API socket and, with `--metrics-listen`, on a
//! TCP address ([`http`]).
//!
//! The counters live where the work is done (each datapath worker's
//! switch and FDB replica, the DNS thread); a scrape asks each for a copy
//! ([`Sample`]) and [`render`] turns the copy into a fresh registry, so
//! nothing on the per-frame path knows about Prometheus.
//!
//! | metric | labels |
//! | --- | --- |
//! | `vswitch_port_{rx,tx}_{packets,bytes}_total` | port, sandbox, network, interface |
//! | `vswitch_port_tx_queue_dropped_total`, `vswitch_port_kernel_dropped_total` | port labels |
//! | `vswitch_port_dropped_total` | port labels, reason |
//! | `vswitch_fdb_entries` | |
//! | `vswitch_fdb_{learned,moved,aged,pinned}_total` | worker |
//! | `vswitch_fdb_evictions_total` | worker, reason (`port_cap`, `table_cap`) |
//! | `vswitch_dns_{queries,answers,forwards,relayed,formerr}_total` | |
//! | `vswitch_dns_upstream_{attempts,timeouts,errors,malformed,refused,stray}_total` | |
//! | `vswitch_dns_over_capacity_total` | |
//! | `vswitch_dns_dropped_total` | reason |
//!
//! Every FDB replica counts its own learning (see [`crate::datapath`] for
//! why the table is replicated), so the FDB event counters carry the worker
//! they come from instead of a sum that would count one MAC several times.

pub mod http;

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::control::types::PortView;
use crate::dnsd::DnsdStats;
use crate::switch::FdbStats;

/// The content type of the text exposition format the encoder writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A copy of every counter, taken for one scrape.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Every endpoint port with its counters and names.
    pub ports: Vec<PortView>,
    /// FDB entries, deduplicated over the replicas.
    pub fdb_entries: usize,
    /// Each datapath worker's FDB replica's event counters, by worker.
    pub fdb: Vec<FdbStats>,
    /// The embedded DNS's counters, when it runs.
    pub dns: Option<DnsdStats>,
}

/// Why the exposition could not be built (a metric name or label set the
/// client library refuses: a bug, reported rather than hidden).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Counter families registered on one registry.
struct Families {
    registry: Registry,
}

impl Families {
    fn new() -> Self {
        Self {
            registry: Registry::new(),
        }
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricsError> {
        let c = IntCounterVec::new(Opts::new(name, help).namespace("vswitch"), labels)?;
        self.registry.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        let g = IntGauge::with_opts(Opts::new(name, help).namespace("vswitch"))?;
        self.registry.register(Box::new(g.clone()))?;
        Ok(g)
    }
}

const PORT_LABELS: [&str; 4] = ["port", "sandbox", "network", "interface"];

/// Renders `sample` in the Prometheus text format.
///
/// # Errors
/// [`MetricsError`] when the client library refuses a family.
pub fn render(sample: &Sample) -> Result<String, MetricsError> {
    let f = Families::new();
    ports(&f, &sample.ports)?;
    fdb(&f, sample.fdb_entries, &sample.fdb)?;
    if let Some(dns) = &sample.dns {
        dns_counters(&f, dns)?;
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&f.registry.gather(), &mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn ports(f: &Families, ports: &[PortView]) -> Result<(), MetricsError> {
    let rx_packets = f.counter(
        "port_rx_packets_total",
        "Frames received from the port.",
        &PORT_LABELS,
    )?;
    let rx_bytes = f.counter(
        "port_rx_bytes_total",
        "Bytes received from the port.",
        &PORT_LABELS,
    )?;
    let tx_packets = f.counter(
        "port_tx_packets_total",
        "Frames sent to the port.",
        &PORT_LABELS,
    )?;
    let tx_bytes = f.counter(
        "port_tx_bytes_total",
        "Bytes sent to the port.",
        &PORT_LABELS,
    )?;
    let tx_queue = f.counter(
        "port_tx_queue_dropped_total",
        "Frames not sent because the port's transmit queue was full.",
        &PORT_LABELS,
    )?;
    let kernel = f.counter(
        "port_kernel_dropped_total",
        "Frames the kernel dropped on the port's device before the switch read them.",
        &PORT_LABELS,
    )?;
    let mut with_reason = PORT_LABELS.to_vec();
    with_reason.push("reason");
    let dropped = f.counter(
        "port_dropped_total",
        "Frames received from the port and dropped by the switch, by reason.",
        &with_reason,
    )?;
    for p in ports {
        let id = p.port.to_string();
        let labels = [
            id.as_str(),
            p.sandbox.as_str(),
            p.network.as_str(),
            p.interface.as_str(),
        ];
        rx_packets.with_label_values(&labels).inc_by(p.rx_packets);
        rx_bytes.with_label_values(&labels).inc_by(p.rx_bytes);
        tx_packets.with_label_values(&labels).inc_by(p.tx_packets);
        tx_bytes.with_label_values(&labels).inc_by(p.tx_bytes);
        tx_queue.with_label_values(&labels).inc_by(p.tx_dropped);
        kernel.with_label_values(&labels).inc_by(p.kernel_dropped);
        for (reason, n) in &p.drops {
            let mut l = labels.to_vec();
            l.push(reason.as_str());
            dropped.with_label_values(&l).inc_by(*n);
        }
    }
    Ok(())
}

fn fdb(f: &Families, entries: usize, workers: &[FdbStats]) -> Result<(), MetricsError> {
    f.gauge(
        "fdb_entries",
        "FDB entries (static and learned) over all networks.",
    )?
    .set(i64::try_from(entries).unwrap_or(i64::MAX));
    let learned = f.counter(
        "fdb_learned_total",
        "FDB entries created by learning, per worker replica.",
        &["worker"],
    )?;
    let moved = f.counter(
        "fdb_moved_total",
        "FDB entries moved between ports, per worker replica.",
        &["worker"],
    )?;
    let aged = f.counter(
        "fdb_aged_total",
        "FDB entries removed by aging, per worker replica.",
        &["worker"],
    )?;
    let pinned = f.counter(
        "fdb_pinned_total",
        "Sources not learned because a static entry holds the MAC elsewhere.",
        &["worker"],
    )?;
    let evictions = f.counter(
        "fdb_evictions_total",
        "FDB entries evicted because a cap was reached, by cap, per worker replica.",
        &["worker", "reason"],
    )?;
    for (i, s) in workers.iter().enumerate() {
        let w = i.to_string();
        learned.with_label_values(&[&w]).inc_by(s.learned);
        moved.with_label_values(&[&w]).inc_by(s.moved);
        aged.with_label_values(&[&w]).inc_by(s.aged);
        pinned.with_label_values(&[&w]).inc_by(s.pinned);
        evictions
            .with_label_values(&[w.as_str(), "port_cap"])
            .inc_by(s.evicted_port_cap);
        evictions
            .with_label_values(&[w.as_str(), "table_cap"])
            .inc_by(s.evicted_table_cap);
    }
    Ok(())
}

fn dns_counters(f: &Families, dns: &DnsdStats) -> Result<(), MetricsError> {
    let r = &dns.resolver;
    let plain: [(&str, &str, u64); 12] = [
        (
            "dns_queries_total",
            "DNS queries received from sandboxes.",
            r.queries,
        ),
        (
            "dns_answers_total",
            "DNS replies built locally (records of the network, empty NOERROR).",
            r.local_replies,
        ),
        (
            "dns_forwards_total",
            "DNS queries forwarded to the upstream servers.",
            r.forwarded,
        ),
        (
            "dns_relayed_total",
            "Upstream DNS replies relayed to sandboxes.",
            r.relayed,
        ),
        (
            "dns_formerr_total",
            "FORMERR replies to queries that could not be parsed.",
            r.formerr,
        ),
        (
            "dns_upstream_attempts_total",
            "Attempts sent to an upstream DNS server.",
            r.upstream_attempts,
        ),
        (
            "dns_upstream_timeouts_total",
            "Upstream DNS attempts that timed out.",
            r.upstream_timeouts,
        ),
        (
            "dns_upstream_errors_total",
            "Upstream DNS attempts that could not be dialled or sent.",
            r.upstream_errors,
        ),
        (
            "dns_upstream_malformed_total",
            "Upstream replies that were not DNS.",
            r.upstream_malformed,
        ),
        (
            "dns_over_capacity_total",
            "Queries answered SERVFAIL because every sandbox together had the most forwards in flight.",
            r.over_capacity,
        ),
        (
            "dns_upstream_refused_total",
            "Forward attempts answered SERVFAIL because the most upstream sockets were open.",
            dns.server.upstream_refused,
        ),
        (
            "dns_upstream_stray_total",
            "Datagrams on an upstream socket that answered no attempt in flight.",
            dns.server.upstream_stray,
        ),
    ];
    for (name, help, value) in plain {
        f.counter(name, help, &[])?
            .with_label_values::<&str>(&[])
            .inc_by(value);
    }
    let dropped = f.counter(
        "dns_dropped_total",
        "DNS queries and replies dropped, by reason.",
        &["reason"],
    )?;
    for &reason in dns::DropReason::ALL {
        dropped
            .with_label_values(&[reason.as_str()])
            .inc_by(r.drops.get(reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(n: u32, sandbox: &str, rx: u64) -> PortView {
        PortView {
            port: n,
            sandbox: sandbox.to_owned(),
            network: "front".to_owned(),
            interface: "eth0".to_owned(),
            host_interface: format!("vs{n}"),
            port_kind: "veth".to_owned(),
            mac_address: "02:42:ac:11:00:02".to_owned(),
            ipv4_address: "172.17.0.2/16".to_owned(),
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: 3,
            tx_bytes: 300,
            tx_dropped: 0,
            kernel_dropped: 7,
            drops: [("src_mac_spoofed".to_owned(), 2)].into_iter().collect(),
        }
    }

    #[test]
    fn ports_fdb_and_dns_are_exposed_with_labels() {
        let mut dns = DnsdStats::default();
        dns.resolver.queries = 11;
        dns.resolver.forwarded = 4;
        dns.resolver.over_capacity = 5;
        dns.server.upstream_refused = 6;
        let sample = Sample {
            ports: vec![port(1, "web", 5), port(2, "db", 9)],
            fdb_entries: 6,
            fdb: vec![
                FdbStats {
                    evicted_table_cap: 3,
                    ..FdbStats::default()
                },
                FdbStats::default(),
            ],
            dns: Some(dns),
        };
        let text = render(&sample).unwrap();
        for line in [
            "# TYPE vswitch_port_rx_packets_total counter",
            r#"vswitch_port_rx_packets_total{interface="eth0",network="front",port="1",sandbox="web"} 5"#,
            r#"vswitch_port_rx_bytes_total{interface="eth0",network="front",port="2",sandbox="db"} 900"#,
            r#"vswitch_port_kernel_dropped_total{interface="eth0",network="front",port="1",sandbox="web"} 7"#,
            r#"vswitch_port_dropped_total{interface="eth0",network="front",port="2",reason="src_mac_spoofed",sandbox="db"} 2"#,
            "vswitch_fdb_entries 6",
            r#"vswitch_fdb_evictions_total{reason="table_cap",worker="0"} 3"#,
            r#"vswitch_fdb_evictions_total{reason="port_cap",worker="1"} 0"#,
            "vswitch_dns_queries_total 11",
            "vswitch_dns_forwards_total 4",
            "vswitch_dns_over_capacity_total 5",
            "vswitch_dns_upstream_refused_total 6",
            r#"vswitch_dns_dropped_total{reason="upstream_timeout"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn without_dns_there_are_no_dns_families() {
        let text = render(&Sample::default()).unwrap();
        assert!(text.contains("vswitch_fdb_entries 0"));
        assert!(!text.contains("vswitch_dns_"));
    }
}
