//! The event log: what happened in the cluster, numbered, for `GET /events` and `cube events`.
//! Plain data, no actix.
//!
//! Every durable task transition (from a [`Change`]) and every node status change becomes an
//! [`Event`] with the next sequence number. The log keeps the last ones (bounded in number and
//! age, like the rest of the manager's history) and hands them to subscribers: a subscriber
//! names the last event it saw (its cursor) and gets what came after, then every new event as
//! it happens. A cursor the log can no longer serve (older than what is retained, from before
//! the manager restarted, or from the future) gets an explicit [`Reset`] first, never a silent
//! gap. Events live in memory: a manager that restarts starts a new log with a new epoch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::book::Change;
use crate::node::NodeStatus;
use crate::task::{PortBinding, PortSpec, TaskId, TaskState};

/// How many events a slow subscriber may fall behind before it is told it missed some.
const CHANNEL: usize = 4096;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Event {
    /// Where this event sits: `<epoch>-<seq>`; pass it as `since` to resume after it.
    pub cursor: String,
    /// Its number in the log (1, 2, ...: one more than the event before it).
    pub seq: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Kind", rename_all = "PascalCase")]
pub enum What {
    /// A task changed state.
    #[serde(rename_all = "PascalCase")]
    Task {
        /// The task.
        task: TaskId,
        /// Its name.
        name: String,
        /// Its node after the change, if placed.
        node: Option<String>,
        /// Its state before (`None`: submitted).
        from: Option<TaskState>,
        /// Its state after (`None`: removed).
        to: Option<TaskState>,
        /// Its placement number.
        placement: u64,
        /// Its restart count.
        attempt: u32,
        /// Why.
        reason: String,
        /// Where its ports are published (as in the task: `HostPorts`).
        host_ports: BTreeMap<PortSpec, Vec<PortBinding>>,
    },
    /// A node joined, changed status or left.
    #[serde(rename_all = "PascalCase")]
    Node {
        /// The node.
        node: String,
        /// Its status before (`None`: joined).
        from: Option<NodeStatus>,
        /// Its status after (`None`: removed).
        to: Option<NodeStatus>,
        /// Why, when known.
        reason: String,
    },
}

impl What {
    /// The event of a change of task state or restart count, or `None` when neither changed.
    pub fn of_change(change: &Change, before_name: Option<&str>) -> Option<What> {
        if change.from == change.to && change.attempt == change.attempt_before {
            return None;
        }
        let task = change.after.as_ref();
        Some(What::Task {
            task: change.task,
            name: task
                .map(|t| t.name.clone())
                .or_else(|| before_name.map(str::to_string))
                .unwrap_or_default(),
            node: task.and_then(|t| t.node.clone()),
            from: change.from,
            to: change.to,
            placement: change.placement,
            attempt: change.attempt,
            reason: change.reason.clone(),
            host_ports: task.map(|t| t.host_ports.clone()).unwrap_or_default(),
        })
    }
}

/// Why a subscriber's cursor could not be followed as asked (`"Kind": "Reset"` in JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Kind", rename_all = "PascalCase")]
pub struct Reset {
    /// In words.
    pub reason: String,
    /// The cursor the stream goes on from (the events after it follow); empty when the stream
    /// goes on with the live events.
    pub cursor: String,
}

/// Where a subscriber starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// From the next event on.
    Now,
    /// After the event with this cursor (`<epoch>-<seq>`; a bare `<seq>` means this epoch).
    Cursor(String),
}

/// What a subscriber gets: the events it missed (after a reset, if any), then the live ones.
#[derive(Debug)]
pub struct Subscription {
    /// Set when the cursor could not be followed: the events between are lost to it.
    pub reset: Option<Reset>,
    /// The retained events after its cursor, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Every event from here on.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The cursor of the newest event when the subscription began.
    pub head: String,
}

/// The event log.
#[derive(Debug)]
pub struct EventLog {
    /// Names this log: a new one for each start of the manager.
    epoch: String,
    /// The number of the last event (0: none yet).
    last: u64,
    /// The retained events, oldest first.
    retained: VecDeque<Arc<Event>>,
    /// At most this many are retained.
    max_events: usize,
    /// None is retained for longer.
    max_age: Duration,
    live: broadcast::Sender<Arc<Event>>,
}

