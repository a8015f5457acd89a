//! The client side of `GET /v1/events`: an answer read line by line as
//! it arrives, not to its end.

use std::io::BufRead;

use super::client::{Client, ClientError};
use crate::events::Event;

impl Client {
    /// Follows the daemon's events: those kept since `since` (nanoseconds
    /// since the epoch), then live ones until `until` passes or `each`
    /// returns `false`.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::PermissionDenied`],
    /// [`ClientError::Daemon`] for a refused request, [`ClientError::Io`],
    /// [`ClientError::BadResponse`] for an answer that is not a stream of
    /// events.
    pub fn events(
        &self,
        since: Option<u64>,
        until: Option<u64>,
        mut each: impl FnMut(Event) -> bool,
    ) -> Result<(), ClientError> {
        let mut query = Vec::new();
        if let Some(s) = since {
            query.push(format!("since={s}"));
        }
        if let Some(u) = until {
            query.push(format!("until={u}"));
        }
        let target = if query.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("/v1/events?{}", query.join("&"))
        };
        let reader = self.open_stream(&target)?;
        for line in reader.lines() {
            let line = line.map_err(ClientError::Io)?;
            let event: Event = serde_json::from_str(&line)
                .map_err(|e| ClientError::BadResponse(format!("not an event: {e}")))?;
            if !each(event) {
                break;
            }
        }
        Ok(())
    }
}
