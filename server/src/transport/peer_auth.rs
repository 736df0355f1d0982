//! Proof of membership on every peer connection: a mutual challenge keyed by the cluster's
//! peer secret. The dialer says who it is (`Hello`) with a fresh nonce; the acceptor answers
//! with its own nonce and a MAC that proves it holds the secret; the dialer answers with a
//! MAC over the acceptor's nonce. Only then does the connection carry anything. Both MACs
//! cover the TLS channel's exported keying material when the connection is TLS, so a proof
//! made on one channel is worthless on another (a relay in the middle cannot forward it).
//!
//! Owns the secret (never logged, never sent) and the three handshake frames. Decides
//! nothing about what the connection carries afterwards.

use std::path::Path;

use quorumkv_replication::NodeId;
use ring::hmac;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame;

/// Bytes of a hello: magic, cluster id, sender id, nonce.
pub const HELLO_BYTES: usize = 8 + 8 + 8 + NONCE_BYTES;
const NONCE_BYTES: usize = 16;
const MAC_BYTES: usize = 32;
/// Bytes of the acceptor's challenge: its nonce and its MAC.
const CHALLENGE_BYTES: usize = NONCE_BYTES + MAC_BYTES;
/// Largest frame either side reads during the handshake.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64;

const ACCEPT_LABEL: &[u8] = b"quorumkv peer accept v1";
const DIAL_LABEL: &[u8] = b"quorumkv peer dial v1";
const DERIVE_LABEL: &[u8] = b"quorumkv peer secret v1\0";
/// The cluster token members share when none is configured (etcd's default
/// `--initial-cluster-token`).
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";
/// Least bytes a `--peer-secret-file` must hold.
pub const SECRET_FILE_BYTES_MIN: usize = 16;

/// The cluster's shared peer secret, as an HMAC-SHA256 key.
pub struct PeerSecret(hmac::Key);

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

impl PeerSecret {
    fn derive(material: &[u8]) -> PeerSecret {
        let mut h = Sha256::new();
        h.update(DERIVE_LABEL);
        h.update(material);
        PeerSecret(hmac::Key::new(hmac::HMAC_SHA256, &h.finalize()))
    }

    /// The secret of a cluster whose members share `--initial-cluster-token` and no secret
    /// file. Only as strong as the token is unguessable.
    pub fn from_token(token: &str) -> PeerSecret {
        PeerSecret::derive(token.as_bytes())
    }

    /// The secret in `path` (`--peer-secret-file`): at least 16 bytes; a trailing newline
    /// is not part of it.
    pub fn from_file(path: &Path) -> Result<PeerSecret, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--peer-secret-file {}: {e}", path.display()))?;
        let trimmed = bytes
            .strip_suffix(b"\n")
            .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
            .unwrap_or(&bytes);
        if trimmed.len() < SECRET_FILE_BYTES_MIN {
            return Err(format!(
                "--peer-secret-file {}: holds {} bytes; a secret needs at least {SECRET_FILE_BYTES_MIN}",
                path.display(),
                trimmed.len()
            ));
        }
        Ok(PeerSecret::derive(trimmed))
    }

    fn message(label: &[u8], binding: &[u8], hello: &[u8], nonce: &[u8]) -> Vec<u8> {
        let mut msg =
            Vec::with_capacity(16 + label.len() + binding.len() + hello.len() + nonce.len());
        for part in [label, binding, hello, nonce] {
            msg.extend_from_slice(&(part.len() as u32).to_le_bytes());
            msg.extend_from_slice(part);
        }
        msg
    }

    fn mac(&self, label: &[u8], binding: &[u8], hello: &[u8], nonce: &[u8]) -> hmac::Tag {
        hmac::sign(&self.0, &Self::message(label, binding, hello, nonce))
    }

    /// Whether `tag` is the MAC of these parts (compared in constant time).
    fn verify(&self, label: &[u8], binding: &[u8], hello: &[u8], nonce: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, &Self::message(label, binding, hello, nonce), tag).is_ok()
    }
}

/// Who a connection says it is and what it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// What the connection carries (messages, a snapshot, calls, an info query).
    pub magic: [u8; 8],
    /// The sender's cluster (0 for an info query: the asker does not know it yet).
    pub cluster: u64,
    /// The sender's member id (0 for an info query).
    pub from: NodeId,
}

impl Hello {
    fn encode(&self, nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
        let mut p = Vec::with_capacity(HELLO_BYTES);
        p.extend_from_slice(&self.magic);
        p.extend_from_slice(&self.cluster.to_le_bytes());
        p.extend_from_slice(&self.from.to_le_bytes());
        p.extend_from_slice(nonce);
        debug_assert_eq!(p.len(), HELLO_BYTES);
        p
    }

