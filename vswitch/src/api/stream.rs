//! `GET /v1/events`: the one answer that is a stream. The head goes out
//! at once, then one JSON event per line as the control thread publishes
//! them, until `until` passes, the client leaves (a write fails or times
//! out), or the daemon's hub cuts a reader that fell too far behind.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Backend;
use super::server::Reply;

/// How often a quiet stream checks `until`.
const TICK: Duration = Duration::from_millis(200);

/// Whether `url` is the events route.
pub(super) fn is_events(url: &str) -> bool {
    let path = url.split_once('?').map_or(url, |(p, _)| p);
    matches!(path, "/v1/events" | "/v1/events/")
}

/// `since` and `until` (nanoseconds since the epoch) from the query.
fn bounds(url: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let (mut since, mut until) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "since" => &mut since,
            "until" => &mut until,
            _ => continue,
        };
        *slot =
            Some(value.parse::<u64>().map_err(|_| {
                format!("{key} must be nanoseconds since the epoch, not {value:?}")
            })?);
    }
    Ok((since, until))
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Serves the stream; an error before the head is an ordinary reply.
pub(super) fn serve(
    backend: &dyn Backend,
    url: &str,
    stream: &mut UnixStream,
) -> Result<(), Reply> {
    let (since, until) = bounds(url).map_err(|e| Reply::error(400, &e))?;
    let Some((past, live)) = backend.events(since) else {
        return Err(Reply::error(404, "this daemon publishes no events"));
    };
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        return Ok(());
    }
    let within = |t: u64| until.is_none_or(|u| t <= u);
    for event in past.iter().filter(|e| within(e.time_nano)) {
        if write_line(stream, event).is_err() {
            return Ok(());
        }
    }
    loop {
        if until.is_some_and(|u| now_nanos() > u) {
            return Ok(());
        }
        match live.recv_timeout(TICK) {
            Ok(event) if within(event.time_nano) => {
                if write_line(stream, &event).is_err() {
                    return Ok(());
                }
            }
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn write_line(stream: &mut UnixStream, event: &crate::events::Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_parsed_and_bad_ones_refused() {
        assert_eq!(bounds("/v1/events").unwrap(), (None, None));
        assert_eq!(
            bounds("/v1/events?since=5&until=9").unwrap(),
            (Some(5), Some(9))
        );
        assert!(bounds("/v1/events?since=yesterday").is_err());
        assert!(is_events("/v1/events?since=1"));
        assert!(!is_events("/v1/eventsx"));
    }
}
