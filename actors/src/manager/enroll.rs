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
use crate::remote_worker::{RemoteWorker, WorkerHandle, http_base, is_loopback};
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
    /// The request came with the admin token (which may replace a live node).
    pub admin: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ManagerError {
    ManagerError::Invalid(InvalidTask {
        field: field.into(),
        reason: reason.into(),
    })
}

/// Where the name being enrolled stands now.
#[derive(Debug, Clone, Copy, Default)]
struct Standing {
    /// A node of the manager's own process has it.
    local: bool,
    /// An enrolled node has it and answers (Ready).
    live: bool,
}

/// What the manager allows of enrollments.
#[derive(Debug, Clone, Copy, Default)]
struct Policy {
    /// The request came with the admin token (not only the join token).
    admin: bool,
    /// Plain `http://` workers on other machines are allowed.
    insecure_http: bool,
}

/// The checks that need no I/O: a sane name and address (HTTPS unless on this machine or
/// allowed), the same protocol, and the identity of a name already enrolled: another one takes
/// it only with `replace`, and with the join token only from a node that no longer answers.
fn admit(
    msg: &Enroll,
    known: Option<&Enrollment>,
    standing: Standing,
    policy: Policy,
) -> Result<String, ManagerError> {
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
    if address.starts_with("http://") && !is_loopback(&address) && !policy.insecure_http {
        return Err(invalid(
            "Address",
            "a worker on another machine is reached over HTTPS (https://, `cube tls init`): the manager sends it tasks and their secrets",
        ));
    }
    if msg.protocol != PROTOCOL_VERSION {
        return Err(ManagerError::Conflict(format!(
            "worker {} speaks worker protocol version {}, this manager speaks version {PROTOCOL_VERSION}: run the same version of cube on both",
            msg.name, msg.protocol
        )));
    }
    if standing.local {
        return Err(ManagerError::Conflict(format!(
            "node {} is a node of the manager's own process",
            msg.name
        )));
    }
    if let Some(known) = known
        && !known.identity.matches(msg.node_key.expose())
    {
        if !msg.replace {
            return Err(ManagerError::Conflict(format!(
                "node {} is already enrolled with another identity (the key it made at its first start); if that node lost its data directory, start it again with --replace",
                msg.name
            )));
        }
        if standing.live && !policy.admin {
            return Err(ManagerError::Conflict(format!(
                "node {} is Ready under its old identity: --replace takes the name of a node that no longer answers; stop the old one first (or replace it with the admin token)",
                msg.name
            )));
        }
    }
    Ok(address)
}

impl Manager {
    /// Where `name` stands in the node book.
    fn standing(&self, name: &str) -> Standing {
        let entry = self.nodes.get(name);
        Standing {
            local: entry.is_some_and(|e| e.node.address == LOCAL_ADDRESS),
            live: entry.is_some_and(|e| e.status == crate::node::NodeStatus::Ready),
        }
    }
}

/// Handler for [`Enroll`]: checks, asks the worker's `/health` that it is there under that
/// name, checks again (another enrollment of the name may have landed meanwhile) and takes the
/// name in memory at once, stores the enrollment, answers the credential, then connects to the
/// worker.
impl Handler<Enroll> for Manager {
    type Result = ResponseActFuture<Self, Result<Token, ManagerError>>;

