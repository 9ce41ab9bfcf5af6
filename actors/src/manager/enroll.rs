//! Enrollment: how a worker on another machine joins the cluster.
//!
//! A worker enrolls itself (`POST /nodes`, which the HTTP edge admits with the join token only)
//! with its name, its address and its identity: a key it made at its first start. The manager
//! keeps the hash of that key under the name, so another process cannot take the name over; a
//! node whose data dir was lost (a new key) takes its name back only with `replace`. The manager
//! answers with a credential of this worker's own, which it presents on every call to that
//! worker: one worker's credential opens no other worker. Then it connects to the worker with
//! it, as a node.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Manager, ManagerError};
use crate::backoff::Backoff;
use crate::node::{LOCAL_ADDRESS, Node};
use crate::remote_worker::{RemoteWorker, WorkerHandle, http_base};
use crate::secret::{Token, TokenHash};
use crate::store::{Put, Record, Table};
use crate::task::InvalidTask;
use crate::worker::{GetNodeInfo, PROTOCOL_VERSION, WorkerError};

/// What the manager keeps of an enrolled worker (a record of the store, never shown by the API).
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// The node's name.
    pub name: String,
    /// Where the manager reaches it.
    pub address: String,
    /// The hash of the node's identity key.
    pub identity: TokenHash,
    /// What the manager presents when it calls the node.
    pub credential: Token,
    /// When it enrolled (last).
    pub enrolled_at: DateTime<Utc>,
}

impl Record for Enrollment {
    const TABLE: Table = Table::Enrollments;
    fn key(&self) -> String {
        self.name.clone()
    }
}

/// A worker asks to join: answers with the credential the manager will call it with.
#[derive(Message)]
#[rtype(result = "Result<Token, ManagerError>")]
pub struct Enroll {
    /// The worker's name.
    pub name: String,
    /// Its API address (`http://host:port` or `https://...`).
    pub address: String,
    /// Its identity key.
    pub node_key: Token,
    /// Take the name over from a node of another identity.
    pub replace: bool,
    /// The worker protocol version it speaks.
    pub protocol: u32,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManagerError {
    ManagerError::Invalid(InvalidTask {
        field: field.into(),
        reason: reason.into(),
    })
}

/// The checks that need no I/O: a sane name and address, the same protocol, and the identity of
/// a name already enrolled (unless `replace`).
fn admit(msg: &Enroll, known: Option<&Enrollment>, local: bool) -> Result<String, ManagerError> {
    let name_ok = !msg.name.is_empty()
        && msg.name.len() <= 63
        && msg
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(invalid(
            "Name",
            "a node name is 1 to 63 letters, digits, `-`, `_` or `.`",
        ));
    }
    let address = http_base(&msg.address);
    let url_ok = (address.starts_with("http://") || address.starts_with("https://"))
        && address.len() <= 512
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    if !url_ok {
        return Err(invalid(
            "Address",
            "the worker's address is http://host:port or https://host:port",
        ));
    }
    if msg.protocol != PROTOCOL_VERSION {
        return Err(ManagerError::Conflict(format!(
            "worker {} speaks worker protocol version {}, this manager speaks version {PROTOCOL_VERSION}: run the same version of cube on both",
            msg.name, msg.protocol
        )));
    }
    if local {
        return Err(ManagerError::Conflict(format!(
            "node {} is a node of the manager's own process",
            msg.name
        )));
    }
    if let Some(known) = known
        && !known.identity.matches(msg.node_key.expose())
        && !msg.replace
    {
        return Err(ManagerError::Conflict(format!(
            "node {} is already enrolled with another identity (the key it made at its first start); if that node lost its data directory, start it again with --replace",
            msg.name
        )));
    }
    Ok(address)
}

/// Handler for [`Enroll`]: checks, asks the worker's `/health` that it is there under that
/// name, stores the enrollment, answers the credential, then connects to the worker.
impl Handler<Enroll> for Manager {
    type Result = ResponseActFuture<Self, Result<Token, ManagerError>>;

