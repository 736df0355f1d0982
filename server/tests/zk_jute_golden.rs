//! quorumkv's jute codec against ZooKeeper's own: `zk/JuteGolden.java`, compiled against the
//! jute classes of Debian's `zookeeper` package, prints the bytes ZooKeeper writes for sample
//! records; each must equal what quorumkv writes for the same values, and decode back to them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use quorumkv_server::zk::jute::{Buffer, Data, Jute, Reader};
use quorumkv_server::zk::records::*;

const JUTE_JAR: &str = "/usr/share/java/zookeeper-jute.jar";

/// ZooKeeper's encodings, by sample name.
fn zookeepers_bytes() -> BTreeMap<String, Vec<u8>> {
    assert!(
        Path::new(JUTE_JAR).exists(),
        "{JUTE_JAR} is missing: install Debian's zookeeper (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/zk/JuteGolden.java");
    let javac = Command::new("javac")
        .args(["-cp", JUTE_JAR, "-d"])
        .arg(dir.path())
        .arg(&src)
        .output()
        .expect("javac is missing: install a JDK (scripts/test.sh does)");
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );
    let classpath = format!("{}:{JUTE_JAR}", dir.path().display());
    let run = Command::new("java")
        .args(["-cp", &classpath, "JuteGolden"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "java: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (name.to_string(), bytes)
        })
        .collect()
}

fn acl() -> Vec<Acl> {
    let id = |scheme: &str, id: &str| Id {
        scheme: scheme.into(),
        id: id.into(),
    };
    vec![
        Acl {
            perms: 31,
            id: id("world", "anyone"),
        },
        Acl {
            perms: 1,
            id: id("digest", "user:HASH="),
        },
    ]
}

fn stat() -> Stat {
    Stat {
        czxid: 1,
        mzxid: 2,
        ctime: 1_700_000_000_000,
        mtime: 1_700_000_000_001,
        version: 3,
        cversion: 4,
        aversion: 5,
        ephemeral_owner: 0x0100_0000_0000_0007,
        data_length: 6,
        num_children: 2,
        pzxid: 9,
    }
}

/// Checks one sample: same bytes as ZooKeeper's, and ZooKeeper's bytes decode to `ours`.
fn check<T: Jute + PartialEq + std::fmt::Debug>(
    golden: &BTreeMap<String, Vec<u8>>,
    name: &str,
    ours: T,
) {
    let theirs = golden
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name}"));
    assert_eq!(&ours.to_bytes(), theirs, "{name}: encodings differ");
    let mut r = Reader::new(theirs);
    assert_eq!(r.record::<T>().as_ref(), Ok(&ours), "{name}: decoding");
    assert_eq!(r.remaining(), 0, "{name}: bytes left over");
}

