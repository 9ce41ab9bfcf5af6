//! `GET /events`: the manager's event log as Server-Sent Events.
//!
//! ```text
//! event: open            data: {"Head": "<cursor of the newest event>"}
//! id: <cursor>           event: task | node      data: {"Seq", "Time", "Kind", ...}
//! id: <cursor>           event: reset            data: {"Reason", "Cursor"}
//! event: nodes           data: [every node, as GET /nodes]   (with ?nodes=true, every 2 s)
//! : keepalive            (a comment every 15 s)
//! ```
//!
//! `?since=<cursor>` (or the `Last-Event-ID` header) resumes after that event; a cursor the log
//! can no longer serve gets `reset` first (see `cube_actors::manager::events`). A client that
//! falls too far behind the live events gets `reset` too, never a silent gap.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use cube_actors::manager::{Event, Reset, Since, Subscribe, What};
use cube_actors::node::NodeReport;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};

use super::ApiError;
use super::manager::ManagerState;

/// How often an idle stream gets a comment (so proxies and clients see it is alive).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// Resume after this event's cursor.
    since: Option<String>,
    /// Also send every node's report every few seconds (`event: nodes`).
    nodes: Option<bool>,
}

/// The handler.
pub async fn events(
    req: HttpRequest,
    state: web::Data<ManagerState>,
    query: web::Query<EventsParams>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let since = query
        .since
        .or_else(|| {
            req.headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .map_or(Since::Now, Since::Cursor);
    let nodes = query.nodes.unwrap_or(false);
    let (subscription, loads) = state.manager.send(Subscribe { since, nodes }).await??;
    let mut pending = VecDeque::new();
    pending.push_back(frame(
        None,
        "open",
        &serde_json::json!({ "Head": subscription.head }),
    ));
    if let Some(reset) = &subscription.reset {
        pending.push_back(reset_frame(reset));
    }
    pending.extend(subscription.backlog.iter().map(|e| event_frame(e)));
    let stream = Stream {
        pending,
        live: subscription.live,
        loads,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let next = s.next().await?;
        Some((Ok::<_, actix_web::Error>(next), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// One subscriber's stream: what is queued, then the live events.
struct Stream {
    pending: VecDeque<Bytes>,
    live: broadcast::Receiver<Arc<Event>>,
    loads: Option<broadcast::Receiver<Arc<Vec<NodeReport>>>>,
}

impl Stream {
    /// The next frame, or `None` once the manager is gone.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        let loads = async {
            match &mut self.loads {
                Some(loads) => loads.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = self.live.recv() => match event {
                Ok(event) => Some(event_frame(&event)),
                Err(RecvError::Lagged(missed)) => Some(reset_frame(&Reset {
                    reason: format!(
                        "this client fell behind and missed {missed} events: reload what it shows"
                    ),
                    cursor: String::new(),
                })),
                Err(RecvError::Closed) => None,
            },
            nodes = loads => match nodes {
                Ok(nodes) => Some(frame(None, "nodes", &*nodes)),
                // Missing a report of loads is harmless: the next one replaces it.
                Err(RecvError::Lagged(_)) => Some(Bytes::from_static(b": nodes skipped\n\n")),
                Err(RecvError::Closed) => None,
            },
            () = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
        }
    }
}

/// The frame of an event: its cursor as the id, its kind as the event type.
fn event_frame(event: &Event) -> Bytes {
    let kind = match event.what {
        What::Task { .. } => "task",
        What::Node { .. } => "node",
    };
    frame(Some(&event.cursor), kind, event)
}

fn reset_frame(reset: &Reset) -> Bytes {
    let id = (!reset.cursor.is_empty()).then_some(reset.cursor.as_str());
    frame(id, "reset", reset)
}

/// One Server-Sent Event (JSON has no newline, so one `data:` line).
fn frame(id: Option<&str>, kind: &str, data: &impl serde::Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|e| {
        serde_json::json!({ "Error": format!("cannot encode this event: {e}") }).to_string()
    });
    let mut text = String::with_capacity(data.len() + 64);
    if let Some(id) = id {
        text.push_str("id: ");
        text.push_str(id);
        text.push('\n');
    }
    text.push_str("event: ");
    text.push_str(kind);
    text.push_str("\ndata: ");
    text.push_str(&data);
    text.push_str("\n\n");
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            cursor: format!("e-{seq}"),
            seq,
            time: chrono::Utc::now(),
            what: What::Node {
                node: "n".into(),
                from: None,
                to: None,
                reason: String::new(),
            },
        })
    }

    /// A subscriber that falls further behind than the live channel holds gets a reset, then the
    /// events still held, never a silent gap.
    #[actix_rt::test]
    async fn a_subscriber_that_falls_behind_gets_a_reset() {
        let (live, receiver) = broadcast::channel(2);
        let mut stream = Stream {
            pending: VecDeque::new(),
            live: receiver,
            loads: None,
        };
        for seq in 1..=5 {
            live.send(event(seq)).unwrap();
        }
        let first = stream.next().await.unwrap();
        let text = String::from_utf8_lossy(&first);
        assert!(text.starts_with("event: reset\n"), "{text}");
        assert!(text.contains("missed 3 events"), "{text}");
        let next = stream.next().await.unwrap();
        assert!(String::from_utf8_lossy(&next).starts_with("id: e-4\nevent: node\n"));
        drop(live);
        assert!(stream.next().await.unwrap().starts_with(b"id: e-5"));
        assert_eq!(stream.next().await, None);
    }
}
