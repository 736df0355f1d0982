//! The records of ZooKeeper 3.8's client protocol (`zookeeper.jute`, modules `data` and
//! `proto`), field for field, in jute's order. Only the wire shapes live here; what they mean
//! is the server's business.

use super::jute::{Buffer, Data, jute_records};

jute_records! {
    /// An identity: a scheme and an id within it (`world:anyone`, `digest:user:hash`).
    pub struct Id {
        pub scheme: String,
        pub id: String,
    }

    /// A permission mask granted to an identity.
    pub struct Acl {
        pub perms: i32,
        pub id: Id,
    }

    /// A znode's metadata as clients see it.
    pub struct Stat {
        pub czxid: i64,
        pub mzxid: i64,
        pub ctime: i64,
        pub mtime: i64,
        pub version: i32,
        pub cversion: i32,
        pub aversion: i32,
        pub ephemeral_owner: i64,
        pub data_length: i32,
        pub num_children: i32,
        pub pzxid: i64,
    }

    /// The first message of a connection (followed by a bare read-only flag).
    pub struct ConnectRequest {
        pub protocol_version: i32,
        pub last_zxid_seen: i64,
        pub time_out: i32,
        pub session_id: i64,
        pub passwd: Buffer,
    }

    /// The answer to [`ConnectRequest`] (followed by a bare read-only flag).
    pub struct ConnectResponse {
        pub protocol_version: i32,
        pub time_out: i32,
        pub session_id: i64,
        pub passwd: Buffer,
    }

    /// Watches re-registered after a reconnect.
    pub struct SetWatches {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
    }

    /// [`SetWatches`] with persistent watches too.
    pub struct SetWatches2 {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
        pub persistent_watches: Vec<String>,
        pub persistent_recursive_watches: Vec<String>,
    }

    /// Before every request.
    pub struct RequestHeader {
        pub xid: i32,
        pub kind: i32,
    }

    /// Before each operation of a multi, and after the last (`done`).
    pub struct MultiHeader {
        pub kind: i32,
        pub done: bool,
        pub err: i32,
    }

    /// Credentials added to a session.
    pub struct AuthPacket {
        pub kind: i32,
        pub scheme: String,
        pub auth: Buffer,
    }

    /// Before every reply and notification.
    pub struct ReplyHeader {
        pub xid: i32,
        pub zxid: i64,
        pub err: i32,
    }

    /// getData.
    pub struct GetDataRequest {
        pub path: String,
        pub watch: bool,
    }

    /// setData.
    pub struct SetDataRequest {
        pub path: String,
        pub data: Data,
        pub version: i32,
    }

    /// reconfig.
    pub struct ReconfigRequest {
        pub joining_servers: String,
        pub leaving_servers: String,
        pub new_members: String,
        pub cur_config_id: i64,
    }

    /// setData's answer.
    pub struct SetDataResponse {
        pub stat: Stat,
    }

    /// create, create2 and createContainer.
    pub struct CreateRequest {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub flags: i32,
    }

    /// createTTL.
    pub struct CreateTtlRequest {
        pub path: String,
        pub data: Data,
        pub acl: Vec<Acl>,
        pub flags: i32,
        pub ttl: i64,
    }

    /// delete.
    pub struct DeleteRequest {
        pub path: String,
        pub version: i32,
    }

    /// getChildren and getChildren2.
    pub struct GetChildrenRequest {
        pub path: String,
        pub watch: bool,
    }

    /// getAllChildrenNumber, getACL, sync, and anything else that names only a path.
    pub struct PathRequest {
        pub path: String,
    }

    /// check (inside a multi).
    pub struct CheckVersionRequest {
        pub path: String,
        pub version: i32,
    }

    /// setACL.
    pub struct SetAclRequest {
        pub path: String,
        pub acl: Vec<Acl>,
        pub version: i32,
    }

    /// addWatch.
    pub struct AddWatchRequest {
        pub path: String,
        pub mode: i32,
    }

    /// A watch notification.
    pub struct WatcherEvent {
        pub kind: i32,
        pub state: i32,
        pub path: String,
    }

    /// A failed operation's result inside a multi, and addWatch's answer.
    pub struct ErrorResponse {
        pub err: i32,
    }

    /// create's answer.
    pub struct CreateResponse {
        pub path: String,
    }

    /// create2's answer.
    pub struct Create2Response {
        pub path: String,
        pub stat: Stat,
    }

    /// exists.
    pub struct ExistsRequest {
        pub path: String,
        pub watch: bool,
    }

    /// An answer that is only a Stat (exists, setData, setACL).
    pub struct StatResponse {
        pub stat: Stat,
    }

    /// getData's answer.
    pub struct GetDataResponse {
        pub data: Data,
        pub stat: Stat,
    }

    /// getChildren's answer.
    pub struct GetChildrenResponse {
        pub children: Vec<String>,
    }

    /// getAllChildrenNumber's answer.
    pub struct GetAllChildrenNumberResponse {
        pub total_number: i32,
    }

    /// getChildren2's answer.
    pub struct GetChildren2Response {
        pub children: Vec<String>,
        pub stat: Stat,
    }

    /// getACL's answer.
    pub struct GetAclResponse {
        pub acl: Vec<Acl>,
        pub stat: Stat,
    }

    /// checkWatches and removeWatches.
    pub struct WatchesRequest {
        pub path: String,
        pub kind: i32,
    }

    /// getEphemerals' answer.
    pub struct GetEphemeralsResponse {
        pub ephemerals: Vec<String>,
    }

    /// One identity of whoAmI's answer.
    pub struct ClientInfo {
        pub auth_scheme: String,
        pub user: String,
    }

    /// whoAmI's answer.
    pub struct WhoAmIResponse {
        pub client_info: Vec<ClientInfo>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zk::jute::{Jute, Reader};

    #[test]
    fn records_round_trip() {
        let req = CreateRequest {
            path: "/app/lock-".into(),
            data: Data::of(b"me".to_vec()),
            acl: vec![Acl {
                perms: 31,
                id: Id {
                    scheme: "world".into(),
                    id: "anyone".into(),
                },
            }],
            flags: 3,
        };
        let bytes = req.to_bytes();
        assert_eq!(bytes.len(), 4 + 10 + 4 + 2 + 4 + 4 + 4 + 5 + 4 + 6 + 4);
        assert_eq!(Reader::new(&bytes).record::<CreateRequest>(), Ok(req));
        let stat = Stat {
            czxid: 1,
            num_children: 2,
            ..Stat::default()
        };
        assert_eq!(stat.to_bytes().len(), 68);
        assert_eq!(Reader::new(&stat.to_bytes()).record::<Stat>(), Ok(stat));
    }

    proptest::proptest! {
        /// Hostile bytes: every record decoder answers (a record or an error) without
        /// panicking, and whatever decodes encodes to bytes that decode to it again.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)
        ) {
            fn check<T: Jute + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
                if let Ok(v) = Reader::new(bytes).record::<T>() {
                    assert_eq!(Reader::new(&v.to_bytes()).record::<T>(), Ok(v));
                }
            }
            check::<ConnectRequest>(&bytes);
            check::<CreateRequest>(&bytes);
            check::<SetWatches2>(&bytes);
            check::<GetChildren2Response>(&bytes);
            check::<GetAclResponse>(&bytes);
            check::<WhoAmIResponse>(&bytes);
        }
    }
}
