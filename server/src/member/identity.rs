//! Cluster identity from etcd-style flags: member ids derived from peer URLs and the cluster
//! token, the cluster id from its members, URL parsing, and what a running member tells a
//! joining one. The data directory's record of who it belongs to is
//! [`super::data_dir`]'s.

use std::net::{SocketAddr, ToSocketAddrs};

use crate::transport::security::PeerSecurity;
use sha2::{Digest, Sha256};

/// One member of the cluster as clients see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Member id (the protocol's node id).
    pub id: u64,
    /// Human-readable name.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until the member publishes them).
    pub client_urls: Vec<String>,
    /// Learner.
    pub is_learner: bool,
}

/// A member id: the first 8 bytes of SHA-256 over the sorted peer URLs and the token (as
/// etcd derives its ids, with another hash), never 0.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha256::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")).max(1)
}

/// The cluster id: a hash of the sorted member ids and the token.
pub fn cluster_id(members: &[Member], token: &str) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes")).max(1)
}

/// Parses `--initial-cluster` (`name=url,name=url,...`; a name may repeat for several URLs).
pub fn parse_initial_cluster(s: &str, token: &str) -> Result<Vec<Member>, String> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster: {part:?} is not name=url"))?;
        parse_url(url).map_err(|e| format!("--initial-cluster: {e}"))?;
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => by_name.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if by_name.is_empty() {
        return Err("--initial-cluster is empty".into());
    }
    let members: Vec<Member> = by_name
        .into_iter()
        .map(|(name, peer_urls)| Member {
            id: member_id(&peer_urls, token),
            name,
            peer_urls,
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let mut ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != members.len() {
        return Err("--initial-cluster: two members share peer URLs".into());
    }
    Ok(members)
}

/// The socket address of an `http://host:port` or `https://host:port` URL.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if let Some(r) = url.strip_prefix("https://") {
        r
    } else {
        return Err(format!(
            "{url}: expected http://host:port or https://host:port"
        ));
    };
    let hostport = rest.trim_end_matches('/');
    if hostport.contains('/') {
        return Err(format!("{url}: a URL here has no path"));
    }
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .find(SocketAddr::is_ipv4)
        .or_else(|| hostport.to_socket_addrs().ok()?.next())
        .ok_or_else(|| format!("{url}: resolves to no address"))
}

/// Most members an info answer may describe, and the longest URL in it.
const INFO_MEMBERS_MAX: u32 = 1024;
const INFO_URL_BYTES_MAX: u32 = 4096;

/// What a running member tells a joining one: the cluster id and every member of the
/// membership in effect (id, learner flag, peer URLs).
pub fn encode_info(cluster: u64, members: &[Member]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&cluster.to_le_bytes());
    b.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        b.extend_from_slice(&m.id.to_le_bytes());
        b.push(u8::from(m.is_learner));
        b.extend_from_slice(&(m.peer_urls.len() as u32).to_le_bytes());
        for u in &m.peer_urls {
            b.extend_from_slice(&(u.len() as u32).to_le_bytes());
            b.extend_from_slice(u.as_bytes());
        }
    }
    b
}

/// Parses an info answer; treats it as hostile.
pub fn decode_info(b: &[u8]) -> Result<(u64, Vec<Member>), String> {
    struct R<'a>(&'a [u8]);
    impl R<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            if self.0.len() < n {
                return Err("truncated cluster info".into());
            }
            let (h, t) = self.0.split_at(n);
            self.0 = t;
            Ok(h)
        }
        fn u32(&mut self) -> Result<u32, String> {
            Ok(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            ))
        }
        fn u64(&mut self) -> Result<u64, String> {
            Ok(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))
        }
    }
    let mut r = R(b);
    let cluster = r.u64()?;
    let n = r.u32()?;
    if n == 0 || n > INFO_MEMBERS_MAX {
        return Err(format!("cluster info lists {n} members"));
    }
    let mut members = Vec::new();
    for _ in 0..n {
        let id = r.u64()?;
        let is_learner = r.take(1)?[0] != 0;
        let urls = r.u32()?;
        if urls > 16 {
            return Err(format!("cluster info: member with {urls} peer URLs"));
        }
        let mut peer_urls = Vec::new();
        for _ in 0..urls {
            let len = r.u32()?;
            if len > INFO_URL_BYTES_MAX {
                return Err("cluster info: URL too long".into());
            }
            let u = std::str::from_utf8(r.take(len as usize)?)
                .map_err(|_| "cluster info: URL is not UTF-8".to_string())?;
            peer_urls.push(u.to_string());
        }
        members.push(Member {
            id,
            peer_urls,
            is_learner,
            ..Member::default()
        });
    }
    if !r.0.is_empty() {
        return Err("cluster info: trailing bytes".into());
    }
    Ok((cluster, members))
}

/// Asks the members at `peer_urls` in turn, until `deadline`, to describe the cluster (how a
/// member started with `--initial-cluster-state existing` finds its id and its peers).
/// Blocking: runs on a runtime of its own (call it outside any runtime).
pub fn fetch_info(
    security: &PeerSecurity,
    peer_urls: &[String],
    deadline: std::time::Instant,
) -> Result<(u64, Vec<Member>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut last = String::from("no other member listed in --initial-cluster");
    loop {
        for url in peer_urls {
            let addr = parse_url(url)?;
            let asked = runtime.block_on(crate::transport::tcp::query_info(
                security,
                addr,
                std::time::Duration::from_secs(2),
                1 << 20,
            ));
            match asked {
                Ok(b) if b.is_empty() => last = format!("{url} is not serving the cluster yet"),
                Ok(b) => return decode_info(&b).map_err(|e| format!("{url}: {e}")),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("cannot reach the cluster to join it ({last})"));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_etcd() {
        let m = parse_initial_cluster(
            "a=http://127.0.0.1:2380,b=http://127.0.0.1:2381",
            "etcd-cluster",
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_ne!(m[0].id, m[1].id);
        assert!(parse_initial_cluster("a", "t").is_err());
        assert_eq!(parse_url("https://127.0.0.1:1").unwrap().port(), 1);
        assert!(parse_url("unix://x:1").is_err());
        assert_eq!(parse_url("http://localhost:2379").unwrap().port(), 2379);
    }

    #[test]
    fn cluster_info_round_trips_and_refuses_garbage() {
        let members = vec![
            Member {
                id: 7,
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                ..Member::default()
            },
            Member {
                id: 9,
                peer_urls: vec!["http://127.0.0.1:2480".into()],
                is_learner: true,
                ..Member::default()
            },
        ];
        let b = encode_info(42, &members);
        assert_eq!(decode_info(&b).unwrap(), (42, members));
        for n in 0..b.len() {
            assert!(decode_info(&b[..n]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(decode_info(&long).is_err());
        assert!(decode_info(&[0xff; 64]).is_err());
    }
}
