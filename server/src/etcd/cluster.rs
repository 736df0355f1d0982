//! etcd's `Cluster` service: the member list, and runtime membership changes carried through
//! the protocol's single-server membership change (Raft's, or ZAB's dynamic reconfiguration).
//!
//! Adding a member is two log entries: its attributes (id and peer URLs) go through the key
//! space first, so every member learns where to reach it, then the protocol's change makes it
//! a learner or a voter. Changes run on the leader; another member forwards the call there.
//! A member that finds itself removed stops (see `serve`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::reconfig::Reconfig;
use crate::etcd::rbac::Caller;
use crate::etcd::{KvError, KvServer, node_error};
use crate::member::envelope::MemberAttributes;
use crate::member::identity::Member;
use crate::member::roster;
use crate::pb::etcdserverpb::{self as pb, cluster_client::ClusterClient, cluster_server::Cluster};
use quorumkv_replication::ConfChange;

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub struct ClusterService {
    pub(crate) server: Arc<KvServer>,
}

fn to_pb(m: Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    fn member(&self, id: u64) -> Result<Member, KvError> {
        self.server
            .members()
            .into_iter()
            .find(|m| m.id == id)
            .ok_or(KvError::MemberNotFound)
    }

    fn members(&self) -> Vec<pb::Member> {
        self.server.members().into_iter().map(to_pb).collect()
    }

    /// Checks the caller is the administrator: membership changes are.
    fn admin<T>(&self, req: &Request<T>) -> Result<Caller, KvError> {
        self.server
            .authorize_admin(super::token(req.metadata()).as_deref())
    }

    /// The leader's Cluster service, when another member leads.
    async fn leader(&self) -> Result<Option<ClusterClient<tonic::transport::Channel>>, Status> {
        if self.server.node().state().is_leader() {
            return Ok(None);
        }
        Ok(Some(ClusterClient::new(
            self.server.await_leader_channel().await?,
        )))
    }

    /// Proposes `change` on this member (the leader) and waits until it commits.
    async fn change(&self, change: ConfChange) -> Result<(), Status> {
        let wait = self.server.node().change_membership(change);
        tokio::time::timeout(self.server.config().request_timeout, wait)
            .await
            .map_err(|_| KvError::Timeout)?
            .map_err(node_error)?;
        Ok(())
    }

    /// Records a member's attributes through the log.
    async fn publish(&self, m: MemberAttributes) -> Result<(), Status> {
        roster::publish(self.server.proposer(), m)
            .await
            .map_err(|e| KvError::from(e).into())
    }

    fn check_urls(&self, urls: &[String], except: u64) -> Result<(), Status> {
        if urls.is_empty() {
            return Err(KvError::MemberBadUrls.into());
        }
        for u in urls {
            if let Err(why) = crate::member::identity::parse_url(u) {
                tracing::info!(%why, "refused a member's peer URLs");
                return Err(KvError::MemberBadUrls.into());
            }
        }
        let taken = self
            .server
            .members()
            .iter()
            .filter(|m| m.id != except)
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)));
        if taken {
            return Err(KvError::PeerUrlExists.into());
        }
        Ok(())
    }
}

/// `req` to relay to the leader, with the caller's token.
fn relayed<T>(req: Request<T>, caller: &Caller) -> Request<T> {
    let mut out = Request::new(req.into_inner());
    super::pass_token(caller, out.metadata_mut());
    out
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let caller = self.admin(&req)?;
        if let Some(mut leader) = self.leader().await? {
            return leader.member_add(relayed(req, &caller)).await;
        }
        let r = req.into_inner();
        self.check_urls(&r.peer_ur_ls, 0)?;
        Reconfig::load(&self.server).await?.may_add(r.is_learner)?;
        // Salted with the time, as etcd does, so a re-added member gets a fresh id.
        let salt = format!(
            "{}{}",
            self.server.config().cluster_token,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let id = crate::member::identity::member_id(&r.peer_ur_ls, &salt);
        self.publish(MemberAttributes {
            id,
            name: String::new(),
            client_urls: Vec::new(),
            peer_urls: r.peer_ur_ls.clone(),
        })
        .await?;
        self.change(if r.is_learner {
            ConfChange::AddLearner(id)
        } else {
            ConfChange::AddVoter(id)
        })
        .await?;
        let added = pb::Member {
            id,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        let mut members = self.members();
        if !members.iter().any(|m| m.id == id) {
            members.push(added.clone());
        }
        Ok(Response::new(pb::MemberAddResponse {
            header: Some(self.server.header(0)),
            member: Some(added),
            members,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let caller = self.admin(&req)?;
        if let Some(mut leader) = self.leader().await? {
            return leader.member_remove(relayed(req, &caller)).await;
        }
        let id = req.get_ref().id;
        self.member(id)?;
        Reconfig::load(&self.server).await?.may_remove(id)?;
        self.change(ConfChange::Remove(id)).await?;
        let members = self.members().into_iter().filter(|m| m.id != id).collect();
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.server.header(0)),
            members,
        }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.admin(&req)?;
        let r = req.into_inner();
        let m = self.member(r.id)?;
        self.check_urls(&r.peer_ur_ls, r.id)?;
        self.publish(MemberAttributes {
            id: r.id,
            name: m.name,
            client_urls: m.client_urls,
            peer_urls: r.peer_ur_ls,
        })
        .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: Some(self.server.header(0)),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        if req.get_ref().linearizable {
            self.server.read_barrier().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.server.header(0)),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let caller = self.admin(&req)?;
        if let Some(mut leader) = self.leader().await? {
            return leader.member_promote(relayed(req, &caller)).await;
        }
        let id = req.get_ref().id;
        if !self.member(id)?.is_learner {
            return Err(KvError::NotLearner.into());
        }
        Reconfig::load(&self.server).await?.may_promote(id)?;
        self.change(ConfChange::PromoteLearner(id)).await?;
        let members = self
            .members()
            .into_iter()
            .map(|mut m| {
                if m.id == id {
                    m.is_learner = false;
                }
                m
            })
            .collect();
        Ok(Response::new(pb::MemberPromoteResponse {
            header: Some(self.server.header(0)),
            members,
        }))
    }
}
