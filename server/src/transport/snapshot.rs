//! Snapshot streams: a state-machine snapshot is too large for one peer frame, so it travels
//! on a connection of its own. The sender opens it (as any peer connection: see
//! `security`), sends the
//! snapshot file in checksummed chunk frames, and ends with the protocol's snapshot message.
//! The receiver writes the chunks to a temporary file in its snapshot directory (bounded in
//! bytes), makes it durable, renames it into place, and only then hands the message, carrying
//! the file's path as its data, to the protocol. Anything invalid closes the stream and
//! removes the partial file; the node carries on.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use quorumkv_replication::{NodeId, ProtocolMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame;
use super::peer_stream::PeerStream;

/// Opens a snapshot stream (where `QKVPEER1` opens a message connection).
pub const STREAM_MAGIC: &[u8; 8] = b"QKVSTRM1";
/// Bytes of snapshot data per frame.
pub const CHUNK_BYTES: usize = 1 << 20;
const TAG_CHUNK: u8 = 0;
const TAG_END: u8 = 1;

/// Where received snapshots go and how large one may be.
#[derive(Debug, Clone)]
pub struct ReceiveLimits {
    /// Directory for received snapshot files.
    pub dir: PathBuf,
    /// Largest snapshot accepted.
    pub bytes_max: u64,
}

/// Streams the snapshot file at `path` on `stream` (a snapshot stream, already opened), then
/// `message` (an encoded snapshot message without data). Returns the bytes of snapshot data
/// sent.
pub async fn send(mut stream: PeerStream, path: &Path, message: &[u8]) -> std::io::Result<u64> {
    let mut out = Vec::with_capacity(CHUNK_BYTES + 64);
    let mut file = tokio::fs::File::open(path).await?;
    let mut chunk = vec![0u8; CHUNK_BYTES + 1];
    let mut sent = 0u64;
    loop {
        chunk[0] = TAG_CHUNK;
        let n = file.read(&mut chunk[1..]).await?;
        if n == 0 {
            break;
        }
        out.clear();
        frame::encode(&mut out, &chunk[..n + 1]);
        stream.write_all(&out).await?;
        sent += n as u64;
        fail::fail_point!("snapshot::send_chunk");
    }
    let mut end = Vec::with_capacity(message.len() + 1);
    end.push(TAG_END);
    end.extend_from_slice(message);
    out.clear();
    frame::encode(&mut out, &end);
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(sent)
}

/// Receives one snapshot stream from `from` (its handshake already read; `dec` holds what
/// followed it) and passes the snapshot message on to `inbound`.
pub async fn receive<M: ProtocolMessage>(
    mut stream: PeerStream,
    mut dec: frame::Decoder,
    from: NodeId,
    me: NodeId,
    limits: &ReceiveLimits,
    inbound: &mpsc::Sender<M>,
) -> Result<(), String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    tokio::fs::create_dir_all(&limits.dir)
        .await
        .map_err(|e| format!("snapshot dir: {e}"))?;
    let tmp = limits.dir.join(format!("recv-{from:x}-{seq}.tmp"));
    let done = limits.dir.join(format!("recv-{from:x}-{seq}.snap"));
    let result = receive_into(&mut stream, &mut dec, &tmp, &done, limits.bytes_max).await;
    let message = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    let parsed = M::decode(&message)
        .map_err(|e| e.to_string())
        .and_then(|m| {
            if m.from() != from || m.to() != me {
                Err(format!(
                    "snapshot from {} to {} on a stream of {from}",
                    m.from(),
                    m.to()
                ))
            } else if m.snapshot_request().is_none() {
                Err("snapshot stream ended without a snapshot message".into())
            } else {
                Ok(m)
            }
        });
    let mut m = match parsed {
        Ok(m) => m,
        Err(e) => {
            let _ = tokio::fs::remove_file(&done).await;
            return Err(e);
        }
    };
    m.attach_snapshot(done.as_os_str().as_bytes().to_vec());
    if inbound.send(m).await.is_err() {
        let _ = tokio::fs::remove_file(&done).await;
    }
    Ok(())
}

async fn receive_into(
    stream: &mut PeerStream,
    dec: &mut frame::Decoder,
    tmp: &Path,
    done: &Path,
    bytes_max: u64,
) -> Result<Vec<u8>, String> {
    let mut file = tokio::fs::File::create(tmp)
        .await
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        while let Some(f) = dec.next_frame().map_err(|e| e.to_string())? {
            match f.first() {
                Some(&TAG_CHUNK) => {
                    got += (f.len() - 1) as u64;
                    if got > bytes_max {
                        return Err(format!("snapshot exceeds the limit of {bytes_max} bytes"));
                    }
                    file.write_all(&f[1..]).await.map_err(|e| e.to_string())?;
                    fail::fail_point!("snapshot::receive_chunk");
                }
                Some(&TAG_END) => {
                    file.sync_all().await.map_err(|e| e.to_string())?;
                    drop(file);
                    tokio::fs::rename(tmp, done)
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(dir) = done.parent() {
                        let dir = dir.to_path_buf();
                        tokio::task::spawn_blocking(move || {
                            std::fs::File::open(dir).and_then(|d| d.sync_all())
                        })
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    }
                    return Ok(f[1..].to_vec());
                }
                _ => return Err("unknown snapshot stream frame".into()),
            }
        }
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("snapshot stream closed before its end".into());
        }
        dec.push(&buf[..n]);
    }
}
