//! A ZooKeeper connection spoken by hand, for what no client library sends as is: pipelined
//! requests, chosen xids, resumed sessions, bytes of any kind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use quorumkv_server::zk::jute::{Jute, Reader};
use quorumkv_server::zk::records::*;

/// A connection speaking the protocol by hand, for what no client library sends as is.
pub struct Raw {
    pub s: TcpStream,
    pub xid: i32,
}

impl Raw {
    pub fn connect(zk: &str) -> Raw {
        Raw::resume(zk, 0, vec![0; 16], 0).0
    }

    /// Connects as session `id` (0: a new one) having seen `zxid`; answers its response.
    pub fn resume(zk: &str, id: i64, passwd: Vec<u8>, zxid: i64) -> (Raw, ConnectResponse) {
        let mut s = TcpStream::connect(zk).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let hello = ConnectRequest {
            time_out: 10_000,
            session_id: id,
            last_zxid_seen: zxid,
            passwd: quorumkv_server::zk::jute::Buffer(passwd),
            ..ConnectRequest::default()
        };
        let mut body = hello.to_bytes();
        body.push(0);
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        s.write_all(&out).unwrap();
        let mut raw = Raw { s, xid: 0 };
        let resp = Reader::new(&raw.frame()).record().unwrap();
        (raw, resp)
    }

    pub fn frame(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).unwrap();
        body
    }

    /// Sends `kind` with `body` without waiting; answers its xid.
    pub fn send(&mut self, kind: i32, body: &[u8]) -> i32 {
        self.xid += 1;
        let mut req = RequestHeader {
            xid: self.xid,
            kind,
        }
        .to_bytes();
        req.extend_from_slice(body);
        let mut out = (req.len() as u32).to_be_bytes().to_vec();
        out.extend(req);
        self.s.write_all(&out).unwrap();
        self.xid
    }

    /// The next reply (notifications skipped): its header and body.
    pub fn reply(&mut self) -> (ReplyHeader, Vec<u8>) {
        loop {
            let f = self.frame();
            let mut r = Reader::new(&f);
            let h: ReplyHeader = r.record().unwrap();
            if h.xid != -1 {
                return (h, f[16..].to_vec());
            }
        }
    }

    /// Sends `kind` with `body`; answers the reply's error code and body.
    pub fn call(&mut self, kind: i32, body: &[u8]) -> (i32, Vec<u8>) {
        let xid = self.send(kind, body);
        loop {
            let (h, body) = self.reply();
            if h.xid == xid {
                return (h.err, body);
            }
        }
    }
}

pub fn create(c: &mut Raw, path: &str) -> i64 {
    let req = CreateRequest {
        path: path.into(),
        acl: vec![Acl {
            perms: 31,
            id: Id {
                scheme: "world".into(),
                id: "anyone".into(),
            },
        }],
        ..CreateRequest::default()
    };
    let (code, body) = c.call(15, &req.to_bytes());
    assert_eq!(code, 0, "create {path}");
    Reader::new(&body)
        .record::<Create2Response>()
        .unwrap()
        .stat
        .czxid
}
