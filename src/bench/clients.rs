//! The benchmark's clients: requests over kept connections, closed and open loops on threads
//! of their own, and what a phase of them gave (latencies, refusals by cause, the tasks
//! answered 201).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{BenchArgs, bench_token, quick_task_after};

/// What a phase of requests gave.
#[derive(Default)]
pub(super) struct Outcome {
    /// IDs of the tasks answered 201.
    pub(super) accepted: Vec<String>,
    /// Latency of each 201 (or 200 for reads).
    pub(super) ok_latency: Vec<Duration>,
    /// Latency of each 429.
    pub(super) refused_latency: Vec<Duration>,
    /// The 429s by why the server refused (what its message says).
    pub(super) refused_why: std::collections::BTreeMap<&'static str, usize>,
    /// 429s without Retry-After, other statuses, failed requests.
    pub(super) errors: Vec<String>,
    /// How long the phase lasted.
    pub(super) elapsed: Duration,
    /// When it ended (the server's clock is this machine's).
    pub(super) ended: Option<DateTime<Utc>>,
}

impl Outcome {
    pub(super) fn rate(&self) -> f64 {
        self.ok_latency.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The outcomes of clients that ran side by side, as one.
    pub(super) fn merged(outcomes: Vec<Outcome>) -> Outcome {
        let mut all = Outcome::default();
        for outcome in outcomes {
            all.accepted.extend(outcome.accepted);
            all.ok_latency.extend(outcome.ok_latency);
            all.refused_latency.extend(outcome.refused_latency);
            for (why, n) in outcome.refused_why {
                *all.refused_why.entry(why).or_default() += n;
            }
            all.errors.extend(outcome.errors);
            all.elapsed = all.elapsed.max(outcome.elapsed);
            all.ended = all.ended.max(outcome.ended);
        }
        all
    }
}

/// The threads an open loop's requests come from: on these machines one thread alone cannot
/// offer twice the rate the cluster sustains and still read every answer on time (a load
/// generator needs its share of the cores, as `wrk -t2` had in the calibration).
pub(super) const OPEN_LOOP_THREADS: usize = 2;

/// A client for `connections` concurrent requests at most.
fn pooled_client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections.max(1)))
        .bearer_auth(bench_token().expose())
        .timeout(Duration::from_secs(60))
        .finish()
}

/// Sends one request; records it in `outcome`.
async fn request(
    client: &awc::Client,
    url: &str,
    body: Option<Submission>,
    outcome: &RefCell<Outcome>,
) {
    let start = Instant::now();
    let (sent, id) = match body {
        Some(Submission { id, json }) => {
            let post = client
                .post(url)
                .insert_header((actix_web::http::header::CONTENT_TYPE, "application/json"));
            (post.send_body(json).await, Some(id))
        }
        None => (client.get(url).send().await, None),
    };
    // The answer is read to its end, as a client that keeps its connection does: a response
    // left unread closes the connection, and every request would pay for a new one.
    let sent = match sent {
        Ok(mut r) => match r.body().await {
            Ok(body) => Ok((r, body)),
            Err(e) => {
                outcome
                    .borrow_mut()
                    .errors
                    .push(format!("{url}: reading the answer: {e}"));
                return;
            }
        },
        Err(e) => Err(e),
    };
    let latency = start.elapsed();
    let mut outcome = outcome.borrow_mut();
    match sent {
        Ok((r, _)) if r.status().is_success() => {
            outcome.ok_latency.push(latency);
            if let Some(id) = id {
                outcome.accepted.push(id);
            }
        }
        Ok((r, body)) if r.status().as_u16() == 429 => {
            if r.headers().contains_key("retry-after") {
                outcome.refused_latency.push(latency);
                *outcome.refused_why.entry(why_refused(&body)).or_default() += 1;
            } else {
                outcome.errors.push("429 without Retry-After".into());
            }
        }
        Ok((r, _)) => outcome
            .errors
            .push(format!("{url} answered {}", r.status())),
        Err(e) => outcome.errors.push(format!("{url}: {e}")),
    }
}