    fn decode(p: &[u8]) -> Option<Hello> {
        if p.len() != HELLO_BYTES {
            return None;
        }
        Some(Hello {
            magic: p[..8].try_into().ok()?,
            cluster: u64::from_le_bytes(p[8..16].try_into().ok()?),
            from: u64::from_le_bytes(p[16..24].try_into().ok()?),
        })
    }
}

fn nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + frame::HEADER_BYTES);
    frame::encode(&mut out, payload);
    s.write_all(&out).await?;
    s.flush().await
}

/// Reads the next frame from `s` into `dec` (which keeps whatever followed it).
pub async fn read_frame<S: AsyncRead + Unpin>(
    s: &mut S,
    dec: &mut frame::Decoder,
) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            return Ok(f);
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        dec.push(&buf[..n]);
    }
}

/// The dialer's side: says `hello`, checks the acceptor holds the secret, proves this side
/// does. `binding` is the channel's exported keying material (empty on plain TCP).
pub async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &PeerSecret,
    binding: &[u8],
    hello: Hello,
) -> std::io::Result<()> {
    let denied =
        |why: &str| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why.to_string());
    let said = hello.encode(&nonce());
    write_frame(s, &said).await?;
    let mut dec = frame::Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let challenge = read_frame(s, &mut dec)
        .await
        .map_err(|e| denied(&format!("the member refused this member's hello: {e}")))?;
    if challenge.len() != CHALLENGE_BYTES {
        return Err(denied("the member's challenge is malformed"));
    }
    let (their_nonce, their_mac) = challenge.split_at(NONCE_BYTES);
    if !secret.verify(ACCEPT_LABEL, binding, &said, their_nonce, their_mac) {
        return Err(denied(
            "the member does not hold this cluster's peer secret (a different \
             --initial-cluster-token or --peer-secret-file?)",
        ));
    }
    let proof = secret.mac(DIAL_LABEL, binding, &said, their_nonce);
    write_frame(s, proof.as_ref()).await
}

/// The acceptor's side: reads a hello, challenges it, and checks the dialer's proof. `dec`
/// keeps whatever the dialer sent after its proof.
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &PeerSecret,
    binding: &[u8],
    dec: &mut frame::Decoder,
) -> Result<Hello, String> {
    let said = read_frame(s, dec).await?;
    let hello = Hello::decode(&said).ok_or("bad handshake")?;
    let mine = nonce();
    let mac = secret.mac(ACCEPT_LABEL, binding, &said, &mine);
    let mut challenge = mine.to_vec();
    challenge.extend_from_slice(mac.as_ref());
    write_frame(s, &challenge)
        .await
        .map_err(|e| e.to_string())?;
    let proof = read_frame(s, dec).await?;
    if proof.len() != MAC_BYTES || !secret.verify(DIAL_LABEL, binding, &said, &mine, &proof) {
        return Err("the peer did not prove it holds the cluster's peer secret".into());
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: Hello = Hello {
        magic: *b"QKVPEER1",
        cluster: 7,
        from: 3,
    };

    async fn run(
        dialer: &PeerSecret,
        acceptor: &PeerSecret,
    ) -> (std::io::Result<()>, Result<Hello, String>) {
        let (mut a, mut b) = tokio::io::duplex(1 << 10);
        let mut dec = frame::Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
        let (d, c) = tokio::join!(
            async {
                let r = prove(&mut a, dialer, b"", HELLO).await;
                drop(a);
                r
            },
            async {
                let r = check(&mut b, acceptor, b"", &mut dec).await;
                drop(b);
                r
            }
        );
        (d, c)
    }

    #[tokio::test]
    async fn members_sharing_the_secret_pass_and_others_do_not() {
        let s = PeerSecret::from_token("t");
        let (d, c) = run(&s, &PeerSecret::from_token("t")).await;
        d.unwrap();
        assert_eq!(c.unwrap(), HELLO);
        let (d, c) = run(&s, &PeerSecret::from_token("u")).await;
        assert_eq!(d.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn a_proof_is_bound_to_its_channel() {
        let s = PeerSecret::from_token("t");
        let (mut a, mut b) = tokio::io::duplex(1 << 10);
        let mut dec = frame::Decoder::new(HANDSHAKE_FRAME_BYTES_MAX);
        let (d, c) = tokio::join!(
            async {
                let r = prove(&mut a, &s, b"channel one", HELLO).await;
                drop(a);
                r
            },
            async {
                let r = check(&mut b, &s, b"channel two", &mut dec).await;
                drop(b);
                r
            }
        );
        assert!(d.is_err() && c.is_err());
    }

    #[test]
    fn a_short_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, b"short\n").unwrap();
        assert!(
            PeerSecret::from_file(&f)
                .unwrap_err()
                .contains("at least 16")
        );
        std::fs::write(&f, b"0123456789abcdef\n").unwrap();
        PeerSecret::from_file(&f).unwrap();
    }
}