impl EventLog {
    /// An empty log with a new epoch, keeping at most `max_events` events for at most
    /// `max_age`.
    pub fn new(max_events: usize, max_age: Duration) -> EventLog {
        let mut bytes = [0u8; 4];
        // An epoch needs only to differ from the last few; a clock-based one does if the
        // system's random source fails.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = (Utc::now().timestamp_subsec_nanos()).to_le_bytes();
        }
        let epoch = bytes.iter().map(|b| format!("{b:02x}")).collect();
        EventLog {
            epoch,
            last: 0,
            retained: VecDeque::new(),
            max_events: max_events.max(1),
            max_age,
            live: broadcast::channel(CHANNEL).0,
        }
    }

    /// The epoch of this log.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The cursor of event `seq` of this log.
    pub fn cursor(&self, seq: u64) -> String {
        format!("{}-{seq}", self.epoch)
    }

    /// Records `what`, happened at `time`, and sends it to every subscriber.
    pub fn push(&mut self, what: What, time: DateTime<Utc>) -> Arc<Event> {
        self.last += 1;
        let event = Arc::new(Event {
            cursor: self.cursor(self.last),
            seq: self.last,
            time,
            what,
        });
        if self.retained.len() == self.max_events {
            self.retained.pop_front();
        }
        self.retained.push_back(Arc::clone(&event));
        // No subscriber is not an error.
        let _ = self.live.send(Arc::clone(&event));
        event
    }

    /// Drops the events older than the retention, as of `now`.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let max_age = chrono::Duration::from_std(self.max_age).unwrap_or(chrono::Duration::MAX);
        while self
            .retained
            .front()
            .is_some_and(|e| now.signed_duration_since(e.time) > max_age)
        {
            self.retained.pop_front();
        }
    }

    /// How many clients follow the log.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }

    /// The number of the oldest event a subscriber can still get (`last + 1` when none is
    /// retained).
    fn oldest(&self) -> u64 {
        self.retained.front().map_or(self.last + 1, |e| e.seq)
    }

    /// A new subscriber starting at `since`.
    pub fn subscribe(&self, since: &Since) -> Subscription {
        let live = self.live.subscribe();
        let head = self.cursor(self.last);
        let after = match since {
            Since::Now => {
                return Subscription {
                    reset: None,
                    backlog: Vec::new(),
                    live,
                    head,
                };
            }
            Since::Cursor(cursor) => self.parse(cursor),
        };
        let oldest = self.oldest();
        let from_all = |reason: String| {
            (
                Some(Reset {
                    reason,
                    cursor: self.cursor(oldest - 1),
                }),
                oldest,
            )
        };
        let (reset, first) = match after {
            Err(reason) => from_all(reason),
            Ok(seq) if seq > self.last => from_all(format!(
                "event {seq} has not happened (the last is {}): going on from the oldest retained",
                self.last
            )),
            Ok(seq) if seq + 1 < oldest => from_all(format!(
                "events {} to {} are no longer retained (the log keeps the last {} events, for {}s)",
                seq + 1,
                oldest - 1,
                self.max_events,
                self.max_age.as_secs()
            )),
            Ok(seq) => (None, seq + 1),
        };
        let skip = usize::try_from(first.saturating_sub(oldest)).unwrap_or(usize::MAX);
        Subscription {
            reset,
            backlog: self.retained.iter().skip(skip).cloned().collect(),
            live,
            head,
        }
    }

    /// The sequence number of a cursor of this log, or why it is not one.
    fn parse(&self, cursor: &str) -> Result<u64, String> {
        let (epoch, seq) = match cursor.rsplit_once('-') {
            Some((epoch, seq)) => (Some(epoch), seq),
            None => (None, cursor),
        };
        let seq: u64 = seq
            .trim()
            .parse()
            .map_err(|_| format!("{cursor:?} is not an event cursor (`<epoch>-<seq>`): going on from the oldest retained"))?;
        match epoch {
            Some(epoch) if epoch != self.epoch => Err(format!(
                "cursor {cursor} is from an earlier run of the manager (this one is {}): its events are gone; going on from the oldest retained",
                self.epoch
            )),
            _ => Ok(seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_event(name: &str) -> What {
        What::Node {
            node: name.into(),
            from: None,
            to: Some(NodeStatus::Ready),
            reason: String::new(),
        }
    }

    fn seqs(sub: &Subscription) -> Vec<u64> {
        sub.backlog.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_cursor_resumes_right_after_its_event() {
        let mut log = EventLog::new(100, Duration::from_secs(60));
        for i in 0..5 {
            log.push(node_event(&format!("n{i}")), Utc::now());
        }
        let sub = log.subscribe(&Since::Cursor(log.cursor(3)));
        assert_eq!(sub.reset, None);
        assert_eq!(seqs(&sub), vec![4, 5]);
        let bare = log.subscribe(&Since::Cursor("5".into()));
        assert_eq!((bare.reset.is_none(), seqs(&bare).len()), (true, 0));
        let from_start = log.subscribe(&Since::Cursor(log.cursor(0)));
        assert_eq!(
            (from_start.reset.is_none(), seqs(&from_start).len()),
            (true, 5)
        );
    }

    #[test]
    fn a_cursor_older_than_the_retained_events_gets_a_reset_then_what_is_left() {
        let mut log = EventLog::new(3, Duration::from_secs(60));
        for i in 0..10 {
            log.push(node_event(&format!("n{i}")), Utc::now());
        }
        let sub = log.subscribe(&Since::Cursor(log.cursor(2)));
        let reset = sub.reset.clone().expect("a reset");
        assert!(reset.reason.contains("events 3 to 7"), "{}", reset.reason);
        assert_eq!(reset.cursor, log.cursor(7));
        assert_eq!(seqs(&sub), vec![8, 9, 10]);
    }

    #[test]
    fn a_cursor_of_another_epoch_or_the_future_or_garbage_gets_a_reset() {
        let mut log = EventLog::new(10, Duration::from_secs(60));
        log.push(node_event("a"), Utc::now());
        for cursor in ["0badcafe-1", "99", "what"] {
            let sub = log.subscribe(&Since::Cursor(cursor.into()));
            assert!(sub.reset.is_some(), "{cursor}");
            assert_eq!(seqs(&sub), vec![1], "{cursor}");
        }
    }

    #[test]
    fn old_events_are_pruned_by_age() {
        let mut log = EventLog::new(10, Duration::from_secs(60));
        let now = Utc::now();
        log.push(node_event("old"), now - chrono::Duration::seconds(120));
        log.push(node_event("new"), now);
        log.prune(now);
        let sub = log.subscribe(&Since::Cursor(log.cursor(0)));
        assert!(sub.reset.is_some());
        assert_eq!(seqs(&sub), vec![2]);
    }

    #[test]
    fn live_subscribers_get_new_events() {
        let mut log = EventLog::new(10, Duration::from_secs(60));
        let mut sub = log.subscribe(&Since::Now);
        log.push(node_event("a"), Utc::now());
        assert_eq!(sub.live.try_recv().unwrap().seq, 1);
        assert_eq!(log.subscribers(), 1);
    }
}
