//! Authentication and authorization as etcd's v3 auth store does them.
//!
//! The replicated part ([`AuthState`]): whether authentication is on, the auth revision (bumped
//! by every change, so a request checked against an older store is checked again at apply),
//! users with bcrypt-hashed passwords and their roles, and roles with key-range permissions.
//! It changes only by applying log entries and lives in the tree under [`AUTH_PREFIX`], so it
//! travels in snapshots and survives restarts.
//!
//! The member-local part ([`AuthStore`]): simple tokens. `Authenticate` puts a token chosen by
//! the proposer through the log, so every member learns it; a token lives in memory for its TTL
//! from last use (etcd's `--auth-token-ttl`), and dies with the process, on `AuthDisable`, and
//! when its user is deleted or changes password.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use prost::Message;

use super::error::KvError;
use crate::pb::authpb::{Permission, Role, User, UserAddOptions, permission::Type as PermType};
use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, request_op};
use crate::pb::quorumkv::internal_request::Request;

/// Prefix of the auth rows: `A\0` (enabled flag and revision), `AU<name>` (a user),
/// `AR<name>` (a role).
pub const AUTH_PREFIX: u8 = b'A';
const USER_TAG: u8 = b'U';
const ROLE_TAG: u8 = b'R';
/// The administrator's user and role names.
pub const ROOT: &str = "root";
/// Tokens kept at once; past this, expired ones go first, then those closest to expiry.
const TOKENS_MAX: usize = 100_000;

/// One row written by an auth change: key, and the new value (`None`: deleted).
pub type RowChange = (Vec<u8>, Option<Vec<u8>>);

/// What a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading.
    Read,
    /// Writing.
    Write,
}

/// The replicated auth store: users, roles, the enabled flag and the auth revision.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    fn default() -> AuthState {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }
}

fn row(tag: u8, name: &str) -> Vec<u8> {
    let mut k = vec![AUTH_PREFIX, tag];
    k.extend_from_slice(name.as_bytes());
    k
}

fn meta_row() -> Vec<u8> {
    vec![AUTH_PREFIX, 0]
}

/// The exclusive upper end of etcd's interval `[key, end)`: `end` empty means `key` alone,
/// `"\0"` means no upper end (`None`).
pub(crate) fn upper(key: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    if end.is_empty() {
        let mut k = key.to_vec();
        k.push(0);
        Some(k)
    } else if end == [0] {
        None
    } else {
        Some(end.to_vec())
    }
}

/// Whether the union of `perms` (start, upper end) covers `[key, upper(key, end))`.
fn covered(mut perms: Vec<(&[u8], Option<Vec<u8>>)>, key: &[u8], end: &[u8]) -> bool {
    let want = upper(key, end);
    if want.as_deref().is_some_and(|w| w <= key) {
        // An empty interval needs nothing.
        return true;
    }
    perms.sort_by(|a, b| a.0.cmp(b.0));
    let mut reached = key.to_vec();
    for (start, hi) in perms {
        if start > reached.as_slice() {
            break;
        }
        match hi {
            None => return true,
            Some(hi) if hi > reached => reached = hi,
            Some(_) => {}
        }
        if want.as_deref().is_some_and(|w| reached.as_slice() >= w) {
            return true;
        }
    }
    false
}

impl AuthState {
    /// Whether authentication is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A role.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// User names, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// Role names, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// Rebuilds the store from its rows (key, value), in any order.
    pub fn load<'a>(
        rows: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<AuthState, KvError> {
        let mut s = AuthState::default();
        for (k, v) in rows {
            match k {
                [AUTH_PREFIX, 0] => {
                    let [enabled, rev @ ..] = v else {
                        return Err(KvError::Corrupt);
                    };
                    s.enabled = *enabled == 1;
                    s.revision =
                        u64::from_le_bytes(<[u8; 8]>::try_from(rev).map_err(|_| KvError::Corrupt)?);
                }
                [AUTH_PREFIX, USER_TAG, name @ ..] => {
                    let u = User::decode(v).map_err(|_| KvError::Corrupt)?;
                    let name = String::from_utf8(name.to_vec()).map_err(|_| KvError::Corrupt)?;
                    s.users.insert(name, u);
                }
                [AUTH_PREFIX, ROLE_TAG, name @ ..] => {
                    let r = Role::decode(v).map_err(|_| KvError::Corrupt)?;
                    let name = String::from_utf8(name.to_vec()).map_err(|_| KvError::Corrupt)?;
                    s.roles.insert(name, r);
                }
                _ => return Err(KvError::Corrupt),
            }
        }
        Ok(s)
    }

