//! ZooKeeper's access control: who a connection is (its identities), which ACLs a write may
//! store (ZooKeeper's `fixupACL`), and whether identities hold a permission under a node's
//! ACL (`checkACL`).
//!
//! A connection is `ip:<its address>` from the start and gains `digest:<user>:<hash>` with
//! each `addauth digest user:password`, plus `super:` when that digest is the configured
//! super-user's. Writes carry the identities of their connection in the log entry, so every
//! member's applier decides the same. Nothing here reads or writes the key space.

use base64::Engine;
use prost::Message;
use sha1::{Digest, Sha1};

use super::codes::err;
use super::records::{Acl, ClientInfo};
use super::znode::StoredAcl;

/// One identity of a connection.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct AuthId {
    /// `ip`, `digest` or `super`.
    #[prost(string, tag = "1")]
    pub scheme: String,
    /// The address, `user:hash`, or empty for `super`.
    #[prost(string, tag = "2")]
    pub id: String,
}

impl AuthId {
    /// The identity of a connection from `addr`.
    pub fn ip(addr: std::net::IpAddr) -> AuthId {
        AuthId {
            scheme: "ip".into(),
            id: addr.to_string(),
        }
    }

    /// As whoAmI shows it: the user of a digest, the address of an ip.
    pub fn client_info(&self) -> ClientInfo {
        let user = match self.scheme.as_str() {
            "digest" => self.id.split(':').next().unwrap_or_default().to_string(),
            _ => self.id.clone(),
        };
        ClientInfo {
            auth_scheme: self.scheme.clone(),
            user,
        }
    }
}