    fn handle(&mut self, msg: Enroll, _: &mut Context<Self>) -> Self::Result {
        let local = self
            .nodes
            .get(&msg.name)
            .is_some_and(|e| e.node.address == LOCAL_ADDRESS);
        let address = match admit(&msg, self.enrollments.get(&msg.name), local) {
            Ok(address) => address,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let enrollment = Enrollment {
            name: msg.name.clone(),
            address: address.clone(),
            identity: msg.node_key.hash(),
            credential: Token::generate("call"),
            enrolled_at: Utc::now(),
        };
        let client = crate::tls::http_client(
            self.config.remote.tls.as_ref(),
            Some(self.config.remote.timeout),
        );
        let store = self.store.clone();
        let name = msg.name.clone();
        let check = async move {
            answers_as(&client, &address, &name).await?;
            store.send(Put(enrollment.clone())).await??;
            Ok::<_, ManagerError>(enrollment)
        };
        Box::pin(check.into_actor(self).map(move |res, act, ctx| {
            let enrollment = res?;
            // Another enrollment of the name may have landed meanwhile.
            let local = act
                .nodes
                .get(&msg.name)
                .is_some_and(|e| e.node.address == LOCAL_ADDRESS);
            admit(&msg, act.enrollments.get(&msg.name), local)?;
            let replaced = act
                .enrollments
                .get(&msg.name)
                .is_some_and(|k| !k.identity.matches(msg.node_key.expose()));
            if replaced {
                log::warn!(
                    "node {} enrolled with a new identity (--replace), at {}",
                    msg.name,
                    enrollment.address
                );
            }
            let credential = enrollment.credential.clone();
            act.enrollments.insert(msg.name.clone(), enrollment);
            act.connect_enrolled(msg.name, ctx);
            Ok(credential)
        }))
    }
}

/// Checks that the worker at `address` answers its (open) `/health` under `name`: the address
/// the worker gave is one the manager can reach, and it is that worker's.
async fn answers_as(client: &awc::Client, address: &str, name: &str) -> Result<(), ManagerError> {
    let unreachable = |reason: String| ManagerError::Worker {
        node: name.to_string(),
        error: WorkerError::Unreachable(format!("the manager cannot reach {address}: {reason}")),
    };
    let mut response = client
        .get(format!("{address}/health"))
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let health: serde_json::Value = response
        .json()
        .limit(4096)
        .await
        .map_err(|_| unreachable("its /health is not a Cube worker's".into()))?;
    match health["Name"].as_str() {
        Some(n) if n == name => Ok(()),
        Some(other) => Err(ManagerError::Conflict(format!(
            "the worker at {address} is named {other}, not {name}"
        ))),
        None => Err(unreachable("its /health is not a Cube worker's".into())),
    }
}

/// Connects to an enrolled node by its enrollment (address and credential): asks its name,
/// capacity and protocol, and adds it as a node.
#[derive(Message)]
#[rtype(result = "Result<Node, ManagerError>")]
pub struct ConnectWorker {
    /// The enrolled node's name.
    pub name: String,
}

/// Handler for [`ConnectWorker`].
impl Handler<ConnectWorker> for Manager {
    type Result = ResponseActFuture<Self, Result<Node, ManagerError>>;