    /// Every row of this store, as `load` reads them back.
    pub fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut meta = vec![u8::from(self.enabled)];
        meta.extend_from_slice(&self.revision.to_le_bytes());
        let mut out = vec![(meta_row(), meta)];
        for (name, u) in &self.users {
            out.push((row(USER_TAG, name), u.encode_to_vec()));
        }
        for (name, r) in &self.roles {
            out.push((row(ROLE_TAG, name), r.encode_to_vec()));
        }
        out
    }

    /// A store with these users and roles (named by their `name` fields).
    pub fn from_parts(
        enabled: bool,
        revision: u64,
        users: Vec<User>,
        roles: Vec<Role>,
    ) -> Result<AuthState, KvError> {
        let name = |n: &[u8]| String::from_utf8(n.to_vec()).map_err(|_| KvError::Corrupt);
        Ok(AuthState {
            enabled,
            revision,
            users: users
                .into_iter()
                .map(|u| Ok((name(&u.name)?, u)))
                .collect::<Result<_, KvError>>()?,
            roles: roles
                .into_iter()
                .map(|r| Ok((name(&r.name)?, r)))
                .collect::<Result<_, KvError>>()?,
        })
    }

    fn user_row(&self, name: &str) -> RowChange {
        (
            row(USER_TAG, name),
            self.users.get(name).map(Message::encode_to_vec),
        )
    }

    fn role_row(&self, name: &str) -> RowChange {
        (
            row(ROLE_TAG, name),
            self.roles.get(name).map(Message::encode_to_vec),
        )
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, KvError> {
        self.users.get_mut(name).ok_or(KvError::UserNotFound)
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, KvError> {
        self.roles.get_mut(name).ok_or(KvError::RoleNotFound)
    }

    /// Applies one auth change (any other request is refused): validates it against the
    /// store, changes it, bumps the revision and returns the rows to write. A refused change
    /// changes nothing; a change that is already in effect changes nothing and succeeds, as
    /// etcd's do.
    pub fn apply(&mut self, req: &Request) -> Result<Vec<RowChange>, KvError> {
        let mut rows = Vec::new();
        match req {
            Request::AuthEnable(_) => {
                if self.enabled {
                    return Ok(rows);
                }
                let root = self.users.get(ROOT).ok_or(KvError::RootUserNotExist)?;
                if !root.roles.iter().any(|r| r == ROOT) {
                    return Err(KvError::RootRoleNotExist);
                }
                self.enabled = true;
            }
            Request::AuthDisable(_) => {
                if !self.enabled {
                    return Ok(rows);
                }
                self.enabled = false;
            }
            Request::UserAdd(u) => {
                if u.name.is_empty() {
                    return Err(KvError::UserEmpty);
                }
                if self.users.contains_key(&u.name) {
                    return Err(KvError::UserExists);
                }
                let no_password = u.options.as_ref().is_some_and(|o| o.no_password);
                self.users.insert(
                    u.name.clone(),
                    User {
                        name: u.name.clone().into_bytes(),
                        password: if no_password {
                            Vec::new()
                        } else {
                            u.hashed_password.clone().into_bytes()
                        },
                        roles: Vec::new(),
                        options: Some(UserAddOptions { no_password }),
                    },
                );
                rows.push(self.user_row(&u.name));
            }
            Request::UserDelete(d) => {
                if self.enabled && d.name == ROOT {
                    return Err(KvError::InvalidAuthMgmt);
                }
                self.users.remove(&d.name).ok_or(KvError::UserNotFound)?;
                rows.push(self.user_row(&d.name));
            }
            Request::UserChangePassword(c) => {
                let u = self.user_mut(&c.name)?;
                u.password = c.hashed_password.clone().into_bytes();
                rows.push(self.user_row(&c.name));
            }
            Request::UserGrantRole(g) => {
                if g.role != ROOT && !self.roles.contains_key(&g.role) {
                    // The root role is built in: it needs no role row to be granted.
                    self.user_mut(&g.user)?;
                    return Err(KvError::RoleNotFound);
                }
                let u = self.user_mut(&g.user)?;
                match u.roles.binary_search(&g.role) {
                    Ok(_) => return Ok(rows),
                    Err(i) => u.roles.insert(i, g.role.clone()),
                }
                rows.push(self.user_row(&g.user));
            }
            Request::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(KvError::InvalidAuthMgmt);
                }
                let u = self.user_mut(&r.name)?;
                let i = u
                    .roles
                    .iter()
                    .position(|x| *x == r.role)
                    .ok_or(KvError::RoleNotGranted)?;
                u.roles.remove(i);
                rows.push(self.user_row(&r.name));
            }
            Request::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(KvError::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(KvError::RoleExists);
                }
                self.roles.insert(
                    r.name.clone(),
                    Role {
                        name: r.name.clone().into_bytes(),
                        key_permission: Vec::new(),
                    },
                );
                rows.push(self.role_row(&r.name));
            }
            Request::RoleDelete(r) => {
                if self.enabled && r.role == ROOT {
                    return Err(KvError::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(KvError::RoleNotFound)?;
                rows.push(self.role_row(&r.role));
                let holders: Vec<String> = self
                    .users
                    .iter()
                    .filter(|(_, u)| u.roles.contains(&r.role))
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in holders {
                    self.user_mut(&name)?.roles.retain(|x| *x != r.role);
                    rows.push(self.user_row(&name));
                }
            }
            Request::RoleGrantPermission(g) => {
                let perm = g.perm.clone().ok_or(KvError::PermissionNotGiven)?;
                let role = self.role_mut(&g.name)?;
                let perms = &mut role.key_permission;
                match perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        let i = perms.partition_point(|p| p.key <= perm.key);
                        perms.insert(i, perm);
                    }
                }
                rows.push(self.role_row(&g.name));
            }
            Request::RoleRevokePermission(r) => {
                let role = self.role_mut(&r.role)?;
                let i = role
                    .key_permission
                    .iter()
                    .position(|p| p.key == r.key && p.range_end == r.range_end)
                    .ok_or(KvError::PermissionNotGranted)?;
                role.key_permission.remove(i);
                rows.push(self.role_row(&r.role));
            }
            _ => return Err(KvError::Other("not an auth change".into())),
        }
        self.revision += 1;
        let mut meta = vec![u8::from(self.enabled)];
        meta.extend_from_slice(&self.revision.to_le_bytes());
        rows.push((meta_row(), Some(meta)));
        Ok(rows)
    }

    /// Whether `user` holds the root role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// Checks `user` may do `access` on etcd's interval `[key, end)`: the union of its roles'
    /// permissions must cover it. Nothing is checked while authentication is off.
    pub fn check(&self, user: &str, key: &[u8], end: &[u8], access: Access) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(KvError::UserEmpty);
        }
        let u = self.users.get(user).ok_or(KvError::PermissionDenied)?;
        if u.roles.iter().any(|r| r == ROOT) {
            return Ok(());
        }
        let wanted = match access {
            Access::Read => PermType::Read,
            Access::Write => PermType::Write,
        };
        let perms: Vec<(&[u8], Option<Vec<u8>>)> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.key_permission)
            .filter(|p| p.perm_type == PermType::Readwrite as i32 || p.perm_type == wanted as i32)
            .map(|p| (p.key.as_slice(), upper(&p.key, &p.range_end)))
            .collect();
        if covered(perms, key, end) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    /// Checks `user` is the administrator (while authentication is on).
    pub fn check_admin(&self, user: &str) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(KvError::UserEmpty);
        }
        if self.is_admin(user) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    /// Checks `user` is a known user (while authentication is on).
    pub fn check_user(&self, user: &str) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(KvError::UserEmpty);
        }
        if self.users.contains_key(user) {
            Ok(())
        } else {
            Err(KvError::PermissionDenied)
        }
    }

    fn check_ops(&self, user: &str, ops: &[RequestOp]) -> Result<(), KvError> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    self.check(user, &r.key, &r.range_end, Access::Read)?;
                }
                Some(request_op::Request::RequestPut(p)) => self.check_put(user, p)?,
                Some(request_op::Request::RequestDeleteRange(d)) => self.check_delete(user, d)?,
                Some(request_op::Request::RequestTxn(t)) => self.check_txn(user, t)?,
                None => {}
            }
        }
        Ok(())
    }

    /// A put needs write access to its key, and read access too when it returns the previous
    /// value.
    fn check_put(&self, user: &str, p: &PutRequest) -> Result<(), KvError> {
        self.check(user, &p.key, &[], Access::Write)?;
        if p.prev_kv {
            self.check(user, &p.key, &[], Access::Read)?;
        }
        Ok(())
    }

    fn check_delete(&self, user: &str, d: &DeleteRangeRequest) -> Result<(), KvError> {
        self.check(user, &d.key, &d.range_end, Access::Write)?;
        if d.prev_kv {
            self.check(user, &d.key, &d.range_end, Access::Read)?;
        }
        Ok(())
    }

    /// Checks every compare and every op of both branches, as etcd does.
    fn check_txn(&self, user: &str, t: &TxnRequest) -> Result<(), KvError> {
        for c in &t.compare {
            self.check(user, &c.key, &c.range_end, Access::Read)?;
        }
        self.check_ops(user, &t.success)?;
        self.check_ops(user, &t.failure)
    }

    /// Checks `user` may make the replicated request `req`. Requests the members make for
    /// themselves (member attributes, alarms, lease checkpoints) and lease grants need no user;
    /// a lease revoke needs a user here and write access to the lease's keys, which the caller
    /// checks against the lessor; `Authenticate` is checked by its password.
    pub fn check_request(&self, user: &str, req: &Request) -> Result<(), KvError> {
        if !self.enabled {
            return Ok(());
        }
        match req {
            Request::Put(p) => self.check_put(user, p),
            Request::DeleteRange(d) => self.check_delete(user, d),
            Request::Txn(t) => self.check_txn(user, t),
            Request::Compaction(_) | Request::LeaseRevoke(_) => self.check_user(user),
            Request::LeaseGrant(_)
            | Request::LeaseCheckpoint(_)
            | Request::Alarm(_)
            | Request::MemberAttributes(_)
            | Request::Authenticate(_)
            // Turning authentication on is open (it needs a root user); once on, it is a no-op.
            | Request::AuthEnable(_) => Ok(()),
            Request::AuthDisable(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => self.check_admin(user),
        }
    }
}

