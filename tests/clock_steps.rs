//! Lifetimes run on monotonic time. A member under libfaketime has its wall clock stepped two
//! hours forward, then two hours back, as an NTP step would: an auth token and a lease granted
//! before the steps stay valid through them, and both still end when their own time is up.

mod common;

use std::time::{Duration, Instant};

use common::{OneMember, free_port};
use quorumkv_server::pb::etcdserverpb::{
    self as pb, auth_client::AuthClient, kv_client::KvClient, lease_client::LeaseClient,
};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("token", token.parse().unwrap());
    r
}

/// A fresh token of the root user.
async fn root_token(auth: &mut AuthClient<tonic::transport::Channel>) -> String {
    auth.authenticate(pb::AuthenticateRequest {
        name: "root".into(),
        password: "rootpw".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

#[test]
fn tokens_and_leases_outlive_wall_clock_steps_and_still_end_on_time() {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is missing: install Debian's faketime (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let clock_s = clock.to_str().unwrap().to_string();
    let client = format!("127.0.0.1:{}", free_port());
    let _m = OneMember::start_with_env(
        dir.path(),
        "c1",
        client.clone(),
        format!("127.0.0.1:{}", free_port()),
        &["--auth-token-ttl", "6"],
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &clock_s),
            ("FAKETIME_CACHE_DURATION", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let step = |secs: i64| {
        std::fs::write(&clock, format!("{secs:+}\n")).unwrap();
        // libfaketime rereads the file every second.
        std::thread::sleep(Duration::from_millis(1500));
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut kv, mut lease, mut auth, token, lease_id, granted) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ch = loop {
            let ep = tonic::transport::Endpoint::from_shared(format!("http://{client}")).unwrap();
            match ep.connect().await {
                Ok(c) => break c,
                Err(e) => assert!(Instant::now() < deadline, "never served: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut kv = KvClient::new(ch.clone());
        let mut auth = AuthClient::new(ch.clone());
        let mut lease = LeaseClient::new(ch.clone());
        while kv
            .put(pb::PutRequest {
                key: b"ready".to_vec(),
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
        let granted = Instant::now();
        let token = root_token(&mut auth).await;
        let lease_id = lease
            .lease_grant(with_token(pb::LeaseGrantRequest { ttl: 6, id: 0 }, &token))
            .await
            .unwrap()
            .into_inner()
            .id;
        (kv, lease, auth, token, lease_id, granted)
    });
    let alive = |kv: &mut KvClient<_>, lease: &mut LeaseClient<_>| {
        rt.block_on(async {
            let put = kv
                .put(with_token(
                    pb::PutRequest {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await;
            let ttl = lease
                .lease_time_to_live(with_token(
                    pb::LeaseTimeToLiveRequest {
                        id: lease_id,
                        keys: false,
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().ttl);
            (put.map(|_| ()).map_err(|e| e.message().to_string()), ttl)
        })
    };
    step(7200);
    let (put, ttl) = alive(&mut kv, &mut lease);
    assert_eq!(put, Ok(()), "a token died when the clock jumped forward");
    assert!(
        matches!(ttl, Ok(t) if t > 0),
        "a lease died when the clock jumped forward: {ttl:?}"
    );
    step(-7200);
    let (put, ttl) = alive(&mut kv, &mut lease);
    let last_use = Instant::now();
    assert_eq!(put, Ok(()), "a token died when the clock jumped back");
    assert!(matches!(ttl, Ok(t) if t > 0), "{ttl:?}");
    assert!(
        granted.elapsed() < Duration::from_secs(6),
        "too slow to tell: the lease's own time was up"
    );
    // Their own time still ends them: the lease 6 s after its grant, the token 6 s after its
    // last use (etcd's simple tokens live on while used).
    std::thread::sleep(Duration::from_secs(8).saturating_sub(last_use.elapsed()));
    let (put, _) = alive(&mut kv, &mut lease);
    assert!(
        put.as_ref()
            .is_err_and(|e| e.contains("invalid auth token")),
        "the token outlived its TTL: {put:?}"
    );
    let ttl = rt.block_on(async {
        let fresh = root_token(&mut auth).await;
        lease
            .lease_time_to_live(with_token(
                pb::LeaseTimeToLiveRequest {
                    id: lease_id,
                    keys: false,
                },
                &fresh,
            ))
            .await
            .unwrap()
            .into_inner()
            .ttl
    });
    assert_eq!(ttl, -1, "the lease outlived its TTL");
}
