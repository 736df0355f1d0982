//! One ZooKeeper request of a connection, answered: writes (alone or a multi) through the
//! log with the connection's identities, reads from the member's current snapshot with their
//! ACL checked here, watches armed under the watch table's lock at the read's revision, and
//! the connection's own business (auth, whoAmI, setWatches, removing watches).
//!
//! Never answers a read from a snapshot older than a watch it arms (see
//! [`super::watches::Watches::read`]), and never proposes anything but what the client
//! asked.

use super::acl::{self, AuthId};
use super::codes::{err, event, op, perm, watch_mode};
use super::jute::{Jute, Reader, Writer};
use super::ops::{self, Multi, ReadOp, ReadResult, WriteOp};
use super::read::{self, Found};
use super::records::*;
use super::session::{self, ZkContext};
use super::txn::{ZkAnswer, ZkDone, ZkTxn};
use super::watches::Kind;
use super::znode;
use crate::member::error::Error;
use crate::mvcc::Snapshot;

/// The connection a request came on.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its session.
    pub session: i64,
    /// Its id in the watch table.
    pub conn: u64,
    /// Who it is: its address, then what `addauth` added.
    pub ids: Vec<AuthId>,
    /// Served read-only by a member cut off from its quorum: writes answer NOTREADONLY.
    pub read_only: bool,
}

/// A request's answer.
#[derive(Debug)]
pub struct Reply {
    /// The zxid the reply carries.
    pub zxid: i64,
    /// The body, or the error code of the reply header.
    pub result: Result<Vec<u8>, i32>,
    /// The connection closes after this reply (a failed auth).
    pub close: bool,
}