#[test]
fn records_encode_byte_for_byte_as_zookeeper_encodes_them() {
    let g = zookeepers_bytes();
    check(&g, "stat", stat());
    check(
        &g,
        "connect_request",
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 42,
            time_out: 10_000,
            session_id: 0,
            passwd: Buffer(vec![0; 16]),
        },
    );
    check(
        &g,
        "connect_response",
        ConnectResponse {
            protocol_version: 0,
            time_out: 10_000,
            session_id: 0x0100_0000_0000_0001,
            passwd: Buffer(vec![1, 2, 3]),
        },
    );
    check(&g, "request_header", RequestHeader { xid: 7, kind: 1 });
    check(
        &g,
        "reply_header",
        ReplyHeader {
            xid: -1,
            zxid: -1,
            err: -101,
        },
    );
    check(
        &g,
        "create_request",
        CreateRequest {
            path: "/app/lock-".into(),
            data: Data::of(b"me".to_vec()),
            acl: acl(),
            flags: 3,
        },
    );
    check(
        &g,
        "create_ttl_request",
        CreateTtlRequest {
            path: "/ttl".into(),
            data: Data::of(Vec::new()),
            acl: acl(),
            flags: 5,
            ttl: 60_000,
        },
    );
    check(
        &g,
        "create2_response",
        Create2Response {
            path: "/app/lock-0000000001".into(),
            stat: stat(),
        },
    );
    check(
        &g,
        "set_data_request",
        SetDataRequest {
            path: "/a".into(),
            data: Data::of(vec![0, 255]),
            version: -1,
        },
    );
    check(
        &g,
        "set_data_request_null",
        SetDataRequest {
            path: "/a".into(),
            data: Data(None),
            version: 2,
        },
    );
    check(
        &g,
        "get_data_response",
        GetDataResponse {
            data: Data::of(b"v".to_vec()),
            stat: stat(),
        },
    );
    check(
        &g,
        "get_children2_response",
        GetChildren2Response {
            children: vec!["b".into(), "a".into()],
            stat: stat(),
        },
    );
    check(&g, "empty_children", GetChildrenResponse::default());
    check(
        &g,
        "watcher_event",
        WatcherEvent {
            kind: 4,
            state: 3,
            path: "/app".into(),
        },
    );
    check(
        &g,
        "multi_header",
        MultiHeader {
            kind: -1,
            done: true,
            err: -1,
        },
    );
    check(
        &g,
        "auth_packet",
        AuthPacket {
            kind: 0,
            scheme: "digest".into(),
            auth: Buffer(b"user:pw".to_vec()),
        },
    );
    check(
        &g,
        "set_watches2",
        SetWatches2 {
            relative_zxid: 17,
            data_watches: vec!["/d".into()],
            exist_watches: vec!["/e".into()],
            child_watches: vec!["/c".into()],
            persistent_watches: vec!["/p".into()],
            persistent_recursive_watches: Vec::new(),
        },
    );
    check(
        &g,
        "set_acl_request",
        SetAclRequest {
            path: "/a".into(),
            acl: acl(),
            version: 2,
        },
    );
    check(
        &g,
        "get_acl_response",
        GetAclResponse {
            acl: acl(),
            stat: stat(),
        },
    );
    check(&g, "error_response", ErrorResponse { err: -110 });
    check(
        &g,
        "who_am_i_response",
        WhoAmIResponse {
            client_info: vec![ClientInfo {
                auth_scheme: "ip".into(),
                user: "127.0.0.1".into(),
            }],
        },
    );
    check(
        &g,
        "add_watch_request",
        AddWatchRequest {
            path: "/r".into(),
            mode: 1,
        },
    );
    check(
        &g,
        "remove_watches_request",
        WatchesRequest {
            path: "/r".into(),
            kind: 3,
        },
    );
    check(
        &g,
        "reconfig_request",
        ReconfigRequest {
            joining_servers: String::new(),
            leaving_servers: String::new(),
            new_members: "server.1=h:1:2".into(),
            cur_config_id: -1,
        },
    );
    assert_eq!(g.len(), 24, "every sample checked");
}

/// A reply header whose codec writes `err` before `zxid`: a codec with one field out of order.
#[derive(Debug, PartialEq)]
struct SwappedReplyHeader(ReplyHeader);

impl Jute for SwappedReplyHeader {
    const BYTES_MIN: usize = 16;
    fn read(r: &mut Reader<'_>) -> Result<Self, quorumkv_server::zk::jute::JuteError> {
        let (xid, err, zxid) = (r.int()?, r.int()?, r.long()?);
        Ok(SwappedReplyHeader(ReplyHeader { xid, zxid, err }))
    }
    fn write(&self, w: &mut quorumkv_server::zk::jute::Writer) {
        w.int(self.0.xid);
        w.int(self.0.err);
        w.long(self.0.zxid);
    }
}

/// The check bites: a codec with a field out of jute's order is caught.
#[test]
#[should_panic(expected = "reply_header: encodings differ")]
fn a_field_out_of_order_is_caught() {
    let g = zookeepers_bytes();
    check(
        &g,
        "reply_header",
        SwappedReplyHeader(ReplyHeader {
            xid: -1,
            zxid: -1,
            err: -101,
        }),
    );
}
