//! ZooKeeper's operations as typed requests, and the bodies of multi and multiRead: a
//! sequence of (`MultiHeader`, record) pairs closed by a header marked done, each way.
//!
//! Decoding treats its input as hostile: an unknown operation, a record that does not decode,
//! reads and writes mixed in one multi, or more operations than [`MULTI_OPS_MAX`] are refused
//! as a whole (MARSHALLING_ERROR), as ZooKeeper refuses a request it cannot read.

use super::codes::{err, op};
use super::jute::{Data, Jute, JuteError, Reader, Writer};
use super::records::*;
use super::txn::{OpResult, ZkDone};

/// Most operations one multi carries (a frame of `jute.maxbuffer` bounds it too).
pub const MULTI_OPS_MAX: usize = 10_000;

/// A write, alone or inside a multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// create, create2 or createContainer (`op` says which).
    Create {
        /// Its operation code.
        op: i32,
        /// The request.
        req: CreateRequest,
    },
    /// createTTL.
    CreateTtl(CreateTtlRequest),
    /// delete.
    Delete(DeleteRequest),
    /// setData.
    SetData(SetDataRequest),
    /// check (inside a multi only).
    Check(CheckVersionRequest),
}

impl WriteOp {
    /// The write `kind` whose record `r` holds; None for anything else.
    pub fn read(kind: i32, r: &mut Reader<'_>) -> Result<Option<WriteOp>, JuteError> {
        Ok(Some(match kind {
            op::CREATE | op::CREATE2 | op::CREATE_CONTAINER => WriteOp::Create {
                op: kind,
                req: r.record()?,
            },
            op::CREATE_TTL => WriteOp::CreateTtl(r.record()?),
            op::DELETE => WriteOp::Delete(r.record()?),
            op::SET_DATA => WriteOp::SetData(r.record()?),
            op::CHECK => WriteOp::Check(r.record()?),
            _ => return Ok(None),
        }))
    }

    /// Its operation code.
    pub fn op(&self) -> i32 {
        match self {
            WriteOp::Create { op, .. } => *op,
            WriteOp::CreateTtl(_) => op::CREATE_TTL,
            WriteOp::Delete(_) => op::DELETE,
            WriteOp::SetData(_) => op::SET_DATA,
            WriteOp::Check(_) => op::CHECK,
        }
    }
}

/// A read inside a multiRead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOp {
    /// getChildren of a path.
    GetChildren(String),
    /// getData of a path.
    GetData(String),
}

/// The operations of a multi body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Multi {
    /// Writes, applied all or none.
    Write(Vec<WriteOp>),
    /// Reads, each answered on its own.
    Read(Vec<ReadOp>),
}

fn refused() -> JuteError {
    JuteError::Invalid("not an operation a multi carries")
}

/// Decodes a multi or multiRead body.
pub fn decode(body: &[u8]) -> Result<Multi, JuteError> {
    let mut r = Reader::new(body);
    let mut writes = Vec::new();
    let mut reads = Vec::new();
    loop {
        let h: MultiHeader = r.record()?;
        if h.done {
            break;
        }
        if writes.len() + reads.len() >= MULTI_OPS_MAX {
            return Err(JuteError::Invalid("too many operations in one multi"));
        }
        match h.kind {
            op::GET_CHILDREN => {
                reads.push(ReadOp::GetChildren(r.record::<GetChildrenRequest>()?.path))
            }
            op::GET_DATA => reads.push(ReadOp::GetData(r.record::<GetDataRequest>()?.path)),
            kind => writes.push(WriteOp::read(kind, &mut r)?.ok_or_else(refused)?),
        }
        if !writes.is_empty() && !reads.is_empty() {
            return Err(JuteError::Invalid("reads and writes mixed in one multi"));
        }
    }
    Ok(if reads.is_empty() {
        Multi::Write(writes)
    } else {
        Multi::Read(reads)
    })
}