/// Who a request comes from, as its token says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token it presented (passed on when the request is forwarded to the leader).
    pub token: Option<String>,
    /// The user ("" while authentication is off, or when no token was given).
    pub user: String,
    /// The auth revision its permissions were checked at (0: not checked).
    pub revision: u64,
}

#[derive(Debug)]
struct Session {
    user: String,
    expires: Instant,
}

/// The auth store of one member: the replicated [`AuthState`] and this member's tokens.
#[derive(Debug)]
pub struct AuthStore {
    state: RwLock<AuthState>,
    tokens: Mutex<HashMap<String, Session>>,
    token_ttl: Duration,
}

impl AuthStore {
    /// An empty store whose tokens live `token_ttl` from last use.
    pub fn new(token_ttl: Duration) -> AuthStore {
        AuthStore {
            state: RwLock::new(AuthState::default()),
            tokens: Mutex::new(HashMap::new()),
            token_ttl,
        }
    }

    /// The replicated state.
    pub fn state(&self) -> RwLockReadGuard<'_, AuthState> {
        self.state.read()
    }

    /// Replaces the replicated state (at start and on snapshot install); tokens are dropped.
    pub fn replace(&self, state: AuthState) {
        *self.state.write() = state;
        self.tokens.lock().clear();
    }

    /// Applies an auth change or an `Authenticate` (which records its token) and returns the
    /// rows to write. Tokens follow the change: all go when authentication is turned off, a
    /// user's go when it is deleted or changes password.
    pub fn apply(&self, req: &Request) -> Result<Vec<RowChange>, KvError> {
        if let Request::Authenticate(a) = req {
            if !self.state.read().enabled() {
                return Err(KvError::AuthNotEnabled);
            }
            if self.state.read().user(&a.name).is_none() {
                return Err(KvError::AuthFailed);
            }
            self.add_token(&a.simple_token, &a.name);
            return Ok(Vec::new());
        }
        let rows = self.state.write().apply(req)?;
        match req {
            Request::AuthDisable(_) => self.tokens.lock().clear(),
            Request::UserDelete(u) => self.drop_user_tokens(&u.name),
            Request::UserChangePassword(u) => self.drop_user_tokens(&u.name),
            _ => {}
        }
        Ok(rows)
    }

    fn drop_user_tokens(&self, user: &str) {
        self.tokens.lock().retain(|_, s| s.user != user);
    }

    fn add_token(&self, token: &str, user: &str) {
        let now = Instant::now();
        let mut tokens = self.tokens.lock();
        if tokens.len() >= TOKENS_MAX {
            tokens.retain(|_, s| s.expires > now);
        }
        if tokens.len() >= TOKENS_MAX {
            let mut by_expiry: Vec<(Instant, String)> =
                tokens.iter().map(|(t, s)| (s.expires, t.clone())).collect();
            by_expiry.sort();
            for (_, t) in by_expiry.into_iter().take(TOKENS_MAX / 10) {
                tokens.remove(&t);
            }
        }
        tokens.insert(
            token.to_string(),
            Session {
                user: user.to_string(),
                expires: now + self.token_ttl,
            },
        );
    }

    /// Who presents `token`. While authentication is off everyone is the anonymous caller
    /// (a token is passed along but not checked); while it is on, a token must be live, and
    /// using it extends its life.
    pub fn caller(&self, token: Option<&str>) -> Result<Caller, KvError> {
        let token = token.map(str::to_string);
        if !self.state.read().enabled() {
            return Ok(Caller {
                token,
                ..Caller::default()
            });
        }
        let Some(t) = token else {
            return Ok(Caller::default());
        };
        // A client certificate's user (etcd takes the common name as the user).
        if let Some(user) = super::cert_user::user_of(&t) {
            return Ok(Caller {
                user: user.to_string(),
                token: Some(t.clone()),
                revision: 0,
            });
        }
        let now = Instant::now();
        let key = token_digest(&t);
        let mut tokens = self.tokens.lock();
        match tokens.get_mut(&key) {
            Some(s) if s.expires > now => {
                s.expires = now + self.token_ttl;
                let user = s.user.clone();
                Ok(Caller {
                    token: Some(t),
                    user,
                    revision: 0,
                })
            }
            Some(_) => {
                tokens.remove(&key);
                Err(KvError::InvalidAuthToken)
            }
            None => Err(KvError::InvalidAuthToken),
        }
    }

    /// The user's stored password hash, for `Authenticate` (`None`: no such user, or one
    /// that may not log in with a password).
    pub fn password_hash(&self, user: &str) -> Option<String> {
        let s = self.state.read();
        let u = s.user(user)?;
        if u.options.as_ref().is_some_and(|o| o.no_password) || u.password.is_empty() {
            return None;
        }
        String::from_utf8(u.password.clone()).ok()
    }
}