    fn handle(&mut self, msg: ConnectWorker, _: &mut Context<Self>) -> Self::Result {
        let Some(enrollment) = self.enrollments.get(&msg.name).cloned() else {
            return Box::pin(fut::ready(Err(ManagerError::NodeNotFound(msg.name))));
        };
        let address = enrollment.address.clone();
        let remote = RemoteWorker::new(
            address.clone(),
            self.config.remote.clone(),
            Some(enrollment.credential.clone()),
        )
        .start();
        let handle = WorkerHandle::Remote(remote);
        let ask = handle.clone();
        let fut = async move { ask.send(GetNodeInfo).await };
        Box::pin(fut.into_actor(self).map(move |res, act, ctx| {
            let info = res.map_err(|error| ManagerError::Worker {
                node: msg.name.clone(),
                error,
            })?;
            if info.name != msg.name {
                return Err(ManagerError::Conflict(format!(
                    "the worker at {address} is named {}, not {}",
                    info.name, msg.name
                )));
            }
            if info.protocol != PROTOCOL_VERSION {
                return Err(ManagerError::Conflict(format!(
                    "worker {} at {address} speaks worker protocol version {}, this manager speaks version {PROTOCOL_VERSION}: run the same version of cube on both",
                    info.name, info.protocol
                )));
            }
            let current = act
                .enrollments
                .get(&msg.name)
                .is_some_and(|e| e.credential == enrollment.credential);
            if !current {
                return Err(ManagerError::Conflict(format!(
                    "node {} enrolled again meanwhile",
                    msg.name
                )));
            }
            let node = Node {
                name: info.name,
                address,
                role: "worker".into(),
                capacity: info.capacity,
                eligible: true,
                joined_at: Utc::now(),
            };
            act.add_node(node.clone(), handle, ctx);
            Ok(node)
        }))
    }
}

impl Manager {
    /// Connects to the newly enrolled node `name`, retrying for a while: the worker installs its
    /// credential once it has the manager's answer, so the first call may come too early.
    pub(super) fn connect_enrolled(&mut self, name: String, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let connect = async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            let mut last = String::new();
            for _ in 0..40 {
                actix::clock::sleep(backoff.next_wait()).await;
                match me.send(ConnectWorker { name: name.clone() }).await {
                    Ok(Ok(node)) => {
                        log::info!("connected to worker {} at {}", node.name, node.address);
                        return;
                    }
                    Ok(Err(ManagerError::Conflict(reason))) => {
                        log::warn!("not connecting to worker {name}: {reason}");
                        return;
                    }
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => return,
                }
            }
            log::warn!("worker {name} enrolled but the manager cannot connect to it: {last}");
        };
        ctx.spawn(connect.into_actor(self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enroll(name: &str, key: &Token, replace: bool) -> Enroll {
        Enroll {
            name: name.into(),
            address: "http://10.0.0.7:5556".into(),
            node_key: key.clone(),
            replace,
            protocol: PROTOCOL_VERSION,
        }
    }

    fn known(key: &Token) -> Enrollment {
        Enrollment {
            name: "w1".into(),
            address: "http://10.0.0.7:5556".into(),
            identity: key.hash(),
            credential: Token::generate("call"),
            enrolled_at: Utc::now(),
        }
    }

    #[test]
    fn a_name_is_kept_by_its_identity_unless_replaced() {
        let key = Token::generate("node");
        let other = Token::generate("node");
        let stored = known(&key);
        assert!(admit(&enroll("w1", &key, false), Some(&stored), false).is_ok());
        let refused = admit(&enroll("w1", &other, false), Some(&stored), false).unwrap_err();
        assert!(refused.to_string().contains("--replace"), "{refused}");
        assert!(admit(&enroll("w1", &other, true), Some(&stored), false).is_ok());
        assert!(admit(&enroll("w2", &other, false), None, false).is_ok());
    }

    #[test]
    fn odd_names_addresses_protocols_and_local_names_are_refused() {
        let key = Token::generate("node");
        assert!(admit(&enroll("", &key, false), None, false).is_err());
        assert!(admit(&enroll("a/b", &key, false), None, false).is_err());
        let mut bad = enroll("w1", &key, false);
        bad.address = "ftp://x".into();
        assert!(admit(&bad, None, false).is_err());
        let mut old = enroll("w1", &key, false);
        old.protocol = 1;
        assert!(
            admit(&old, None, false)
                .unwrap_err()
                .to_string()
                .contains("version 1")
        );
        assert!(admit(&enroll("node-1", &key, true), None, true).is_err());
    }
}
