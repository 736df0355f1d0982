//! etcd's `Lease` service. Grants and revokes go through the log; keep-alives and TTL queries
//! are the leader's (its lessor holds the deadlines), so a follower relays them.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::etcd::{Applied, KvError, KvServer};
use crate::member::keyspace;
use crate::member::lessor::{MAX_LEASE_TTL_SECS, Renewal};
use crate::pb::etcdserverpb::{self as pb, lease_client::LeaseClient, lease_server::Lease};
use crate::pb::quorumkv::internal_request::Request as Req;

/// How often a keep-alive of an expired lease looks whether its revoke is done.
const EXPIRED_POLL: Duration = Duration::from_millis(20);

/// The Lease service of one member.
#[derive(Debug, Clone)]
pub struct LeaseService {
    pub(crate) server: Arc<KvServer>,
}

impl LeaseService {
    async fn leader_client(&self) -> Result<LeaseClient<tonic::transport::Channel>, KvError> {
        Ok(LeaseClient::new(self.server.await_leader_channel().await?))
    }

    /// One keep-alive: renewed here on the leader, relayed otherwise. TTL 0: no such lease.
    ///
    /// The leader first confirms with a quorum that it still leads (a read barrier), as etcd
    /// does since 3.5.8: a leader paused or cut off would otherwise renew a lease that a newer
    /// leader is about to expire, and the client would trust a deadline nobody keeps.
    pub(crate) async fn keep_alive_one(
        &self,
        id: i64,
    ) -> Result<pb::LeaseKeepAliveResponse, KvError> {
        let state = self.server.node().state();
        if state.is_leader() {
            self.server.read_barrier().await?;
            if !state.is_leader() {
                return Err(KvError::LeaderChanged);
            }
            let ttl = self.renew_here(id).await?;
            return Ok(pb::LeaseKeepAliveResponse {
                header: Some(self.server.header(self.server.shared().core.hub.revision())),
                id,
                ttl,
            });
        }
        let mut client = self.leader_client().await?;
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
        drop(tx);
        let mut stream = client
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .map_err(KvError::from)?
            .into_inner();
        match stream.next().await {
            Some(Ok(r)) => Ok(r),
            Some(Err(s)) => Err(s.into()),
            None => Err(KvError::LeaderChanged),
        }
    }

    /// Renews lease `id` on this member, which leads; its TTL (0: no such lease). A lease
    /// past its deadline is not renewed: as etcd does, this waits for its revoke and then
    /// answers that it is gone, or fails if this member stops leading first.
    async fn renew_here(&self, id: i64) -> Result<i64, KvError> {
        let state = self.server.node().state();
        let deadline = tokio::time::Instant::now() + self.server.config().request_timeout;
        loop {
            let renewed = self.server.shared().core.lessor.lock().renew(id);
            return match renewed {
                Renewal::Renewed {
                    ttl_secs,
                    clear: true,
                } => {
                    // A checkpoint of this lease is logged: clear it before answering, or a
                    // new leader could start from a remaining TTL older than this renewal.
                    // The clear goes in after any checkpoint taken before the renewal.
                    let clear = pb::LeaseCheckpointRequest {
                        checkpoints: vec![pb::LeaseCheckpoint {
                            id,
                            remaining_ttl: 0,
                        }],
                    };
                    let order = Arc::clone(&self.server.shared().core.lease_log_order)
                        .lock_owned()
                        .await;
                    self.server
                        .propose_in_order(Req::LeaseCheckpoint(clear), order)
                        .await?;
                    Ok(ttl_secs)
                }
                Renewal::Renewed {
                    ttl_secs,
                    clear: false,
                } => Ok(ttl_secs),
                Renewal::Unknown => Ok(0),
                Renewal::Expired => {
                    if !state.is_leader() {
                        return Err(KvError::LeaderChanged);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(KvError::Timeout);
                    }
                    tokio::time::sleep(EXPIRED_POLL).await;
                    continue;
                }
            };
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let mut g = req.into_inner();
        if g.ttl > MAX_LEASE_TTL_SECS {
            return Err(KvError::LeaseTtlTooLarge.into());
        }
        if g.id == 0 {
            g.id = self.server.new_lease_id();
        }
        match self.server.propose(Req::LeaseGrant(g)).await? {
            (Applied::LeaseGrant(id, ttl), rev) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(self.server.header(rev)),
                id,
                ttl,
                error: String::new(),
            })),
            _ => Err(Status::internal("unexpected apply result")),
        }
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let token = super::token(req.metadata());
        let r = Req::LeaseRevoke(req.into_inner());
        let caller = self.server.authorize(token.as_deref(), &r)?;
        let (_, rev) = self.server.propose_as(r, &caller).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.server.header(rev)),
        }))
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                let resp = this.keep_alive_one(r.id).await.map_err(Status::from);
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        // With keys, the caller must be able to read every key attached (etcd #15656);
        // checked here, where the caller's token is known, before any relay.
        let token = super::token(req.metadata());
        let r = req.into_inner();
        if r.keys && self.server.shared().auth.state().enabled() {
            let keys = self.server.shared().core.lessor.lock().keys(r.id);
            for k in keys.iter().filter(|k| !keyspace::is_reserved(k)) {
                self.server.authorize_read(token.as_deref(), k, &[])?;
            }
        }
        if !self.server.node().state().is_leader() {
            let mut client = self.leader_client().await?;
            return client.lease_time_to_live(r).await;
        }
        if r.keys {
            // A put acknowledged by a follower once it applied it may not have applied here
            // yet: the keys are read once everything committed before the call has.
            self.server.read_barrier().await?;
        }
        let header = Some(self.server.header(self.server.shared().core.hub.revision()));
        let found = self.server.shared().core.lessor.lock().time_to_live(r.id);
        Ok(Response::new(match found {
            Some((ttl, granted, keys)) => pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl,
                granted_ttl: granted,
                keys: if r.keys {
                    // Rows of other client APIs attached to the lease stay out of etcd's view.
                    keys.into_iter()
                        .filter(|k| !keyspace::is_reserved(k))
                        .collect()
                } else {
                    Vec::new()
                },
            },
            None => pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let core = &self.server.shared().core;
        let ids = core.lessor.lock().ids();
        // ZooKeeper's sessions are leases underneath, but no etcd client's business.
        let snap = core.mvcc.snapshot();
        let leases = ids
            .into_iter()
            .filter(|&id| !crate::zk::session::is_session(&snap, id))
            .map(|id| pb::LeaseStatus { id })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.server.header(core.hub.revision())),
            leases,
        }))
    }
}
