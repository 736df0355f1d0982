//! etcd's `Cluster` service. Membership is the one fixed at start (`--initial-cluster`);
//! runtime changes answer "not capable" until they are carried through the protocol's
//! membership change.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::kv::{KvError, KvServer, Member};
use crate::pb::etcdserverpb::{self as pb, cluster_server::Cluster};

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
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(KvError::NotCapable.into())
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.member(req.get_ref().id)?;
        Err(KvError::NotCapable.into())
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.member(req.get_ref().id)?;
        Err(KvError::NotCapable.into())
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
        if !self.member(req.get_ref().id)?.is_learner {
            return Err(KvError::NotLearner.into());
        }
        Err(KvError::NotCapable.into())
    }
}