/// Why a request ends its connection without a reply.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// A write's fate is unknown, or the member failed.
    #[error("member: {0}")]
    Member(#[from] Error),
    /// A record that does not decode.
    #[error("bad record: {0}")]
    Bad(#[from] super::jute::JuteError),
    /// The connection holds as many watches, or queued notifications, as it may.
    #[error("too many watches")]
    TooManyWatches,
}

fn storage(e: crate::mvcc::MvccError) -> Fatal {
    Fatal::Member(Error::Other(e.to_string()))
}

fn answer(zxid: i64, result: Result<Vec<u8>, i32>) -> Reply {
    Reply {
        zxid,
        result,
        close: false,
    }
}

/// Answers one request (anything but closeSession, which the connection handles).
pub async fn handle(
    ctx: &ZkContext,
    client: &mut Client,
    header: &RequestHeader,
    body: &[u8],
) -> Result<Reply, Fatal> {
    let mut rd = Reader::new(body);
    if is_write(header.kind, body) {
        if client.read_only {
            return Ok(answer(zxid_now(ctx).await, Err(err::NOT_READ_ONLY)));
        }
        if adds_data(header.kind, body) && !(ctx.may_add_data)() {
            // Out of space (etcd's NOSPACE): ZooKeeper's nearest refusal is its quota's.
            return Ok(answer(zxid_now(ctx).await, Err(err::QUOTA_EXCEEDED)));
        }
        return write(ctx, client, header.kind, body).await;
    }
    match header.kind {
        op::PING => Ok(answer(zxid_now(ctx).await, Ok(Vec::new()))),
        // Not a write (a multi of reads, or undecodable): multiRead's, not multi's.
        op::MULTI => Ok(answer(zxid_now(ctx).await, Err(err::MARSHALLING_ERROR))),
        op::MULTI_READ => match ops::decode(body) {
            Ok(Multi::Read(reads)) => multi_read(ctx, client, reads).await,
            Ok(Multi::Write(_)) | Err(_) => {
                Ok(answer(zxid_now(ctx).await, Err(err::MARSHALLING_ERROR)))
            }
        },
        op::EXISTS | op::GET_DATA | op::GET_CHILDREN | op::GET_CHILDREN2 => {
            let path = rd.ustring()?;
            let watch = rd.boolean()?;
            let reply = read_node(ctx, client, header.kind, &path, watch).await;
            // Test builds: `return(ms)` holds the reply of a read that armed a watch back that
            // long, so a change can fire the watch before the reply goes out.
            if watch
                && crate::FAILPOINTS_COMPILED
                && let Some(Some(ms)) = fail::eval("zk::after_watch_armed", |ms| {
                    ms.and_then(|ms| ms.parse::<u64>().ok())
                })
            {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            reply
        }
        op::GET_ACL => {
            let path = rd.ustring()?;
            let (snap, zxid) = settled(ctx).await;
            let Some(found) = read::node(&snap, &path).map_err(storage)? else {
                return Ok(answer(zxid, Err(err::NO_NODE)));
            };
            let acl = &found.record.acl;
            if !acl::allows(acl, &client.ids, perm::READ | perm::ADMIN) {
                return Ok(answer(zxid, Err(err::NO_AUTH)));
            }
            // Without READ, digests' hashes are hidden.
            let shown = if acl::allows(acl, &client.ids, perm::READ) {
                acl.clone()
            } else {
                acl::masked(acl)
            };
            let resp = GetAclResponse {
                acl: znode::wire_acl(&shown),
                stat: found.stat,
            };
            Ok(answer(zxid, Ok(resp.to_bytes())))
        }
        op::GET_ALL_CHILDREN_NUMBER => {
            let path = rd.ustring()?;
            let (snap, zxid) = settled(ctx).await;
            let found = match readable(&snap, &path, &client.ids)? {
                Ok(found) => found,
                Err(code) => return Ok(answer(zxid, Err(code))),
            };
            drop(found);
            let n = read::descendants(&snap, &path).map_err(storage)?;
            let total_number = i32::try_from(n).unwrap_or(i32::MAX);
            let resp = GetAllChildrenNumberResponse { total_number };
            Ok(answer(zxid, Ok(resp.to_bytes())))
        }
        op::GET_EPHEMERALS => {
            let prefix = rd.ustring()?;
            let mut ephemerals: Vec<String> = ctx
                .core
                .lessor
                .lock()
                .keys(client.session)
                .iter()
                .filter_map(|k| znode::path_of(k).map(str::to_string))
                .filter(|p| prefix == "/" || p.starts_with(&prefix))
                .collect();
            ephemerals.sort();
            let resp = GetEphemeralsResponse { ephemerals };
            Ok(answer(zxid_now(ctx).await, Ok(resp.to_bytes())))
        }
        op::SYNC => {
            let path = rd.ustring()?;
            ctx.proposer.read_barrier().await?;
            let mut w = Writer::default();
            w.ustring(&path);
            Ok(answer(zxid_now(ctx).await, Ok(w.bytes)))
        }
        op::AUTH => {
            let p: AuthPacket = rd.record()?;
            let zxid = zxid_now(ctx).await;
            match acl::authenticate(&p.scheme, &p.auth.0, ctx.cfg.super_digest.as_deref()) {
                Some(ids) => {
                    for id in ids {
                        if !client.ids.contains(&id) {
                            client.ids.push(id);
                        }
                    }
                    ctx.watches.identify(client.conn, client.ids.clone());
                    Ok(answer(zxid, Ok(Vec::new())))
                }
                None => Ok(Reply {
                    zxid,
                    result: Err(err::AUTH_FAILED),
                    close: true,
                }),
            }
        }
        op::WHO_AM_I => {
            let resp = WhoAmIResponse {
                client_info: client.ids.iter().map(AuthId::client_info).collect(),
            };
            Ok(answer(zxid_now(ctx).await, Ok(resp.to_bytes())))
        }
        op::SET_WATCHES | op::SET_WATCHES2 => {
            let w: SetWatches2 = if header.kind == op::SET_WATCHES {
                let w: SetWatches = rd.record()?;
                SetWatches2 {
                    relative_zxid: w.relative_zxid,
                    data_watches: w.data_watches,
                    exist_watches: w.exist_watches,
                    child_watches: w.child_watches,
                    ..SetWatches2::default()
                }
            } else {
                rd.record()?
            };
            set_watches(ctx, client, w).await
        }
        op::ADD_WATCH => {
            let req: AddWatchRequest = rd.record()?;
            let kind = match req.mode {
                watch_mode::PERSISTENT => Kind::Persistent,
                watch_mode::PERSISTENT_RECURSIVE => Kind::Recursive,
                _ => return Ok(answer(zxid_now(ctx).await, Err(err::BAD_ARGUMENTS))),
            };
            if znode::invalid_path(&req.path).is_some() {
                return Ok(answer(zxid_now(ctx).await, Err(err::BAD_ARGUMENTS)));
            }
            let (mut g, zxid) = ctx
                .watches
                .read(client.conn, || {
                    let zxid = view(ctx).1;
                    (zxid, zxid)
                })
                .await;
            if !g.watch(kind, &req.path) {
                return Err(Fatal::TooManyWatches);
            }
            drop(g);
            // Its answer is an error record saying OK (ZooKeeper's client reads one).
            Ok(answer(zxid, Ok(ErrorResponse { err: err::OK }.to_bytes())))
        }
        op::CHECK_WATCHES | op::REMOVE_WATCHES => {
            let req: WatchesRequest = rd.record()?;
            let zxid = zxid_now(ctx).await;
            let Some(kinds) = Kind::of_type(req.kind) else {
                return Ok(answer(zxid, Err(err::BAD_ARGUMENTS)));
            };
            let remove = header.kind == op::REMOVE_WATCHES;
            let held = ctx.watches.unwatch(client.conn, kinds, &req.path, remove);
            Ok(answer(
                zxid,
                if held {
                    Ok(Vec::new())
                } else {
                    Err(err::NO_WATCHER)
                },
            ))
        }
        op::RECONFIG => Ok(answer(zxid_now(ctx).await, Err(err::RECONFIG_DISABLED))),
        _ => Ok(answer(zxid_now(ctx).await, Err(err::UNIMPLEMENTED))),
    }
}

/// The member's snapshot now and its revision, once every event up to that revision is
/// fired: a reply reflecting it goes out after their notifications.
async fn settled(ctx: &ZkContext) -> (Snapshot, i64) {
    let (snap, zxid) = view(ctx);
    ctx.watches.fired_through(zxid).await;
    (snap, zxid)
}

/// The zxid a reply carries: the member's revision, its events fired.
async fn zxid_now(ctx: &ZkContext) -> i64 {
    settled(ctx).await.1
}

/// The member's snapshot now and its revision.
fn view(ctx: &ZkContext) -> (Snapshot, i64) {
    let snap = ctx.core.mvcc.snapshot();
    let revision = snap.revision().unwrap_or(0);
    (snap, revision)
}

/// `path` at `snap` if it exists and `ids` may read it; else NO_NODE or NO_AUTH.
fn readable(snap: &Snapshot, path: &str, ids: &[AuthId]) -> Result<Result<Found, i32>, Fatal> {
    Ok(match read::node(snap, path).map_err(storage)? {
        None => Err(err::NO_NODE),
        Some(found) if !acl::allows(&found.record.acl, ids, perm::READ) => Err(err::NO_AUTH),
        Some(found) => Ok(found),
    })
}

/// Whether a request of `kind` with `body` is a write (alone or a multi of them), carried by
/// the log.
pub fn is_write(kind: i32, body: &[u8]) -> bool {
    match kind {
        op::CREATE
        | op::CREATE2
        | op::CREATE_CONTAINER
        | op::CREATE_TTL
        | op::DELETE
        | op::SET_DATA
        | op::SET_ACL => true,
        op::MULTI => matches!(ops::decode(body), Ok(Multi::Write(_))),
        _ => false,
    }
}

/// Whether a write of `kind` with `body` adds data: anything but deletes (and a multi of
/// deletes and checks). Deletes go on when the disk is short, so space can be freed.
pub fn adds_data(kind: i32, body: &[u8]) -> bool {
    match kind {
        op::DELETE => false,
        op::MULTI => match ops::decode(body) {
            Ok(Multi::Write(ops)) => ops
                .iter()
                .any(|o| !matches!(o, WriteOp::Delete(_) | WriteOp::Check(_))),
            _ => false,
        },
        _ => is_write(kind, body),
    }
}

/// The log's record of a write of `kind` with `body`, made with the connection's identities.
pub fn write_txn(client: &Client, kind: i32, body: &[u8]) -> ZkTxn {
    ZkTxn {
        session: client.session,
        op: kind,
        body: body.to_vec(),
        auth: client.ids.clone(),
        ..ZkTxn::default()
    }
}

/// The reply to an applied write of `kind`.
pub fn written(kind: i32, done: ZkAnswer) -> Reply {
    let out = done.result.map(|done| match (kind, done) {
        (op::CREATE, ZkDone::Created { path, .. }) => CreateResponse { path }.to_bytes(),
        (_, ZkDone::Created { path, stat }) => Create2Response { path, stat }.to_bytes(),
        (_, ZkDone::Set(stat)) => StatResponse { stat }.to_bytes(),
        (_, ZkDone::Multi(results)) => ops::encode_writes(&results),
        (_, ZkDone::Done) => Vec::new(),
    });
    answer(done.zxid, out)
}

/// Proposes a write (or a multi of them) with the connection's identities.
async fn write(ctx: &ZkContext, client: &Client, kind: i32, body: &[u8]) -> Result<Reply, Fatal> {
    let done = session::propose(ctx, &write_txn(client, kind, body)).await?;
    Ok(written(kind, done))
}

/// exists, getData, getChildren, getChildren2, arming the watch asked for.
async fn read_node(
    ctx: &ZkContext,
    client: &Client,
    kind: i32,
    path: &str,
    watch: bool,
) -> Result<Reply, Fatal> {
    let (guard, snap) = if watch {
        let (g, snap) = ctx.watches.read(client.conn, || view(ctx)).await;
        (Some(g), snap)
    } else {
        let snap = settled(ctx).await.0;
        (None, snap)
    };
    let zxid = snap.revision().unwrap_or(0);
    let found = read::node(&snap, path).map_err(storage)?;
    // exists reads no data, so it needs no permission; the others need READ.
    if kind != op::EXISTS
        && let Some(f) = &found
        && !acl::allows(&f.record.acl, &client.ids, perm::READ)
    {
        return Ok(answer(zxid, Err(err::NO_AUTH)));
    }
    if let Some(mut g) = guard {
        // As ZooKeeper: exists watches a missing node for its creation; getData and
        // getChildren on a missing node leave no watch.
        let armed = match (kind, found.is_some()) {
            (op::EXISTS | op::GET_DATA, true) => Some(Kind::Data),
            (op::EXISTS, false) => Some(Kind::Exist),
            (op::GET_CHILDREN | op::GET_CHILDREN2, true) => Some(Kind::Child),
            _ => None,
        };
        if let Some(k) = armed
            && !g.watch(k, path)
        {
            return Err(Fatal::TooManyWatches);
        }
    }
    let Some(found) = found else {
        return Ok(answer(zxid, Err(err::NO_NODE)));
    };
    let out = match kind {
        op::EXISTS => StatResponse { stat: found.stat }.to_bytes(),
        op::GET_DATA => GetDataResponse {
            data: found.record.shown_data(),
            stat: found.stat,
        }
        .to_bytes(),
        op::GET_CHILDREN => GetChildrenResponse {
            children: read::children(&snap, path).map_err(storage)?,
        }
        .to_bytes(),
        _ => GetChildren2Response {
            children: read::children(&snap, path).map_err(storage)?,
            stat: found.stat,
        }
        .to_bytes(),
    };
    Ok(answer(zxid, Ok(out)))
}

/// multiRead: each read answered on its own from one snapshot.
async fn multi_read(ctx: &ZkContext, client: &Client, reads: Vec<ReadOp>) -> Result<Reply, Fatal> {
    let (snap, zxid) = settled(ctx).await;
    let mut results = Vec::with_capacity(reads.len());
    for r in reads {
        let path = match &r {
            ReadOp::GetChildren(p) | ReadOp::GetData(p) => p,
        };
        results.push(match (readable(&snap, path, &client.ids)?, r) {
            (Err(code), _) => ReadResult::Error(code),
            (Ok(found), ReadOp::GetData(_)) => {
                ReadResult::Data(found.record.shown_data(), found.stat)
            }
            (Ok(_), ReadOp::GetChildren(p)) => {
                ReadResult::Children(read::children(&snap, &p).map_err(storage)?)
            }
        });
    }
    Ok(answer(zxid, Ok(ops::encode_reads(results))))
}

/// setWatches: watches of a reconnecting client armed again, and what changed since the
/// zxid it last saw told at once, as ZooKeeper's `DataTree.setWatches` does.
async fn set_watches(ctx: &ZkContext, client: &Client, w: SetWatches2) -> Result<Reply, Fatal> {
    let (mut g, snap) = ctx.watches.read(client.conn, || view(ctx)).await;
    let zxid = snap.revision().unwrap_or(0);
    let since = w.relative_zxid;
    let mut ok = true;
    for path in &w.data_watches {
        ok &= match read::node(&snap, path).map_err(storage)? {
            None => g.notify(event::NODE_DELETED, path),
            Some(f) if f.stat.mzxid > since => g.notify(event::NODE_DATA_CHANGED, path),
            Some(_) => g.watch(Kind::Data, path),
        };
    }
    for path in &w.exist_watches {
        ok &= match read::node(&snap, path).map_err(storage)? {
            Some(_) => g.notify(event::NODE_CREATED, path),
            None => g.watch(Kind::Exist, path),
        };
    }
    for path in &w.child_watches {
        ok &= match read::node(&snap, path).map_err(storage)? {
            None => g.notify(event::NODE_DELETED, path),
            Some(f) if f.stat.pzxid > since => g.notify(event::NODE_CHILDREN_CHANGED, path),
            Some(_) => g.watch(Kind::Child, path),
        };
    }
    for path in &w.persistent_watches {
        ok &= g.watch(Kind::Persistent, path);
    }
    for path in &w.persistent_recursive_watches {
        ok &= g.watch(Kind::Recursive, path);
    }
    drop(g);
    if !ok {
        return Err(Fatal::TooManyWatches);
    }
    Ok(answer(zxid, Ok(Vec::new())))
}