/// `user:base64(sha1(user:password))` for `user_password` (ZooKeeper's `generateDigest`).
pub fn digest(user_password: &[u8]) -> String {
    let user = user_password
        .split(|b| *b == b':')
        .next()
        .unwrap_or_default();
    let hash = Sha1::digest(user_password);
    format!(
        "{}:{}",
        String::from_utf8_lossy(user),
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// The identities `addauth scheme auth` adds, or None when the scheme is not one served
/// (the client hears AUTH_FAILED and the connection closes, as ZooKeeper does).
pub fn authenticate(scheme: &str, auth: &[u8], super_digest: Option<&str>) -> Option<Vec<AuthId>> {
    if scheme != "digest" {
        return None;
    }
    let id = digest(auth);
    let mut ids = Vec::with_capacity(2);
    if super_digest == Some(id.as_str()) {
        ids.push(AuthId {
            scheme: "super".into(),
            id: String::new(),
        });
    }
    ids.push(AuthId {
        scheme: "digest".into(),
        id,
    });
    Some(ids)
}

/// The ACL a create or setACL stores for `acl` asked by a connection that is `ids`: `auth`
/// entries become one per authenticated identity; anything unknown or malformed is
/// INVALID_ACL. Duplicates go.
pub fn fixup(acl: &[Acl], ids: &[AuthId]) -> Result<Vec<StoredAcl>, i32> {
    if acl.is_empty() {
        return Err(err::INVALID_ACL);
    }
    let mut out: Vec<StoredAcl> = Vec::with_capacity(acl.len());
    let mut add = |a: StoredAcl| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    for a in acl {
        let stored = |scheme: &str, id: &str| StoredAcl {
            perms: a.perms,
            scheme: scheme.to_string(),
            id: id.to_string(),
        };
        match a.id.scheme.as_str() {
            "world" if a.id.id == "anyone" => add(stored("world", "anyone")),
            "auth" => {
                // Only identities a password proved (not an address) stand in for `auth`.
                let mut any = false;
                for id in ids.iter().filter(|i| i.scheme == "digest") {
                    add(stored(&id.scheme, &id.id));
                    any = true;
                }
                if !any {
                    return Err(err::INVALID_ACL);
                }
            }
            "digest" if valid_digest(&a.id.id) => add(stored("digest", &a.id.id)),
            "ip" if valid_ip(&a.id.id) => add(stored("ip", &a.id.id)),
            _ => return Err(err::INVALID_ACL),
        }
    }
    Ok(out)
}

/// Whether `ids` hold `perm` under `acl` (an empty ACL allows everything; `super` is allowed
/// everything).
pub fn allows(acl: &[StoredAcl], ids: &[AuthId], perm: i32) -> bool {
    if acl.is_empty() || ids.iter().any(|i| i.scheme == "super") {
        return true;
    }
    acl.iter()
        .filter(|a| a.perms & perm != 0)
        .any(|a| match a.scheme.as_str() {
            "world" => a.id == "anyone",
            "digest" => ids.iter().any(|i| i.scheme == "digest" && i.id == a.id),
            "ip" => ids
                .iter()
                .filter(|i| i.scheme == "ip")
                .any(|i| ip_matches(&a.id, &i.id)),
            _ => false,
        })
}

/// NO_AUTH unless `ids` hold `perm` under `acl`.
pub fn check(acl: &[StoredAcl], ids: &[AuthId], perm: i32) -> Result<(), i32> {
    if allows(acl, ids, perm) {
        Ok(())
    } else {
        Err(err::NO_AUTH)
    }
}

/// `acl` as getACL shows it to a caller without READ: digests' hashes hidden.
pub fn masked(acl: &[StoredAcl]) -> Vec<StoredAcl> {
    acl.iter()
        .map(|a| match a.scheme.as_str() {
            "digest" => StoredAcl {
                id: format!("{}:x", a.id.split(':').next().unwrap_or_default()),
                ..a.clone()
            },
            _ => a.clone(),
        })
        .collect()
}

/// A digest id: `user:hash`, two parts as ZooKeeper's `isValid` counts them.
fn valid_digest(id: &str) -> bool {
    let parts: Vec<&str> = id.trim_end_matches(':').split(':').collect();
    parts.len() == 2
}

/// An `ip` ACL id: an address, or an address and a prefix length.
fn valid_ip(id: &str) -> bool {
    parse_cidr(id).is_some()
}

fn parse_cidr(id: &str) -> Option<(std::net::IpAddr, u32)> {
    let (addr, bits) = match id.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (id, None),
    };
    let addr = addr.parse::<std::net::IpAddr>().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.parse::<u32>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((addr, bits))
}

/// Whether the address `addr` lies in the `ip` ACL id `pattern`.
fn ip_matches(pattern: &str, addr: &str) -> bool {
    let (Some((net, bits)), Ok(addr)) = (parse_cidr(pattern), addr.parse::<std::net::IpAddr>())
    else {
        return false;
    };
    let (net, addr, width) = match (net, addr) {
        (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
            (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
        }
        (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zk::codes::perm;
    use crate::zk::records::Id;

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }

    #[test]
    fn digests_are_zookeepers() {
        // The value ZooKeeper's DigestAuthenticationProvider.generateDigest gives.
        assert_eq!(digest(b"super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
    }

    #[test]
    fn auth_entries_become_the_connections_identities() {
        let ip = AuthId::ip("127.0.0.1".parse().unwrap());
        let me = authenticate("digest", b"me:pw", None).unwrap();
        let mut ids = vec![ip.clone()];
        assert_eq!(
            fixup(&[acl(31, "auth", "")], &ids),
            Err(err::INVALID_ACL),
            "an address alone is no auth identity"
        );
        ids.extend(me.clone());
        let stored = fixup(&[acl(31, "auth", ""), acl(1, "world", "anyone")], &ids).unwrap();
        assert_eq!(stored[0].id, me[0].id);
        assert!(allows(&stored, &me, perm::DELETE));
        assert!(!allows(&stored, std::slice::from_ref(&ip), perm::WRITE));
        assert!(allows(&stored, &[ip], perm::READ));
        assert_eq!(fixup(&[], &ids), Err(err::INVALID_ACL));
        assert_eq!(fixup(&[acl(1, "world", "x")], &ids), Err(err::INVALID_ACL));
        assert_eq!(fixup(&[acl(1, "digest", "u")], &ids), Err(err::INVALID_ACL));
        assert_eq!(fixup(&[acl(1, "nope", "u")], &ids), Err(err::INVALID_ACL));
    }

    #[test]
    fn super_and_addresses() {
        let sup = authenticate(
            "digest",
            b"super:test",
            Some("super:D/InIHSb7yEEbrWz8b9l71RjZJU="),
        )
        .unwrap();
        let locked = fixup(&[acl(perm::READ, "digest", "someone:x")], &[]).unwrap();
        assert!(allows(&locked, &sup, perm::ADMIN));
        assert!(authenticate("sasl", b"x", None).is_none());
        let here = [AuthId::ip("10.1.2.3".parse().unwrap())];
        let net = fixup(&[acl(perm::ALL, "ip", "10.1.0.0/16")], &[]).unwrap();
        assert!(allows(&net, &here, perm::WRITE));
        let other = fixup(&[acl(perm::ALL, "ip", "10.2.0.0/16")], &[]).unwrap();
        assert!(!allows(&other, &here, perm::WRITE));
        assert_eq!(masked(&locked)[0].id, "someone:x");
    }
}
