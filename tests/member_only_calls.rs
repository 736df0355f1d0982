//! Member-only calls are not on the client port. With authentication on, a client holding no
//! token tries, by gRPC and through the JSON gateway, to rename a member and move its URLs, to
//! raise and to clear an alarm, to write a lease checkpoint and to reach the member-to-member
//! `Internal` service: every attempt is refused, and afterwards the member list, the alarms
//! and the administrator's writes are as before. The peer port, where member-to-member calls
//! do travel (a call connection gets a hash), still refuses a lease checkpoint, and refuses
//! a connection that skips the handshake, names another cluster, or cannot prove it holds
//! the peer secret (and tells such a caller nothing about the cluster).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::OneMember;
use quorumkv_server::pb::etcdserverpb::{
    self as pb, auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient,
    maintenance_client::MaintenanceClient,
};
use quorumkv_server::pb::quorumkv::{
    InternalRequest, MemberAttributes, internal_client::InternalClient,
    internal_request::Request as Req,
};
use quorumkv_server::transport::peer_auth::PeerSecret;
use quorumkv_server::transport::security::PeerSecurity;
use quorumkv_server::transport::{frame, tcp};
use tonic::Code;

/// A POST of `body` to `path` on `endpoint` over HTTP/1.1: the status line and the whole answer.
fn post(endpoint: &str, path: &str, body: &str) -> (String, String) {
    let mut s = TcpStream::connect(endpoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (out.lines().next().unwrap_or("").to_string(), out)
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

async fn channel(addr: &str) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        match ep.connect().await {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("member never served clients: {e}"),
        }
    }
}

fn entry(request: Req) -> InternalRequest {
    InternalRequest {
        request: Some(request),
        ..InternalRequest::default()
    }
}