    fn handle(&mut self, msg: Enroll, _: &mut Context<Self>) -> Self::Result {
        let policy = Policy {
            admin: msg.admin,
            insecure_http: self.config.allow_insecure_http,
        };
        let standing = self.standing(&msg.name);
        let address = match admit(&msg, self.enrollments.get(&msg.name), standing, policy) {
            Ok(address) => address,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let client = crate::tls::http_client(
            self.config.remote.tls.as_ref(),
            Some(self.config.remote.timeout),
        );
        let name = msg.name.clone();
        let check = async move { answers_as(&client, &address, &name).await.map(|()| address) };
        Box::pin(check.into_actor(self).then(move |res, act, _| {
            let admitted = res.and_then(|address| {
                let standing = act.standing(&msg.name);
                admit(&msg, act.enrollments.get(&msg.name), standing, policy).map(|_| address)
            });
            let address = match admitted {
                Ok(address) => address,
                Err(e) => return Box::pin(fut::ready(Err(e))) as Self::Result,
            };
            let enrollment = Enrollment {
                name: msg.name.clone(),
                address,
                identity: msg.node_key.hash(),
                credential: Token::generate("call"),
                enrolled_at: Utc::now(),
            };
            let previous = act.enrollments.insert(msg.name.clone(), enrollment.clone());
            if previous
                .as_ref()
                .is_some_and(|p| !p.identity.matches(msg.node_key.expose()))
            {
                log::warn!(
                    "node {} enrolled with a new identity (--replace), at {}",
                    msg.name,
                    enrollment.address
                );
            }
            let store = act.store.clone();
            let credential = enrollment.credential.clone();
            let write = async move { store.send(Put(enrollment)).await };
            Box::pin(write.into_actor(act).map(move |res, act, ctx| {
                let name = msg.name;
                match res.map_err(crate::store::StoreError::from).and_then(|r| r) {
                    Ok(()) => {
                        act.connect_enrolled(name, ctx);
                        Ok(credential)
                    }
                    Err(e) => {
                        // Not durable: as if it had not happened, unless overtaken.
                        if act
                            .enrollments
                            .get(&name)
                            .is_some_and(|e| e.credential == credential)
                        {
                            match previous {
                                Some(previous) => act.enrollments.insert(name, previous),
                                None => act.enrollments.remove(&name),
                            };
                        }
                        Err(e.into())
                    }
                }
            }))
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
            // A node that enrolls again keeps what the admin decided (drained stays drained).
            let before = act.nodes.get(&msg.name).map(|e| &e.node);
            let node = Node {
                name: info.name,
                address,
                role: "worker".into(),
                capacity: info.capacity,
                eligible: before.is_none_or(|n| n.eligible),
                joined_at: before.map_or_else(Utc::now, |n| n.joined_at),
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
            address: "https://10.0.0.7:5556".into(),
            node_key: key.clone(),
            replace,
            protocol: PROTOCOL_VERSION,
            admin: false,
        }
    }

    fn known(key: &Token) -> Enrollment {
        Enrollment {
            name: "w1".into(),
            address: "https://10.0.0.7:5556".into(),
            identity: key.hash(),
            credential: Token::generate("call"),
            enrolled_at: Utc::now(),
        }
    }

    const DOWN: Standing = Standing {
        local: false,
        live: false,
    };
    const LIVE: Standing = Standing {
        local: false,
        live: true,
    };
    const JOIN: Policy = Policy {
        admin: false,
        insecure_http: false,
    };

    #[test]
    fn a_name_is_kept_by_its_identity_unless_replaced() {
        let key = Token::generate("node");
        let other = Token::generate("node");
        let stored = known(&key);
        assert!(admit(&enroll("w1", &key, false), Some(&stored), LIVE, JOIN).is_ok());
        let refused = admit(&enroll("w1", &other, false), Some(&stored), DOWN, JOIN).unwrap_err();
        assert!(refused.to_string().contains("--replace"), "{refused}");
        assert!(admit(&enroll("w1", &other, true), Some(&stored), DOWN, JOIN).is_ok());
        assert!(admit(&enroll("w2", &other, false), None, DOWN, JOIN).is_ok());
    }

    #[test]
    fn the_join_token_replaces_only_a_node_that_no_longer_answers() {
        let key = Token::generate("node");
        let other = Token::generate("node");
        let stored = known(&key);
        let refused = admit(&enroll("w1", &other, true), Some(&stored), LIVE, JOIN).unwrap_err();
        assert!(
            refused.to_string().contains("no longer answers"),
            "{refused}"
        );
        let admin = Policy {
            admin: true,
            ..JOIN
        };
        assert!(admit(&enroll("w1", &other, true), Some(&stored), LIVE, admin).is_ok());
    }

    #[test]
    fn plain_http_is_for_this_machine_only_unless_allowed() {
        let key = Token::generate("node");
        let mut remote = enroll("w1", &key, false);
        remote.address = "http://10.0.0.7:5556".into();
        let refused = admit(&remote, None, DOWN, JOIN).unwrap_err();
        assert!(refused.to_string().contains("HTTPS"), "{refused}");
        let insecure = Policy {
            insecure_http: true,
            ..JOIN
        };
        assert!(admit(&remote, None, DOWN, insecure).is_ok());
        for local in [
            "http://127.0.0.1:5556",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            remote.address = local.into();
            assert!(admit(&remote, None, DOWN, JOIN).is_ok(), "{local}");
        }
    }

    #[test]
    fn odd_names_addresses_protocols_and_local_names_are_refused() {
        let key = Token::generate("node");
        assert!(admit(&enroll("", &key, false), None, DOWN, JOIN).is_err());
        assert!(admit(&enroll("a/b", &key, false), None, DOWN, JOIN).is_err());
        let mut bad = enroll("w1", &key, false);
        bad.address = "ftp://x".into();
        assert!(admit(&bad, None, DOWN, JOIN).is_err());
        let mut old = enroll("w1", &key, false);
        old.protocol = 1;
        assert!(
            admit(&old, None, DOWN, JOIN)
                .unwrap_err()
                .to_string()
                .contains("version 1")
        );
        let local = Standing {
            local: true,
            live: true,
        };
        assert!(admit(&enroll("node-1", &key, true), None, local, JOIN).is_err());
    }
}
