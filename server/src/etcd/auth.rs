//! etcd's `Auth` service: turning authentication on and off, tokens, users and roles.
//!
//! Changes go through the log (so every member's store agrees, in log order); reads wait for a
//! linearizable read point and answer from this member's store. Everything but `AuthEnable`,
//! `AuthStatus` and `Authenticate` is the administrator's while authentication is on; a user
//! may also read itself and its own roles.

use std::sync::Arc;

use rand::Rng;
use tonic::{Request, Response, Status};

use super::token;
use crate::etcd::rbac::{ROOT, root_permission};
use crate::etcd::{KvError, KvServer};
use crate::pb::etcdserverpb::{self as pb, auth_server::Auth};
use crate::pb::quorumkv::InternalAuthenticate;
use crate::pb::quorumkv::internal_request::Request as Req;

/// Characters of the random part of a simple token.
const TOKEN_CHARS: usize = 24;

/// The Auth service of one member.
#[derive(Debug, Clone)]
pub struct AuthService {
    pub(crate) server: Arc<KvServer>,
}

impl AuthService {
    /// Checks and proposes an auth change; the header of its result.
    async fn change<T>(&self, req: &Request<T>, r: Req) -> Result<pb::ResponseHeader, Status> {
        let caller = self
            .server
            .authorize(token(req.metadata()).as_deref(), &r)?;
        let (_, rev) = self.server.propose_as(r, &caller).await?;
        Ok(self.server.header(rev))
    }

    /// Who asks a read of the store, once it is linearizable; `None` while authentication is
    /// off.
    async fn reader<T>(&self, req: &Request<T>) -> Result<Option<String>, Status> {
        let caller = self.server.caller(token(req.metadata()).as_deref())?;
        self.server.read_barrier().await?;
        let auth = self.server.shared().auth.state();
        if !auth.enabled() {
            return Ok(None);
        }
        if caller.user.is_empty() {
            return Err(KvError::UserEmpty.into());
        }
        Ok(Some(caller.user))
    }

    /// Checks the reader is the administrator (or authentication is off).
    async fn admin_reader<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if let Some(user) = self.reader(req).await? {
            self.server.shared().auth.state().check_admin(&user)?;
        }
        Ok(())
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.server.header(self.server.shared().core.hub.revision()))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let r = Req::AuthEnable(*req.get_ref());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let r = Req::AuthDisable(*req.get_ref());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        _req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        self.server.read_barrier().await?;
        let auth = self.server.shared().auth.state();
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled: auth.enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let a = req.into_inner();
        if !self.server.shared().auth.state().enabled() {
            return Err(KvError::AuthNotEnabled.into());
        }
        let random: String = rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(TOKEN_CHARS)
            .map(char::from)
            .collect();
        let simple_token = format!("{random}.{}", self.server.member_id());
        let r = Req::Authenticate(InternalAuthenticate {
            name: a.name,
            password: a.password,
            simple_token: simple_token.clone(),
        });
        let (_, rev) = self.server.propose(r).await?;
        // The token is recorded as the entry applies; make sure it has applied here too, so
        // the client's next request to this member knows it.
        self.server.read_barrier().await?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(self.server.header(rev)),
            token: simple_token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let r = Req::UserAdd(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let reader = self.reader(&req).await?;
        let name = &req.get_ref().name;
        let auth = self.server.shared().auth.state();
        if let Some(user) = reader
            && user != *name
        {
            auth.check_admin(&user)?;
        }
        let u = auth.user(name).ok_or(KvError::UserNotFound)?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: self.header(),
            roles: u.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.admin_reader(&req).await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: self.header(),
            users: self.server.shared().auth.state().user_names(),
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let r = Req::UserDelete(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let r = Req::UserChangePassword(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = Req::UserGrantRole(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = Req::UserRevokeRole(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let r = Req::RoleAdd(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let reader = self.reader(&req).await?;
        let name = &req.get_ref().role;
        let auth = self.server.shared().auth.state();
        if let Some(user) = reader {
            let holds = auth.user(&user).is_some_and(|u| u.roles.contains(name));
            if !holds {
                auth.check_admin(&user)?;
            }
        }
        let role = auth.role(name).ok_or(KvError::RoleNotFound)?;
        let mut perm = role.key_permission.clone();
        if name == ROOT {
            perm.insert(0, root_permission());
        }
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.admin_reader(&req).await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: self.header(),
            roles: self.server.shared().auth.state().role_names(),
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let r = Req::RoleDelete(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = Req::RoleGrantPermission(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = Req::RoleRevokePermission(req.get_ref().clone());
        let header = self.change(&req, r).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}
