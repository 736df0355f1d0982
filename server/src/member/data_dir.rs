//! The data directory's record of whom it belongs to: the `identity` file, holding the
//! cluster id, this member's id and the membership the member first started with (ids,
//! voter or learner, peer URLs).
//!
//! A member restarting from its data takes its identity from here and ignores
//! `--initial-cluster-state` and `--initial-cluster`, as etcd does: a member that joined a
//! running cluster must be able to restart when no other member is up yet. This module never
//! writes anything but that file, and never replaces a record of another cluster or member.

use std::path::Path;

use super::identity::Member;

/// The name of the record in a data directory.
const FILE: &str = "identity";
/// The largest record read: a thousand members with long URLs fit well below it.
const FILE_BYTES_MAX: u64 = 1 << 20;
/// Most members a record may list.
const MEMBERS_MAX: usize = 1024;

/// Whom a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirIdentity {
    /// The cluster id.
    pub cluster: u64,
    /// This member's id.
    pub member: u64,
    /// The membership this member first started with (names left empty). Empty in records
    /// written before memberships were recorded.
    pub members: Vec<Member>,
}

impl DataDirIdentity {
    /// The record in `dir`, if there is one.
    pub fn read(dir: &Path) -> Result<Option<DataDirIdentity>, String> {
        let path = dir.join(FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, FILE_BYTES_MAX + 1),
            &mut text,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        if text.len() as u64 > FILE_BYTES_MAX {
            return Err(format!(
                "{}: larger than {FILE_BYTES_MAX} bytes",
                path.display()
            ));
        }
        Self::parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks that `dir` belongs to this cluster and member, or, if it belongs to nobody yet,
    /// records that it does (durably: the file, then its directory).
    pub fn claim(&self, dir: &Path) -> Result<(), String> {
        quorumkv_wal::io::create_dir_all_durable(dir)
            .map_err(|e| format!("data dir {}: {e}", dir.display()))?;
        match Self::read(dir) {
            Ok(Some(found)) if (found.cluster, found.member) == (self.cluster, self.member) => {
                Ok(())
            }
            Ok(Some(found)) => Err(format!(
                "data dir {} belongs to another cluster or member ({}), not {}; \
                 use another --data-dir or the flags it was created with",
                dir.display(),
                found.header(),
                self.header()
            )),
            Ok(None) => {
                let tmp = dir.join(format!("{FILE}.tmp"));
                std::fs::write(&tmp, self.render())
                    .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                    .and_then(|()| std::fs::rename(&tmp, dir.join(FILE)))
                    .and_then(|()| quorumkv_wal::io::sync_dir(dir))
                    .map_err(|e| format!("data dir {}: {e}", dir.display()))
            }
            Err(e) => Err(format!("data dir {}: {e}", dir.display())),
        }
    }

    fn header(&self) -> String {
        format!("cluster={:016x} member={:016x}", self.cluster, self.member)
    }

    /// The record's text: the header line, then a line per member,
    /// `peer <id> voter|learner <url> [<url> ...]`.
    fn render(&self) -> String {
        let mut s = self.header();
        s.push('\n');
        for m in &self.members {
            let role = if m.is_learner { "learner" } else { "voter" };
            s.push_str(&format!(
                "peer {:016x} {role} {}\n",
                m.id,
                m.peer_urls.join(" ")
            ));
        }
        s
    }

    /// Parses a record; treats it as hostile.
    fn parse(text: &str) -> Result<DataDirIdentity, String> {
        let mut lines = text.lines();
        let header = lines.next().ok_or("empty")?;
        let (cluster, member) = header
            .strip_prefix("cluster=")
            .and_then(|r| r.split_once(" member="))
            .ok_or_else(|| format!("{header:?} is not cluster=<id> member=<id>"))?;
        let mut members = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            if members.len() == MEMBERS_MAX {
                return Err(format!("lists more than {MEMBERS_MAX} members"));
            }
            let mut words = line.split_ascii_whitespace();
            let (Some("peer"), Some(id), Some(role)) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("{line:?} is not peer <id> voter|learner <url>..."));
            };
            let is_learner = match role {
                "voter" => false,
                "learner" => true,
                _ => return Err(format!("{line:?}: {role:?} is neither voter nor learner")),
            };
            let peer_urls: Vec<String> = words.map(str::to_string).collect();
            if peer_urls.is_empty() {
                return Err(format!("{line:?} names no peer URL"));
            }
            for u in &peer_urls {
                super::identity::parse_url(u)?;
            }
            members.push(Member {
                id: hex_id(id)?,
                peer_urls,
                is_learner,
                ..Member::default()
            });
        }
        let me = DataDirIdentity {
            cluster: hex_id(cluster)?,
            member: hex_id(member)?,
            members,
        };
        if !me.members.is_empty() && !me.members.iter().any(|m| m.id == me.member) {
            return Err(format!(
                "member {:016x} is not among the members it lists",
                me.member
            ));
        }
        Ok(me)
    }
}

fn hex_id(s: &str) -> Result<u64, String> {
    match u64::from_str_radix(s, 16) {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a member or cluster id")),
        Ok(id) => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str, is_learner: bool) -> Member {
        Member {
            id,
            peer_urls: vec![url.into()],
            is_learner,
            ..Member::default()
        }
    }

    #[test]
    fn a_claim_is_recorded_once_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let me = DataDirIdentity {
            cluster: 1,
            member: 2,
            members: vec![
                member(2, "http://127.0.0.1:2380", false),
                member(3, "https://127.0.0.1:2480", true),
            ],
        };
        assert_eq!(DataDirIdentity::read(d.path()).unwrap(), None);
        me.claim(d.path()).unwrap();
        me.claim(d.path()).unwrap();
        assert_eq!(DataDirIdentity::read(d.path()).unwrap(), Some(me.clone()));
        let other = DataDirIdentity {
            member: 3,
            ..me.clone()
        };
        assert!(
            other
                .claim(d.path())
                .unwrap_err()
                .contains("another cluster")
        );
        // The record is still the first one.
        assert_eq!(DataDirIdentity::read(d.path()).unwrap(), Some(me));
    }

    #[test]
    fn records_without_members_still_read() {
        let old = DataDirIdentity::parse("cluster=0000000000000001 member=0000000000000002\n");
        assert_eq!(
            old.unwrap(),
            DataDirIdentity {
                cluster: 1,
                member: 2,
                members: Vec::new()
            }
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "cluster=1",
            "cluster=zz member=01\n",
            "cluster=0 member=1\n",
            "cluster=1 member=2\npeer 2 voter\n",
            "cluster=1 member=2\npeer 2 boss http://127.0.0.1:1\n",
            "cluster=1 member=2\npeer 2 voter ftp://x\n",
            "cluster=1 member=2\npeer 3 voter http://127.0.0.1:1\n",
            "cluster=1 member=2\nnonsense\n",
        ] {
            assert!(DataDirIdentity::parse(bad).is_err(), "{bad:?} was taken");
        }
        let many: String = std::iter::once("cluster=1 member=2\n".to_string())
            .chain(
                (1..=MEMBERS_MAX as u64 + 1)
                    .map(|i| format!("peer {i:x} voter http://127.0.0.1:1\n")),
            )
            .collect();
        assert!(
            DataDirIdentity::parse(&many)
                .unwrap_err()
                .contains("more than")
        );
    }
}
