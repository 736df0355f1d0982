//! A tiny bounded binary codec for peer messages. The reader treats its input as hostile:
//! every length is checked against what remains before anything is allocated.

use crate::types::{Conf, DecodeError, Entry, EntryKind, SnapshotMeta};

/// Most entries one message may carry.
pub const ENTRIES_MAX: usize = 1 << 16;
/// Most members a configuration may list.
pub const MEMBERS_MAX: usize = 1 << 10;

/// Appends little-endian fields.
pub(crate) struct W<'a>(pub(crate) &'a mut Vec<u8>);

impl W<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub(crate) fn blobs(&mut self, bs: &[Vec<u8>]) {
        self.u64(bs.len() as u64);
        for b in bs {
            self.bytes(b);
        }
    }
    pub(crate) fn entries(&mut self, es: &[Entry]) {
        self.u64(es.len() as u64);
        for e in es {
            self.u64(e.term);
            self.u64(e.index);
            self.u8(match e.kind {
                EntryKind::Normal => 0,
                EntryKind::ConfChange => 1,
                EntryKind::Noop => 2,
            });
            self.bytes(&e.data);
        }
    }
    pub(crate) fn conf(&mut self, c: &Conf) {
        self.u64(c.voters.len() as u64);
        for v in &c.voters {
            self.u64(*v);
        }
        self.u64(c.learners.len() as u64);
        for l in &c.learners {
            self.u64(*l);
        }
    }
    pub(crate) fn snapshot(&mut self, s: &SnapshotMeta) {
        self.u64(s.index);
        self.u64(s.term);
        self.conf(&s.conf);
    }
}

/// Reads fields, never past the end, never allocating more than remains.
pub(crate) struct R<'a> {
    buf: &'a [u8],
    at: usize,
}

fn err(m: &str) -> DecodeError {
    DecodeError(m.to_string())
}

impl<'a> R<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        R { buf, at: 0 }
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let v = *self.buf.get(self.at).ok_or_else(|| err("truncated"))?;
        self.at += 1;
        Ok(v)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let end = self.at.checked_add(8).ok_or_else(|| err("overflow"))?;
        let b = self.buf.get(self.at..end).ok_or_else(|| err("truncated"))?;
        self.at = end;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn len(&mut self, unit: usize, max: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let remaining = (self.buf.len() - self.at) / unit.max(1);
        if n > max as u64 || n > remaining as u64 {
            return Err(err("length beyond the message"));
        }
        Ok(n as usize)
    }
    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.len(1, usize::MAX)?;
        let v = self.buf[self.at..self.at + n].to_vec();
        self.at += n;
        Ok(v)
    }
    pub(crate) fn blobs(&mut self) -> Result<Vec<Vec<u8>>, DecodeError> {
        let n = self.len(8, ENTRIES_MAX)?;
        (0..n).map(|_| self.bytes()).collect()
    }
    pub(crate) fn entries(&mut self) -> Result<Vec<Entry>, DecodeError> {
        let n = self.len(25, ENTRIES_MAX)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let term = self.u64()?;
            let index = self.u64()?;
            let kind = match self.u8()? {
                0 => EntryKind::Normal,
                1 => EntryKind::ConfChange,
                2 => EntryKind::Noop,
                _ => return Err(err("unknown entry kind")),
            };
            let data = self.bytes()?;
            v.push(Entry {
                term,
                index,
                kind,
                data,
            });
        }
        Ok(v)
    }
    pub(crate) fn ids(&mut self) -> Result<Vec<u64>, DecodeError> {
        let n = self.len(8, MEMBERS_MAX)?;
        (0..n).map(|_| self.u64()).collect()
    }
    pub(crate) fn pairs(&mut self) -> Result<Vec<(u64, u64)>, DecodeError> {
        let n = self.len(16, MEMBERS_MAX * 64)?;
        (0..n).map(|_| Ok((self.u64()?, self.u64()?))).collect()
    }
    pub(crate) fn conf(&mut self) -> Result<Conf, DecodeError> {
        Ok(Conf {
            voters: self.ids()?,
            learners: self.ids()?,
        })
    }
    pub(crate) fn snapshot(&mut self) -> Result<SnapshotMeta, DecodeError> {
        Ok(SnapshotMeta {
            index: self.u64()?,
            term: self.u64()?,
            conf: self.conf()?,
        })
    }
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(err("trailing bytes"))
        }
    }
}