/// What the log and a member's token table hold of a simple token: its SHA-256 (hex), so
/// neither a log, a snapshot nor the table lets anyone act as the token's user.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The permission a role grants everything, as etcd reports it for `root`.
pub fn root_permission() -> Permission {
    Permission {
        perm_type: PermType::Readwrite as i32,
        key: Vec::new(),
        range_end: vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;

    fn apply(s: &mut AuthState, r: Request) -> Result<(), KvError> {
        s.apply(&r).map(|_| ())
    }

    fn user(name: &str) -> Request {
        Request::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: "h".into(),
            ..Default::default()
        })
    }

    fn grant_role(user: &str, role: &str) -> Request {
        Request::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    }

    fn grant(role: &str, t: PermType, key: &[u8], end: &[u8]) -> Request {
        Request::RoleGrantPermission(pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(Permission {
                perm_type: t as i32,
                key: key.to_vec(),
                range_end: end.to_vec(),
            }),
        })
    }

    fn enabled_with_reader() -> AuthState {
        let mut s = AuthState::default();
        apply(&mut s, user("root")).unwrap();
        apply(&mut s, grant_role("root", ROOT)).unwrap();
        apply(&mut s, user("u")).unwrap();
        apply(
            &mut s,
            Request::RoleAdd(pb::AuthRoleAddRequest { name: "r".into() }),
        )
        .unwrap();
        apply(&mut s, grant("r", PermType::Read, b"a", b"c")).unwrap();
        apply(&mut s, grant("r", PermType::Readwrite, b"c", b"e")).unwrap();
        apply(&mut s, grant("r", PermType::Write, b"x", b"")).unwrap();
        apply(&mut s, grant_role("u", "r")).unwrap();
        apply(&mut s, Request::AuthEnable(pb::AuthEnableRequest {})).unwrap();
        s
    }

    #[test]
    fn enable_needs_root_with_root_role() {
        let mut s = AuthState::default();
        let enable = || Request::AuthEnable(pb::AuthEnableRequest {});
        assert_eq!(apply(&mut s, enable()), Err(KvError::RootUserNotExist));
        apply(&mut s, user("root")).unwrap();
        assert_eq!(apply(&mut s, enable()), Err(KvError::RootRoleNotExist));
        apply(&mut s, grant_role("root", ROOT)).unwrap();
        let before = s.revision();
        apply(&mut s, enable()).unwrap();
        assert!(s.enabled());
        assert_eq!(s.revision(), before + 1);
        // Root cannot be deleted or lose its role while authentication is on.
        let del = Request::UserDelete(pb::AuthUserDeleteRequest {
            name: "root".into(),
        });
        assert_eq!(apply(&mut s, del), Err(KvError::InvalidAuthMgmt));
    }

    #[test]
    fn ranges_are_covered_by_the_union_of_permissions() {
        let s = enabled_with_reader();
        // Read over [a, c) and readwrite over [c, e) together cover [b, d).
        assert_eq!(s.check("u", b"b", b"d", Access::Read), Ok(()));
        assert_eq!(s.check("u", b"a", b"e", Access::Read), Ok(()));
        assert_eq!(
            s.check("u", b"a", b"f", Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            s.check("u", b"b", b"", Access::Write),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(s.check("u", b"cc", b"", Access::Write), Ok(()));
        assert_eq!(s.check("u", b"x", b"", Access::Write), Ok(()));
        assert_eq!(
            s.check("u", b"x", b"", Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(
            s.check("u", b"a", &[0], Access::Read),
            Err(KvError::PermissionDenied)
        );
        assert_eq!(s.check("root", b"a", &[0], Access::Write), Ok(()));
        assert_eq!(
            s.check("", b"a", b"", Access::Read),
            Err(KvError::UserEmpty)
        );
        assert_eq!(
            s.check("nobody", b"a", b"", Access::Read),
            Err(KvError::PermissionDenied)
        );
    }

    #[test]
    fn deleting_a_role_takes_it_from_its_users_and_rows_reload() {
        let mut s = enabled_with_reader();
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut replay = AuthState::default();
        for r in [
            user("root"),
            grant_role("root", ROOT),
            user("u"),
            Request::RoleAdd(pb::AuthRoleAddRequest { name: "r".into() }),
            grant("r", PermType::Read, b"a", b"c"),
            grant_role("u", "r"),
            Request::AuthEnable(pb::AuthEnableRequest {}),
            Request::RoleDelete(pb::AuthRoleDeleteRequest { role: "r".into() }),
        ] {
            for (k, v) in replay.apply(&r).unwrap() {
                match v {
                    Some(v) => rows.insert(k, v),
                    None => rows.remove(&k),
                };
            }
        }
        assert!(replay.user("u").unwrap().roles.is_empty());
        let loaded = AuthState::load(rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(loaded.unwrap(), replay);
        // A refused change leaves the store as it was.
        let before = s.clone();
        let revoke = Request::RoleRevokePermission(pb::AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"zz".to_vec(),
            range_end: Vec::new(),
        });
        assert_eq!(apply(&mut s, revoke), Err(KvError::PermissionNotGranted));
        assert_eq!(s, before);
    }

    #[test]
    fn hostile_rows_are_corrupt_not_panics() {
        for (k, v) in [
            (vec![AUTH_PREFIX, 0], vec![1, 2, 3]),
            (vec![AUTH_PREFIX, 0], vec![]),
            (vec![AUTH_PREFIX, USER_TAG, 0xff], vec![]),
            (vec![AUTH_PREFIX, ROLE_TAG, b'r'], vec![0xff, 0xff]),
            (vec![AUTH_PREFIX, b'?'], vec![]),
        ] {
            assert_eq!(
                AuthState::load([(k.as_slice(), v.as_slice())]),
                Err(KvError::Corrupt)
            );
        }
    }

    #[test]
    fn tokens_expire_and_follow_their_user() {
        let store = AuthStore::new(Duration::from_millis(50));
        for r in [
            user("root"),
            grant_role("root", ROOT),
            Request::AuthEnable(pb::AuthEnableRequest {}),
        ] {
            store.apply(&r).unwrap();
        }
        let auth = |t: &str| {
            Request::Authenticate(crate::pb::quorumkv::InternalAuthenticate {
                name: "root".into(),
                password: String::new(),
                // The log carries the token's digest, never the token.
                simple_token: token_digest(t),
            })
        };
        store.apply(&auth("t1")).unwrap();
        assert_eq!(
            store.caller(Some(&token_digest("t1"))),
            Err(KvError::InvalidAuthToken),
            "the digest is no token"
        );
        assert_eq!(store.caller(Some("t1")).unwrap().user, "root");
        assert_eq!(store.caller(Some("t2")), Err(KvError::InvalidAuthToken));
        assert_eq!(store.caller(None).unwrap().user, "");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(store.caller(Some("t1")), Err(KvError::InvalidAuthToken));
        store.apply(&auth("t3")).unwrap();
        store
            .apply(&Request::UserChangePassword(
                pb::AuthUserChangePasswordRequest {
                    name: "root".into(),
                    hashed_password: "h2".into(),
                    ..Default::default()
                },
            ))
            .unwrap();
        assert_eq!(store.caller(Some("t3")), Err(KvError::InvalidAuthToken));
        store.apply(&auth("t4")).unwrap();
        store
            .apply(&Request::AuthDisable(pb::AuthDisableRequest {}))
            .unwrap();
        // Off: tokens are not checked (and were dropped).
        assert_eq!(store.caller(Some("t4")).unwrap().user, "");
    }
}
