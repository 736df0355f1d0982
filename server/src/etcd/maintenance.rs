//! etcd's `Maintenance` service: status, alarms, hashes, snapshots, leader moves.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::etcd::{KvError, KvServer};
use crate::node::NodeError;
use crate::pb::etcdserverpb::{
    self as pb, alarm_request::AlarmAction, maintenance_server::Maintenance,
};
use crate::pb::quorumkv::internal_request::Request as Req;

/// The version reported to clients (the etcd API level served).
pub const API_VERSION: &str = "3.5.0";
const SNAPSHOT_CHUNK_BYTES: usize = 64 << 10;

/// The Maintenance service of one member.
#[derive(Debug, Clone)]
pub struct MaintenanceService {
    pub(crate) server: Arc<KvServer>,
}

impl MaintenanceService {
    /// Checks the caller is the administrator, as etcd does for everything here but `Status`
    /// and `Alarm`.
    fn admin<T>(&self, req: &Request<T>) -> Result<(), KvError> {
        self.server
            .authorize_admin(super::token(req.metadata()).as_deref())
            .map(|_| ())
    }

    fn alarms(&self) -> Vec<pb::AlarmMember> {
        self.server
            .shared()
            .alarms
            .lock()
            .iter()
            .map(|(m, a)| pb::AlarmMember {
                member_id: *m,
                alarm: *a,
            })
            .collect()
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let token = super::token(req.metadata());
        let r = req.into_inner();
        let action = AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get);
        if action == AlarmAction::Get {
            return Ok(Response::new(pb::AlarmResponse {
                header: Some(self.server.header(self.server.shared().core.hub.revision())),
                alarms: self.alarms(),
            }));
        }
        // Raising an alarm stops every write and clearing one lifts that stop: with
        // authentication on, only the administrator may do either.
        let caller = self.server.authorize_admin(token.as_deref())?;
        // Deactivating for member 0 clears that alarm for every member; activation, as in
        // etcd, is for the member named, whatever its id.
        let members: Vec<u64> = if r.member_id == 0 && action == AlarmAction::Deactivate {
            self.alarms().iter().map(|a| a.member_id).collect()
        } else {
            vec![r.member_id]
        };
        // As etcd answers: the alarms this call activated, or those it found and deactivated.
        let mut acted = Vec::new();
        let mut rev = 0;
        for m in members {
            let one = pb::AlarmMember {
                member_id: m,
                alarm: r.alarm,
            };
            let raised = self.alarms().contains(&one);
            let req = pb::AlarmRequest { member_id: m, ..r };
            rev = self.server.propose_as(Req::Alarm(req), &caller).await?.1;
            let counts = match action {
                AlarmAction::Activate => r.alarm != pb::AlarmType::None as i32,
                _ => raised,
            };
            if counts {
                acted.push(one);
            }
        }
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.server.header(rev)),
            alarms: acted,
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let state = self.server.node().state();
        let shared = self.server.shared();
        let mut errors: Vec<String> = self
            .alarms()
            .iter()
            .map(|a| {
                format!(
                    "memberID:{} alarm:{}",
                    a.member_id,
                    pb::AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name())
                )
            })
            .collect();
        if state.stopped() {
            errors.push("storage failed; not accepting writes".into());
        }
        if shared.core.pending.stopped() {
            errors.push("apply stopped after a storage error; not accepting writes".into());
        }
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.server.header(shared.core.hub.revision())),
            version: API_VERSION.into(),
            db_size: self.server.db_size_bytes() as i64,
            leader: state.leader(),
            raft_index: state.commit(),
            raft_term: state.term(),
            raft_applied_index: shared.core.pending.applied(),
            errors,
            db_size_in_use: self.server.db_in_use_bytes() as i64,
            is_learner: false,
            storage_version: API_VERSION.into(),
            db_size_quota: self.server.config().quota_backend_bytes as i64,
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.admin(&req)?;
        // Rewrites the tree into the lowest pages and gives the rest of the file back, as
        // etcd's defragmentation does; writes wait at most one short transaction at a time.
        static DEFRAGMENTING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
        let server = Arc::clone(&self.server);
        let size = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = DEFRAGMENTING.lock();
            server.shared().core.mvcc.db().defragment()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| KvError::Storage(e.to_string()))?;
        tracing::info!(file_bytes = size, "defragmented");
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.server.header(self.server.shared().core.hub.revision())),
        }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.admin(&req)?;
        // The whole tree is read: on a blocking thread, not a runtime worker.
        let server = Arc::clone(&self.server);
        tokio::task::spawn_blocking(move || {
            let snap = server.shared().core.mvcc.snapshot();
            let mut h = 0u32;
            for item in snap.txn().iter() {
                let (k, v) = item.map_err(|e| Status::internal(e.to_string()))?;
                h = crc32c::crc32c_append(h, k);
                h = crc32c::crc32c_append(h, v);
            }
            Ok(Response::new(pb::HashResponse {
                header: Some(server.header(snap.revision().map_err(KvError::from)?)),
                hash: h,
            }))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.admin(&req)?;
        let revision = req.get_ref().revision;
        Ok(Response::new(self.server.hash_kv_blocking(revision).await?))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admin(&req)?;
        let server = Arc::clone(&self.server);
        let path = server.config().node.data_dir.join(format!(
            "snapshot-{}.tmp",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let header = server.header(server.shared().core.hub.revision());
        let p = path.clone();
        let s = Arc::clone(&server);
        let size = tokio::task::spawn_blocking(move || {
            let members: Vec<_> = s.shared().core.roster.all();
            crate::etcd::backup::write(&s.shared().core.mvcc, &members, &p)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("writing snapshot: {e}")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let run = || -> std::io::Result<()> {
                let mut f = std::fs::File::open(&path)?;
                let mut left = size;
                loop {
                    let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES.min(left as usize)];
                    f.read_exact(&mut buf)?;
                    left -= buf.len() as u64;
                    let msg = pb::SnapshotResponse {
                        header: Some(header),
                        remaining_bytes: left,
                        blob: buf,
                        version: API_VERSION.into(),
                    };
                    if tx.blocking_send(Ok(msg)).is_err() || left == 0 {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
            }
            let _ = std::fs::remove_file(&path);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.admin(&req)?;
        let target = req.get_ref().target_id;
        if !self.server.node().state().is_leader() {
            return Err(KvError::NotLeader.into());
        }
        if !self.server.members().iter().any(|m| m.id == target) {
            return Err(KvError::BadLeaderTransferee.into());
        }
        self.server
            .node()
            .transfer_leader(target)
            .await
            .map_err(|e| match e {
                NodeError::Propose(quorumkv_replication::ProposeError::Unsupported(_)) => {
                    KvError::NotCapable
                }
                e => crate::etcd::node_error(e),
            })?;
        // Wait (bounded) for the move to show.
        for _ in 0..50 {
            if self.server.node().state().leader() == target {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Response::new(pb::MoveLeaderResponse {
            header: Some(self.server.header(0)),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(KvError::NotCapable.into())
    }
}