#[test]
fn member_only_calls_are_refused_to_clients() {
    let dir = tempfile::tempdir().unwrap();
    let node = OneMember::start(dir.path(), "m1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = channel(&node.client).await;
        let mut kv = KvClient::new(ch.clone());
        let mut auth = AuthClient::new(ch.clone());
        let mut cluster = ClusterClient::new(ch.clone());
        let mut maintenance = MaintenanceClient::new(ch.clone());
        let mut internal = InternalClient::new(ch.clone());

        // A root user, then authentication on (retried while the member elects itself).
        let deadline = Instant::now() + Duration::from_secs(20);
        while kv
            .put(pb::PutRequest {
                key: b"/app/x".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the member never took a write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        auth.user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: "rootpw".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .unwrap();
        auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
        let token = auth
            .authenticate(pb::AuthenticateRequest {
                name: "root".into(),
                password: "rootpw".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        let members_before = cluster
            .member_list(with_token(pb::MemberListRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .members;
        let me = members_before[0].id;

        // The member-to-member service is not on the client port at all.
        let forged = [
            Req::MemberAttributes(MemberAttributes {
                id: me,
                name: "evil".into(),
                client_urls: vec!["http://127.0.0.9:1".into()],
                peer_urls: vec!["http://127.0.0.9:2".into()],
            }),
            Req::Alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: me,
                alarm: pb::AlarmType::Nospace as i32,
            }),
            Req::LeaseCheckpoint(pb::LeaseCheckpointRequest {
                checkpoints: vec![pb::LeaseCheckpoint {
                    id: 7,
                    remaining_ttl: 1,
                }],
            }),
        ];
        for request in forged {
            let what = format!("{request:?}");
            let e = internal.propose(entry(request)).await.unwrap_err();
            assert_eq!(
                e.code(),
                Code::Unimplemented,
                "Internal.Propose({what}): {e:?}"
            );
        }
        let e = internal
            .hash_kv(pb::HashKvRequest { revision: 0 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "Internal.HashKv: {e:?}");

        // etcd's own calls for the same things want the administrator.
        for action in [
            pb::alarm_request::AlarmAction::Activate,
            pb::alarm_request::AlarmAction::Deactivate,
        ] {
            let e = maintenance
                .alarm(pb::AlarmRequest {
                    action: action as i32,
                    member_id: me,
                    alarm: pb::AlarmType::Nospace as i32,
                })
                .await
                .unwrap_err();
            assert_ne!(e.code(), Code::Ok, "{action:?} without a token: {e:?}");
        }
        let e = cluster
            .member_update(pb::MemberUpdateRequest {
                id: me,
                peer_ur_ls: vec!["http://127.0.0.9:2".into()],
            })
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok, "MemberUpdate without a token: {e:?}");

        // The same through the JSON gateway.
        let alarm = format!(r#"{{"action":"ACTIVATE","memberID":"{me}","alarm":"NOSPACE"}}"#);
        let (status, body) = post(&node.client, "/v3/maintenance/alarm", &alarm);
        assert!(
            !status.contains(" 200 "),
            "gateway alarm without a token: {body}"
        );
        let update = format!(r#"{{"ID":"{me}","peerURLs":["http://127.0.0.9:2"]}}"#);
        let (status, body) = post(&node.client, "/v3/cluster/member/update", &update);
        assert!(!status.contains(" 200 "), "gateway member update: {body}");
        for path in [
            "/v3/quorumkv.Internal/Propose",
            "/quorumkv.Internal/Propose",
            "/v3/internal/propose",
        ] {
            let (status, body) = post(&node.client, path, "{}");
            assert!(status.contains(" 404 "), "{path}: {body}");
        }

        // Nothing changed: the member is as it was, no alarm is raised, root still writes.
        let members_after = cluster
            .member_list(with_token(pb::MemberListRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .members;
        assert_eq!(members_after, members_before);
        let alarms = maintenance
            .alarm(with_token(
                pb::AlarmRequest {
                    action: pb::alarm_request::AlarmAction::Get as i32,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner()
            .alarms;
        assert!(alarms.is_empty(), "{alarms:?}");
        kv.put(with_token(
            pb::PutRequest {
                key: b"/app/x".to_vec(),
                value: b"2".to_vec(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap();

        // The administrator may raise and clear one, as etcd's may.
        for action in [
            pb::alarm_request::AlarmAction::Activate,
            pb::alarm_request::AlarmAction::Deactivate,
        ] {
            let acted = maintenance
                .alarm(with_token(
                    pb::AlarmRequest {
                        action: action as i32,
                        member_id: me,
                        alarm: pb::AlarmType::Nospace as i32,
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner()
                .alarms;
            assert_eq!(acted.len(), 1, "{action:?}");
        }
    });

    // The peer port's call connections carry the member-to-member calls (a hash answers),
    // yet even there a lease checkpoint, which no member ever proposes, is refused.
    let cluster_id = rt.block_on(async {
        let ch = channel(&node.client).await;
        let status = MaintenanceClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let header = status.header.unwrap();
        let peer: std::net::SocketAddr = node.peer.parse().unwrap();
        let (cluster, me) = (header.cluster_id, header.member_id);
        let connector = tower::service_fn(move |_: http::Uri| async move {
            let s = tcp::dial_calls(&member_secret(), peer, cluster, me).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        });
        let calls = tonic::transport::Endpoint::from_static("http://member.calls")
            .connect_with_connector(connector)
            .await
            .unwrap();
        let mut internal = InternalClient::new(calls);
        let hash = internal.hash_kv(pb::HashKvRequest { revision: 0 }).await;
        assert!(
            hash.is_ok(),
            "Internal.HashKv over a call connection: {hash:?}"
        );
        let e = internal
            .propose(entry(Req::LeaseCheckpoint(pb::LeaseCheckpointRequest {
                checkpoints: vec![pb::LeaseCheckpoint {
                    id: 7,
                    remaining_ttl: 1,
                }],
            })))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        cluster
    });

    // The peer port: a gRPC client that skips the handshake is cut off; a call connection
    // that names another cluster is not acknowledged even with the secret; one without the
    // secret gets no further than its proof, and the info query tells it nothing.
    rt.block_on(async {
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{}", node.peer)).unwrap();
        let refused = match ep.connect().await {
            Err(_) => true,
            Ok(ch) => InternalClient::new(ch)
                .hash_kv(pb::HashKvRequest { revision: 0 })
                .await
                .is_err(),
        };
        assert!(
            refused,
            "Internal served on the peer port without a handshake"
        );
        let peer: std::net::SocketAddr = node.peer.parse().unwrap();
        let other = tcp::dial_calls(&member_secret(), peer, 0xdead_beef, 1).await;
        assert!(
            other.is_err(),
            "a call connection of another cluster was acknowledged"
        );
        let guess = PeerSecurity::plain(PeerSecret::from_token("guessed"));
        let forged = tcp::dial_calls(&guess, peer, cluster_id, 1).await;
        assert_eq!(
            forged.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied,
            "a call connection without the peer secret"
        );
        let info = tcp::query_info(&guess, peer, Duration::from_secs(5), 1 << 20).await;
        assert!(
            info.is_err(),
            "the info query answered without the secret: {info:?}"
        );
        let info = tcp::query_info(&member_secret(), peer, Duration::from_secs(5), 1 << 20)
            .await
            .unwrap();
        assert!(!info.is_empty(), "the info query answers a member");
    });
    // The previous handshake, which named a cluster and proved nothing, is cut off.
    let mut hello = b"QKVCALL1".to_vec();
    hello.extend_from_slice(&cluster_id.to_le_bytes());
    hello.extend_from_slice(&1u64.to_le_bytes());
    let mut framed = Vec::new();
    frame::encode(&mut framed, &hello);
    let mut s = TcpStream::connect(&node.peer).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&framed).unwrap();
    let mut ack = [0u8; 1];
    let n = s.read(&mut ack).unwrap_or(0);
    assert_eq!(n, 0, "an unproven call connection was answered");
}

/// The peer security of a member of a cluster with the default token.
fn member_secret() -> PeerSecurity {
    PeerSecurity::plain(PeerSecret::from_token("etcd-cluster"))
}