/// The results of a multi of writes, as its reply body.
pub fn encode_writes(results: &[OpResult]) -> Vec<u8> {
    let mut w = Writer::default();
    for r in results {
        let (kind, code) = match &r.result {
            Ok(_) => (r.op, err::OK),
            Err(code) => (op::ERROR, *code),
        };
        MultiHeader {
            kind,
            done: false,
            err: code,
        }
        .write(&mut w);
        match &r.result {
            Err(code) => ErrorResponse { err: *code }.write(&mut w),
            Ok(ZkDone::Created { path, stat }) if r.op != op::CREATE => Create2Response {
                path: path.clone(),
                stat: stat.clone(),
            }
            .write(&mut w),
            Ok(ZkDone::Created { path, .. }) => CreateResponse { path: path.clone() }.write(&mut w),
            Ok(ZkDone::Set(stat)) => StatResponse { stat: stat.clone() }.write(&mut w),
            Ok(ZkDone::Done | ZkDone::Multi(_)) => {}
        }
    }
    done(&mut w);
    w.bytes
}

/// One read's answer inside a multiRead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    /// getChildren's names.
    Children(Vec<String>),
    /// getData's data and Stat.
    Data(Data, Stat),
    /// Its error code.
    Error(i32),
}

/// The results of a multiRead, as its reply body.
pub fn encode_reads(results: Vec<ReadResult>) -> Vec<u8> {
    let mut w = Writer::default();
    for r in results {
        let (kind, code) = match &r {
            ReadResult::Children(_) => (op::GET_CHILDREN, err::OK),
            ReadResult::Data(..) => (op::GET_DATA, err::OK),
            ReadResult::Error(code) => (op::ERROR, *code),
        };
        MultiHeader {
            kind,
            done: false,
            err: code,
        }
        .write(&mut w);
        match r {
            ReadResult::Children(children) => GetChildrenResponse { children }.write(&mut w),
            ReadResult::Data(data, stat) => GetDataResponse { data, stat }.write(&mut w),
            ReadResult::Error(err) => ErrorResponse { err }.write(&mut w),
        }
    }
    done(&mut w);
    w.bytes
}

fn done(w: &mut Writer) {
    MultiHeader {
        kind: -1,
        done: true,
        err: -1,
    }
    .write(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: i32, done: bool) -> Vec<u8> {
        MultiHeader {
            kind,
            done,
            err: -1,
        }
        .to_bytes()
    }

    #[test]
    fn a_multi_body_decodes_and_mixed_ones_are_refused() {
        let mut body = header(op::CHECK, false);
        body.extend(
            CheckVersionRequest {
                path: "/a".into(),
                version: 1,
            }
            .to_bytes(),
        );
        body.extend(header(op::DELETE, false));
        body.extend(
            DeleteRequest {
                path: "/a".into(),
                version: -1,
            }
            .to_bytes(),
        );
        let mut closed = body.clone();
        closed.extend(header(-1, true));
        let Ok(Multi::Write(ops)) = decode(&closed) else {
            panic!("a multi of writes")
        };
        assert_eq!(
            ops.iter().map(WriteOp::op).collect::<Vec<_>>(),
            [op::CHECK, op::DELETE]
        );
        assert!(decode(&body).is_err(), "unterminated");
        let mut mixed = body;
        mixed.extend(header(op::GET_DATA, false));
        mixed.extend(
            GetDataRequest {
                path: "/a".into(),
                watch: false,
            }
            .to_bytes(),
        );
        mixed.extend(header(-1, true));
        assert!(decode(&mixed).is_err());
        let mut unknown = header(op::SYNC, false);
        unknown.extend(Writer::default().bytes);
        assert!(decode(&unknown).is_err());
    }

    proptest::proptest! {
        /// Hostile bytes: decoding answers operations or an error, never a panic; what
        /// decodes as writes encodes results without a panic too.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)
        ) {
            if let Ok(Multi::Write(ops)) = decode(&bytes) {
                let results: Vec<OpResult> = ops
                    .iter()
                    .map(|w| OpResult { op: w.op(), result: Err(err::OK) })
                    .collect();
                let _ = encode_writes(&results);
            }
        }
    }
}