/// Why a 429 says the manager refused: the edge's admission (the manager is behind), too
/// many tasks waiting to start, or too many submissions at once.
fn why_refused(body: &[u8]) -> &'static str {
    let message = String::from_utf8_lossy(body);
    if message.contains("is behind") {
        "behind"
    } else if message.contains("waiting to start") {
        "waiting"
    } else if message.contains("submissions") {
        "in flight"
    } else {
        "other"
    }
}

/// What the 429s of `outcome` said, counted.
pub(super) fn refusals(outcome: &Outcome) -> String {
    let counts: Vec<String> = outcome
        .refused_why
        .iter()
        .map(|(why, n)| format!("{why} {n}"))
        .collect();
    if counts.is_empty() {
        String::new()
    } else {
        format!(" ({})", counts.join(", "))
    }
}

/// A submission: the task's ID and the TaskEvent, encoded once.
pub(super) struct Submission {
    id: String,
    json: Vec<u8>,
}

/// A task event for client `c`'s `i`th submission of phase `phase`.
pub(super) fn submission(args: &BenchArgs, phase: &str, c: usize, i: u64) -> Submission {
    let event = quick_task_after(&format!("{phase}-{c}-{i}"), args.task_seconds * 1000);
    Submission {
        id: event.task.id.to_string(),
        json: serde_json::to_vec(&event).expect("a task event encodes"),
    }
}

/// `connections` clients, each sending its next request as soon as the last one is answered,
/// for `duration`. `body(c, i)` is client c's ith body, or None for a GET.
pub(super) async fn closed_loop(
    url: &str,
    connections: usize,
    duration: Duration,
    body: impl Fn(usize, u64) -> Option<Submission>,
) -> Outcome {
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let client = pooled_client(connections);
    let start = Instant::now();
    let deadline = start + duration;
    let clients = (0..connections).map(|c| {
        let (client, outcome, body) = (client.clone(), outcome.clone(), &body);
        async move {
            let mut i = 0;
            while Instant::now() < deadline {
                i += 1;
                request(&client, url, body(c, i), &outcome).await;
                if outcome.borrow().refused_latency.len() % 64 == 63 {
                    // Backed off: a 429 says to retry later.
                    actix_web::rt::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    futures_util::future::join_all(clients).await;
    let mut outcome = Rc::try_unwrap(outcome)
        .ok()
        .expect("clients done")
        .into_inner();
    outcome.elapsed = start.elapsed();
    outcome.ended = Some(Utc::now());
    outcome
}

/// Requests at a fixed `rate` for `duration`, each sent on time whether or not the earlier ones
/// were answered (an open loop), then waits for the answers.
pub(super) async fn open_loop(
    url: &str,
    rate: f64,
    duration: Duration,
    phase: &str,
    generator: usize,
    args: &BenchArgs,
) -> Outcome {
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    let client = pooled_client(4096);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut in_flight = Vec::new();
    while start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            let body = submission(args, phase, generator, sent);
            let (client, outcome, url) = (client.clone(), outcome.clone(), url.to_string());
            in_flight.push(actix_web::rt::spawn(async move {
                request(&client, &url, Some(body), &outcome).await;
            }));
        }
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    let offered_for = start.elapsed();
    for request in in_flight {
        let _ = request.await;
    }
    let mut outcome = Rc::try_unwrap(outcome)
        .ok()
        .expect("requests done")
        .into_inner();
    outcome.elapsed = offered_for;
    outcome.ended = Some(Utc::now());
    outcome
}

/// Runs a load generator on a thread of its own (its own actix system), as an outside client
/// would be: the cluster's actors keep this thread.
pub(super) async fn off_thread<F, Fut>(make: F) -> Outcome
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Outcome> + 'static,
{
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("cube-bench-client".into())
        .spawn(move || {
            let outcome = actix_web::rt::System::new().block_on(make());
            let _ = done.send(outcome);
        })
        .expect("a client thread starts");
    outcome.await.unwrap_or_default()
}

/// p50, p99 and p99.9 of `xs`, in milliseconds.
pub(super) fn percentiles(mut xs: Vec<Duration>) -> String {
    if xs.is_empty() {
        return "no samples".into();
    }
    xs.sort();
    let at = |p: f64| {
        let i = ((xs.len() as f64 * p).ceil() as usize).clamp(1, xs.len()) - 1;
        xs[i].as_secs_f64() * 1000.0
    };
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
        at(0.50),
        at(0.99),
        at(0.999)
    )
}
