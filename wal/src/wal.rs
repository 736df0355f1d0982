//! The log: appends, group commit, pipelining, reads, truncation and purge.
//!
//! Three threads touch a log. Appenders encode frames (CRC left empty) into the open batch under
//! the state lock and get a [`Ticket`]. The writer owns the segment files: it takes the oldest
//! batch, seals each frame's CRC with the segment's salt, writes it, rotates segments, and hands
//! the batch to the syncer. The syncer runs one fdatasync for every batch written since its last
//! one and only then completes their tickets. While it syncs batch N, the writer already writes
//! batch N+1 (`pipeline_depth` bounds how many batches are written but unsynced), and every
//! append arriving meanwhile joins the next batch. A failed write or fdatasync stops the log for
//! good: nothing is acknowledged after it.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};
use crate::frame::{self, Decoded};
use crate::io::{Backend, FileSystem, LogFile};
use crate::options::WalOptions;
use crate::prealloc::{Preallocator, Ready};
use crate::recovery::{self, RecoveryReport};
use crate::segment::{self, SegmentHeader};
use crate::ticket::{Durability, Ticket};

const READ_CHUNK_BYTES: u64 = 4 << 20;

/// Upper bounds of the fdatasync duration buckets, in microseconds (the last bucket is
/// unbounded).
pub const SYNC_BUCKET_BOUNDS_US: [u64; 13] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 500_000, 1_000_000,
];

/// An fdatasync slower than this is logged and counted as slow.
pub const SLOW_SYNC: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters of the log's IO, for benchmarks and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    /// Records written.
    pub records: u64,
    /// Bytes written, frames included.
    pub bytes: u64,
    /// Batches written.
    pub batches: u64,
    /// fdatasync calls on the append path.
    pub syncs: u64,
    /// Time spent in those fdatasync calls, in nanoseconds.
    pub sync_nanos: u64,
    /// fdatasync calls per duration bucket (see [`SYNC_BUCKET_BOUNDS_US`]; one more bucket
    /// for anything slower).
    pub sync_buckets: [u64; 14],
    /// fdatasync calls slower than [`SLOW_SYNC`].
    pub slow_syncs: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    batches: AtomicU64,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    sync_buckets: [AtomicU64; 14],
    slow_syncs: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WalStats {
        WalStats {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_nanos: self.sync_nanos.load(Ordering::Relaxed),
            sync_buckets: std::array::from_fn(|i| self.sync_buckets[i].load(Ordering::Relaxed)),
            slow_syncs: self.slow_syncs.load(Ordering::Relaxed),
        }
    }

    fn timed_sync(&self, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let t0 = Instant::now();
        let r = f();
        let took = t0.elapsed();
        self.sync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        let us = took.as_micros() as u64;
        let bucket = SYNC_BUCKET_BOUNDS_US.partition_point(|b| *b < us);
        self.sync_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if took >= SLOW_SYNC {
            self.slow_syncs.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(took_ms = took.as_millis() as u64, "slow fdatasync");
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        r
    }
}

/// A segment as the read path sees it.
struct Seg {
    path: PathBuf,
    file: Arc<dyn LogFile>,
    header: SegmentHeader,
    /// Frame offsets of the records written so far.
    offsets: Vec<u32>,
    /// Offset just past the last written frame.
    end: u64,
}

/// The segment being written.
struct Io {
    file: Arc<dyn LogFile>,
    header: SegmentHeader,
    write_off: u64,
}

struct Batch {
    buf: Vec<u8>,
    frames: Vec<u32>,
    first_index: u64,
    /// Every append with a sequence number up to this one ends in this batch or earlier.
    last_seq: u64,
    opened: Instant,
}

impl Batch {
    fn frame_end(&self, f: usize) -> usize {
        self.frames
            .get(f + 1)
            .map_or(self.buf.len(), |&o| o as usize)
    }
}

struct SyncJob {
    /// The file to sync; `None` when the writer already synced it.
    file: Option<Arc<dyn LogFile>>,
    seq: u64,
    last_index: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum WriterWait {
    /// Running, or waiting on the syncer (which wakes it).
    #[default]
    Busy,
    /// No batch to write.
    Idle,
    /// Waiting for the open batch to reach `linger_target` records.
    Lingering,
    /// A sync is in flight and the open batch is too small to write ahead of it.
    Gathering,
}

#[derive(Default)]
struct State {
    first_index: u64,
    next_index: u64,
    written_index: u64,
    durable_index: u64,
    next_seq: u64,
    batches: VecDeque<Batch>,
    queued_bytes: usize,
    /// Batches taken by the writer and not yet durable.
    inflight: usize,
    writing: bool,
    /// Why the writer sleeps, so an append wakes it only when that reason is gone (a wake per
    /// append would cost a context switch each).
    writer_wait: WriterWait,
    /// Records outstanding when the last sync completed (the group it made durable plus those
    /// still waiting): appenders woken together come back together, so the next batch waits
    /// (up to `batch_linger`) until it holds that many.
    linger_target: usize,
    /// When the last sync completed; the linger is measured from here.
    completed_at: Option<Instant>,
    paused: bool,
    closing: bool,
    writer_done: bool,
    stopped: bool,
    sync_queue: Vec<SyncJob>,
    spare: Vec<BatchBuffers>,
}

struct Shared {
    opts: WalOptions,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    state: Mutex<State>,
    writer_cv: Condvar,
    syncer_cv: Condvar,
    /// Appenders waiting for room, readers waiting for writes, control ops waiting for a drain.
    state_cv: Condvar,
    durability: Arc<Durability>,
    io: Mutex<Io>,
    segs: RwLock<Vec<Seg>>,
    prealloc: Preallocator,
    control: Mutex<()>,
    counters: Counters,
}

/// A segmented, CRC-framed, group-committed write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("backend", &self.shared.fs.name())
            .finish_non_exhaustive()
    }
}

fn new_salt(seq: u64) -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seq);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}

/// Turns a preallocated file into segment `seq`: header written and synced, renamed into place,
/// directory synced. Only then may records in it be acknowledged.
fn install_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    ready: Ready,
    seq: u64,
    first_index: u64,
    flags: u32,
) -> io::Result<(Seg, Io)> {
    let header = SegmentHeader {
        salt: new_salt(seq),
        seq,
        first_index,
        flags,
    };
    ready.file.write_and_sync(&header.encode(), 0)?;
    let path = dir.join(segment::file_name(seq, first_index));
    fs.rename(&ready.path, &path)?;
    fs.sync_dir(dir)?;
    let seg = Seg {
        path,
        file: ready.file.clone(),
        header,
        offsets: Vec::new(),
        end: segment::HEADER_BYTES as u64,
    };
    let io = Io {
        file: ready.file,
        header,
        write_off: segment::HEADER_BYTES as u64,
    };
    Ok((seg, io))
}

/// Cuts a segment file at `cut`, durably, and gives it back its previous length (read as
/// zeros). Shrinking is one metadata step that a crash keeps or drops whole, so the dead records
/// are either all there or all gone. Zeroing them in place instead could tear into a damaged
/// record followed by intact ones, which recovery must treat as corruption, not as a crash.
fn cut_tail(file: &dyn LogFile, cut: u64) -> io::Result<()> {
    let len = file.len_bytes()?;
    file.truncate(cut)?;
    if len > cut {
        file.allocate(len)?;
    }
    file.sync_data()
}

impl Wal {
    /// Opens (or creates) the log in `dir` on the given io backend, recovering what is there.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions, backend: Backend) -> Result<Wal> {
        let fs = backend.file_system();
        let fs: Arc<dyn FileSystem> = if opts.unsafe_no_fsync {
            Arc::new(crate::io::NoSyncFs(fs))
        } else {
            fs
        };
        Wal::open_with_fs(dir, opts, fs)
    }

    /// Opens (or creates) the log in `dir` on any file system.
    pub fn open_with_fs(
        dir: impl AsRef<Path>,
        opts: WalOptions,
        fs: Arc<dyn FileSystem>,
    ) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let (recovered, mut report) = recovery::recover(&*fs, &dir, &opts)?;
        let prealloc = Preallocator::start(fs.clone(), &dir, opts.segment_bytes, opts.preallocate);
        let mut segs: Vec<Seg> = recovered
            .into_iter()
            .map(|r| Seg {
                path: r.path,
                file: r.file,
                header: r.header,
                offsets: r.offsets,
                end: r.end,
            })
            .collect();
        if segs.is_empty() {
            let ready = prealloc.take().map_err(Error::io("create first segment"))?;
            let (seg, _) = install_segment(
                &*fs,
                &dir,
                ready,
                1,
                opts.first_index,
                segment::FLAG_RESTART,
            )
            .map_err(Error::io("create first segment"))?;
            segs.push(seg);
            report.created = true;
            report.segments = 1;
            report.first_index = opts.first_index;
            report.last_index = opts.first_index - 1;
        }
        let last = segs.last().expect("at least one segment");
        let io = Io {
            file: last.file.clone(),
            header: last.header,
            write_off: last.end,
        };
        let next_index = last.header.first_index + last.offsets.len() as u64;
        let state = State {
            first_index: segs[0].header.first_index,
            next_index,
            written_index: next_index - 1,
            durable_index: next_index - 1,
            next_seq: 1,
            ..State::default()
        };
        let shared = Arc::new(Shared {
            opts,
            fs,
            dir,
            state: Mutex::new(state),
            writer_cv: Condvar::new(),
            syncer_cv: Condvar::new(),
            state_cv: Condvar::new(),
            durability: Arc::new(Durability::default()),
            io: Mutex::new(io),
            segs: RwLock::new(segs),
            prealloc,
            control: Mutex::new(()),
            counters: Counters::default(),
        });
        let writer = {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("wal-writer".into())
                .spawn(move || writer_loop(&sh))
                .map_err(Error::io("spawn writer"))?
        };
        let syncer = {
            let sh = shared.clone();
            std::thread::Builder::new()
                .name("wal-syncer".into())
                .spawn(move || syncer_loop(&sh))
                .map_err(Error::io("spawn syncer"))?
        };
        tracing::info!(
            dir = %shared.dir.display(),
            backend = shared.fs.name(),
            segments = report.segments,
            records = report.records,
            torn_tail = report.torn_tail.is_some(),
            "wal opened"
        );
        Ok(Wal {
            shared,
            writer: Some(writer),
            syncer: Some(syncer),
            report,
        })
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The io backend in use (`uring`, `pwrite` or `sim`).
    pub fn backend_name(&self) -> &'static str {
        self.shared.fs.name()
    }

    /// The options the log runs with.
    pub fn options(&self) -> &WalOptions {
        &self.shared.opts
    }

    /// IO counters since open.
    pub fn stats(&self) -> WalStats {
        self.shared.counters.snapshot()
    }

    /// A reader of [`Wal::stats`] that may move to other threads and outlive this handle.
    pub fn stats_reader(&self) -> Arc<dyn Fn() -> WalStats + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || shared.counters.snapshot())
    }

    /// Appends records; they get consecutive indexes. Blocks while the queue is full. The
    /// returned ticket completes once every record is durable.
    pub fn append<I, R>(&self, records: I) -> Result<Ticket>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        self.append_inner(records, true)
    }

    /// Like [`Wal::append`], but fails with [`Error::QueueFull`] instead of blocking.
    pub fn try_append<I, R>(&self, records: I) -> Result<Ticket>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        self.append_inner(records, false)
    }

    /// Appends records and returns once they are durable, like [`Wal::append`] followed by
    /// [`Ticket::wait`]. When the log is idle (the writer asleep with nothing queued, nothing
    /// written and not yet durable) the calling thread writes and fdatasyncs the records itself:
    /// no hand-off to the writer and back, two context switches fewer, and no batch linger
    /// (which waits for other appenders that a caller blocked here cannot be). Otherwise the
    /// records join the queue like any append. Returns the indexes the records got.
    pub fn append_durable<I, R>(&self, records: I) -> Result<std::ops::Range<u64>>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        let (ticket, claimed) = self.enqueue(records, true, true)?;
        if !claimed.is_empty() {
            write_claimed(&self.shared, claimed)?;
        }
        ticket.wait()?;
        Ok(ticket.first_index()..ticket.last_index() + 1)
    }

    fn append_inner<I, R>(&self, records: I, block: bool) -> Result<Ticket>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        let (ticket, claimed) = self.enqueue(records, block, false)?;
        debug_assert!(claimed.is_empty(), "only append_durable claims batches");
        Ok(ticket)
    }

    /// Queues records. With `claim`, when the writer is asleep with nothing to do and nothing is
    /// in flight, the new batches are taken off the queue for the caller to write (see
    /// [`write_claimed`]) and the writer is not woken.
    fn enqueue<I, R>(&self, records: I, block: bool, claim: bool) -> Result<(Ticket, Vec<Batch>)>
    where
        I: IntoIterator<Item = R>,
        R: AsRef<[u8]>,
    {
        let sh = &*self.shared;
        let opts = &sh.opts;
        let records: Vec<R> = records.into_iter().collect();
        let mut bytes = 0usize;
        for r in &records {
            let len = r.as_ref().len();
            if len > opts.record_bytes_max {
                return Err(Error::RecordTooLarge {
                    len,
                    max: opts.record_bytes_max,
                });
            }
            bytes += frame::frame_bytes(len);
        }
        if sh.durability.is_stopped() {
            return Err(sh.durability.stopped().unwrap_or(Error::Closed));
        }
        let mut st = sh.state.lock();
        loop {
            if st.stopped {
                return Err(sh.durability.stopped().unwrap_or(Error::Closed));
            }
            if st.closing {
                return Err(Error::Closed);
            }
            if !st.paused
                && (st.queued_bytes == 0 || st.queued_bytes + bytes <= opts.queued_bytes_max)
            {
                break;
            }
            if !block && !st.paused {
                return Err(Error::QueueFull {
                    queued_bytes: st.queued_bytes,
                });
            }
            sh.state_cv.wait(&mut st);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let first_index = st.next_index;
        if records.is_empty() {
            // Nothing to make durable: complete once everything before it is.
            let prev = seq - 1;
            let ticket = Ticket {
                durability: sh.durability.clone(),
                seq: prev,
                first_index,
                last_index: first_index - 1,
            };
            return Ok((ticket, Vec::new()));
        }
        for r in &records {
            let payload = r.as_ref();
            let fb = frame::frame_bytes(payload.len());
            let need_new = match st.batches.back() {
                None => true,
                Some(b) => {
                    b.frames.len() >= opts.batch_records_max
                        || b.buf.len() + fb > opts.batch_bytes_max
                }
            };
            if need_new {
                let (mut buf, mut frames) = st.spare.pop().unwrap_or_default();
                buf.clear();
                frames.clear();
                let index = st.next_index;
                st.batches.push_back(Batch {
                    buf,
                    frames,
                    first_index: index,
                    last_seq: seq - 1,
                    opened: Instant::now(),
                });
            }
            let index = st.next_index;
            st.next_index += 1;
            let b = st.batches.back_mut().expect("a batch is open");
            b.frames
                .push(u32::try_from(b.buf.len()).expect("batches are below 4 GiB"));
            frame::encode_unsealed(&mut b.buf, index, payload);
        }
        st.batches.back_mut().expect("a batch is open").last_seq = seq;
        st.queued_bytes += bytes;
        let last_index = st.next_index - 1;
        let ticket = Ticket {
            durability: sh.durability.clone(),
            seq,
            first_index,
            last_index,
        };
        if claim
            && st.writer_wait == WriterWait::Idle
            && st.inflight == 0
            && !st.writing
            && sh.opts.commit_delay.is_zero()
        {
            // The writer sleeps only on an empty queue, so every queued batch is this append's.
            debug_assert_eq!(st.batches.front().map(|b| b.first_index), Some(first_index));
            let claimed: Vec<Batch> = st.batches.drain(..).collect();
            st.queued_bytes = 0;
            st.inflight = claimed.len();
            st.writing = true;
            return Ok((ticket, claimed));
        }
        let wake = match st.writer_wait {
            WriterWait::Busy => false,
            WriterWait::Idle => true,
            WriterWait::Lingering => st
                .batches
                .front()
                .is_some_and(|b| b.frames.len() >= st.linger_target),
            WriterWait::Gathering => {
                st.batches.len() > 1 || st.batches[0].buf.len() >= opts.pipeline_bytes_min
            }
        };
        if wake {
            st.writer_wait = WriterWait::Busy;
        }
        drop(st);
        if wake {
            sh.writer_cv.notify_one();
        }
        Ok((ticket, Vec::new()))
    }

    /// Index of the first readable record.
    pub fn first_index(&self) -> u64 {
        self.shared.state.lock().first_index
    }

    /// Index of the last appended record (`first_index - 1` when empty).
    pub fn last_index(&self) -> u64 {
        self.shared.state.lock().next_index - 1
    }

    /// Index of the last record known durable.
    pub fn durable_index(&self) -> u64 {
        self.shared.state.lock().durable_index
    }

    /// Whether the log has stopped after a write or fdatasync failure.
    pub fn is_stopped(&self) -> bool {
        self.shared.durability.is_stopped() || self.shared.state.lock().stopped
    }

    /// Reads the records `range` (end exclusive). Records appended but not yet written are
    /// waited for; they need not be durable yet.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<Vec<u8>>> {
        self.read_bounded(range, usize::MAX)
    }

    /// Reads records from `range.start` on, stopping once `bytes_max` payload bytes are
    /// gathered (always at least one record).
    pub fn read_bounded(&self, range: Range<u64>, bytes_max: usize) -> Result<Vec<Vec<u8>>> {
        let sh = &*self.shared;
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        {
            let mut st = sh.state.lock();
            if range.start < st.first_index || range.end > st.next_index {
                let bad = if range.start < st.first_index {
                    range.start
                } else {
                    range.end - 1
                };
                return Err(Error::OutOfRange {
                    index: bad,
                    first: st.first_index,
                    last: st.next_index - 1,
                });
            }
            while st.written_index < range.end - 1 {
                if st.stopped {
                    return Err(sh.durability.stopped().unwrap_or(Error::Closed));
                }
                sh.writer_cv.notify_one();
                sh.state_cv.wait(&mut st);
            }
        }
        let segs = sh.segs.read();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut idx = range.start;
        while idx < range.end {
            let pos = segs.partition_point(|s| s.header.first_index <= idx);
            let seg = pos.checked_sub(1).map(|p| &segs[p]);
            let Some(seg) = seg.filter(|s| idx < s.header.first_index + s.offsets.len() as u64)
            else {
                // Purged or truncated meanwhile. Bounds come from the index already held: taking
                // the state lock under the index lock would invert `truncate_suffix`'s order.
                return Err(Error::OutOfRange {
                    index: idx,
                    first: segs.first().map_or(0, |s| s.header.first_index),
                    last: segs.last().map_or(0, |s| {
                        (s.header.first_index + s.offsets.len() as u64).saturating_sub(1)
                    }),
                });
            };
            let k = (idx - seg.header.first_index) as usize;
            let in_seg =
                (range.end - seg.header.first_index).min(seg.offsets.len() as u64) as usize;
            let start = u64::from(seg.offsets[k]);
            // Read at most READ_CHUNK_BYTES at a time (but always one whole frame).
            let mut stop = k + 1;
            while stop < in_seg && u64::from(seg.offsets[stop]) - start < READ_CHUNK_BYTES {
                stop += 1;
            }
            let end = seg.offsets.get(stop).map_or(seg.end, |&o| u64::from(o));
            let mut buf = vec![0u8; usize::try_from(end - start).expect("chunk fits memory")];
            let n = seg
                .file
                .read_at(&mut buf, start)
                .map_err(Error::io("read record"))?;
            if n < buf.len() {
                return Err(Error::Corruption {
                    path: seg.path.clone(),
                    detail: format!("segment ends inside record {idx} at offset {start}"),
                });
            }
            let mut off = 0usize;
            for _ in k..stop {
                match frame::decode(&buf[off..], seg.header.salt, sh.opts.record_bytes_max) {
                    Decoded::Record {
                        index,
                        payload,
                        frame_bytes,
                    } if index == idx => {
                        bytes += payload.len();
                        out.push(payload.to_vec());
                        off += frame_bytes;
                        idx += 1;
                    }
                    other => {
                        let why = match other {
                            Decoded::Invalid(w) => w,
                            Decoded::End => "zeros where a record was written",
                            Decoded::Record { .. } => "unexpected record index",
                        };
                        return Err(Error::Corruption {
                            path: seg.path.clone(),
                            detail: format!("record {idx} at offset {}: {why}", start + off as u64),
                        });
                    }
                }
                if bytes >= bytes_max {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Waits until every queued append is written and durable, and keeps new appends out
    /// until the guard's caller unpauses.
    fn drain(&self) -> Result<MutexGuard<'_, State>> {
        let sh = &*self.shared;
        let mut st = sh.state.lock();
        st.paused = true;
        loop {
            if st.stopped {
                st.paused = false;
                sh.state_cv.notify_all();
                return Err(sh.durability.stopped().unwrap_or(Error::Closed));
            }
            if st.batches.is_empty() && st.inflight == 0 && !st.writing {
                return Ok(st);
            }
            sh.writer_cv.notify_one();
            sh.state_cv.wait(&mut st);
        }
    }

    fn resume(&self, mut st: MutexGuard<'_, State>) {
        st.paused = false;
        drop(st);
        self.shared.state_cv.notify_all();
    }

    fn fail(&self, op: &'static str, e: io::Error) -> Error {
        fail_stop(&self.shared, op, &e);
        self.shared.durability.stopped().unwrap_or(Error::Closed)
    }

    /// Removes every record with index `from` or above (a follower's log conflict), durably,
    /// before returning. The next append gets index `from`. Pending appends are made durable
    /// first; their tickets complete normally.
    pub fn truncate_suffix(&self, from: u64) -> Result<()> {
        let sh = &*self.shared;
        let _control = sh.control.lock();
        let mut st = self.drain()?;
        if from < st.first_index || from > st.next_index {
            let (first, last) = (st.first_index, st.next_index - 1);
            self.resume(st);
            return Err(Error::OutOfRange {
                index: from,
                first,
                last,
            });
        }
        if from == st.next_index {
            self.resume(st);
            return Ok(());
        }
        let mut io = sh.io.lock();
        let mut segs = sh.segs.write();
        let mut removed = false;
        while segs.len() > 1 && segs.last().expect("non-empty").header.first_index >= from {
            let seg = segs.pop().expect("non-empty");
            if let Err(e) = sh.fs.remove(&seg.path) {
                drop((segs, io, st));
                return Err(self.fail("remove segment", e));
            }
            removed = true;
        }
        if removed && let Err(e) = sh.fs.sync_dir(&sh.dir) {
            drop((segs, io, st));
            return Err(self.fail("fsync directory", e));
        }
        let seg = segs
            .last_mut()
            .expect("the first segment is never removed here");
        let keep = (from - seg.header.first_index) as usize;
        let cut = seg.offsets.get(keep).map_or(seg.end, |&o| u64::from(o));
        if let Err(e) = cut_tail(&*seg.file, cut) {
            drop((segs, io, st));
            return Err(self.fail("truncate", e));
        }
        seg.offsets.truncate(keep);
        seg.end = cut;
        *io = Io {
            file: seg.file.clone(),
            header: seg.header,
            write_off: cut,
        };
        drop(segs);
        drop(io);
        st.next_index = from;
        st.written_index = from - 1;
        st.durable_index = st.durable_index.min(from - 1);
        self.resume(st);
        Ok(())
    }

    /// Drops every record up to and including `up_to` (after a snapshot or checkpoint). Whole
    /// segments are deleted; records of a partly covered segment stay on disk and can reappear
    /// after reopening (`first_index` is segment-granular across restarts). When `up_to` is at
    /// or past the last index the log restarts empty at `up_to + 1`, durably.
    pub fn purge_prefix(&self, up_to: u64) -> Result<()> {
        let sh = &*self.shared;
        let _control = sh.control.lock();
        let st = sh.state.lock();
        if up_to < st.first_index {
            return Ok(());
        }
        let removed: Vec<Seg> = if up_to >= st.next_index - 1 {
            drop(st);
            let mut st = self.drain()?;
            let mut io = sh.io.lock();
            if let Err(e) = io.file.sync_data() {
                drop((io, st));
                return Err(self.fail("fdatasync", e));
            }
            let ready = match sh.prealloc.take() {
                Ok(r) => r,
                Err(e) => {
                    drop((io, st));
                    return Err(self.fail("create segment", e));
                }
            };
            let seq = io.header.seq + 1;
            let (seg, new_io) = match install_segment(
                &*sh.fs,
                &sh.dir,
                ready,
                seq,
                up_to + 1,
                segment::FLAG_RESTART,
            ) {
                Ok(x) => x,
                Err(e) => {
                    drop((io, st));
                    return Err(self.fail("create segment", e));
                }
            };
            *io = new_io;
            let mut segs = sh.segs.write();
            let old = std::mem::take(&mut *segs);
            segs.push(seg);
            drop(segs);
            drop(io);
            st.first_index = up_to + 1;
            st.next_index = up_to + 1;
            st.written_index = up_to;
            st.durable_index = up_to;
            self.resume(st);
            old
        } else {
            let mut st = st;
            st.first_index = up_to + 1;
            drop(st);
            let mut segs = sh.segs.write();
            let mut n = 0;
            while n + 1 < segs.len() && segs[n + 1].header.first_index <= up_to + 1 {
                n += 1;
            }
            segs.drain(..n).collect()
        };
        if removed.is_empty() {
            return Ok(());
        }
        fail::fail_point!("wal::purge", |_| Err(Error::io("remove purged segment")(
            injected("wal::purge")
        )));
        for seg in &removed {
            sh.fs
                .remove(&seg.path)
                .map_err(Error::io("remove purged segment"))?;
        }
        sh.fs
            .sync_dir(&sh.dir)
            .map_err(Error::io("fsync directory"))?;
        Ok(())
    }

    /// Stops the threads after writing (and syncing) everything queued.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let mut st = self.shared.state.lock();
            st.closing = true;
        }
        self.shared.writer_cv.notify_all();
        self.shared.syncer_cv.notify_all();
        self.shared.state_cv.notify_all();
        if let Some(t) = self.writer.take() {
            let _ = t.join();
        }
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
        self.shared.durability.close();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn fail_stop(sh: &Shared, op: &'static str, e: &io::Error) {
    tracing::error!(op, error = %e, "wal: io failure, refusing all further appends");
    // Durability first, so whoever sees `stopped` in the state also finds the reason.
    sh.durability.stop(op, e.to_string());
    {
        let mut st = sh.state.lock();
        st.stopped = true;
    }
    sh.writer_cv.notify_all();
    sh.syncer_cv.notify_all();
    sh.state_cv.notify_all();
}

/// Lets short timed waits (the batch linger) wake on time instead of 50 µs late.
fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

fn writer_loop(sh: &Shared) {
    tighten_timer_slack();
    let depth = sh.opts.pipeline_depth;
    loop {
        let batch = {
            let mut st = sh.state.lock();
            loop {
                if st.stopped {
                    st.writer_done = true;
                    sh.syncer_cv.notify_all();
                    return;
                }
                let draining = st.closing || st.paused;
                // While a sync is in flight, only a batch worth overlapping with it is written
                // early; small ones keep growing until the sync returns (one wave, one sync).
                let worth_pipelining = |st: &State| {
                    st.batches.len() > 1
                        || st.batches[0].buf.len() >= sh.opts.pipeline_bytes_min
                        || draining
                };
                // An appender writing a batch it claimed (`append_durable`) has the file: the
                // next batch waits for it, so batches land in index order.
                if !st.batches.is_empty()
                    && !st.writing
                    && st.inflight < depth
                    && (st.inflight == 0 || worth_pipelining(&st))
                {
                    let linger = sh.opts.batch_linger;
                    if !linger.is_zero() && !draining && st.inflight == 0 && st.batches.len() == 1 {
                        let front = &st.batches[0];
                        let target = st.linger_target.min(sh.opts.batch_records_max);
                        let waited = st.completed_at.map_or(linger, |t| t.elapsed());
                        if front.frames.len() < target
                            && front.buf.len() < sh.opts.batch_bytes_max
                            && waited < linger
                        {
                            st.writer_wait = WriterWait::Lingering;
                            sh.writer_cv.wait_for(&mut st, linger - waited);
                            st.writer_wait = WriterWait::Busy;
                            continue;
                        }
                    }
                    let delay = sh.opts.commit_delay;
                    if !delay.is_zero() && !st.closing && !st.paused && st.batches.len() == 1 {
                        let front = &st.batches[0];
                        let full = front.frames.len() >= sh.opts.batch_records_max
                            || front.buf.len() >= sh.opts.batch_bytes_max;
                        let waited = front.opened.elapsed();
                        if !full && waited < delay {
                            sh.writer_cv.wait_for(&mut st, delay - waited);
                            continue;
                        }
                    }
                    break;
                }
                if st.closing && st.batches.is_empty() && !st.writing {
                    st.writer_done = true;
                    sh.syncer_cv.notify_all();
                    return;
                }
                st.writer_wait = if st.batches.is_empty() {
                    WriterWait::Idle
                } else if st.inflight < depth && !st.writing {
                    WriterWait::Gathering
                } else {
                    WriterWait::Busy
                };
                sh.writer_cv.wait(&mut st);
                st.writer_wait = WriterWait::Busy;
            }
            let b = st.batches.pop_front().expect("checked non-empty");
            st.queued_bytes -= b.buf.len();
            // With nothing syncing and a batch too small to be worth overlapping, the writer
            // syncs it itself (one linked write+fdatasync, no hand-off to the syncer).
            let inline =
                depth == 1 || (st.inflight == 0 && b.buf.len() < sh.opts.pipeline_bytes_min);
            st.inflight += 1;
            st.writing = true;
            sh.state_cv.notify_all();
            (b, inline)
        };
        let (batch, inline) = batch;
        match write_batch(sh, batch, inline) {
            Ok((job, spare)) => {
                let inline = job.file.is_none();
                let (seq, last) = (job.seq, job.last_index);
                {
                    let mut st = sh.state.lock();
                    st.writing = false;
                    st.written_index = job.last_index;
                    if st.spare.len() < 4 {
                        st.spare.push(spare);
                    }
                    if !inline {
                        st.sync_queue.push(job);
                    }
                }
                sh.state_cv.notify_all();
                if inline {
                    complete(sh, 1, seq, last);
                } else {
                    sh.syncer_cv.notify_one();
                }
            }
            Err((op, e)) => {
                fail_stop(sh, op, &e);
                let mut st = sh.state.lock();
                st.writing = false;
                st.writer_done = true;
                sh.syncer_cv.notify_all();
                return;
            }
        }
    }
}

type IoFailure = (&'static str, io::Error);

/// The error a failpoint injects in place of a real IO failure.
#[cfg(feature = "failpoints")]
fn injected(at: &str) -> io::Error {
    io::Error::other(format!("injected failure at {at}"))
}

/// A batch's buffers, handed back for reuse.
type BatchBuffers = (Vec<u8>, Vec<u32>);

/// Writes one batch, rotating segments as needed. With `inline_sync` the last write is linked
/// with its fdatasync and the job comes back already durable.
fn write_batch(
    sh: &Shared,
    mut batch: Batch,
    inline_sync: bool,
) -> Result<(SyncJob, BatchBuffers), IoFailure> {
    let n = batch.frames.len();
    assert!(n > 0, "empty batches are never queued");
    let mut io = sh.io.lock();
    let mut pos = 0;
    while pos < n {
        let start = batch.frames[pos] as usize;
        let room = sh.opts.segment_bytes.saturating_sub(io.write_off);
        let mut k = pos;
        while k < n && (batch.frame_end(k) - start) as u64 <= room {
            k += 1;
        }
        if k == pos {
            rotate(sh, &mut io, batch.first_index + pos as u64)?;
            continue;
        }
        let end = batch.frame_end(k - 1);
        for f in pos..k {
            let (a, b) = (batch.frames[f] as usize, batch.frame_end(f));
            frame::seal(&mut batch.buf[a..b], io.header.salt);
        }
        let chunk = &batch.buf[start..end];
        fail::fail_point!("wal::write", |_| Err(("write", injected("wal::write"))));
        if inline_sync && k == n {
            fail::fail_point!("wal::fdatasync", |_| Err((
                "write+fdatasync",
                injected("wal::fdatasync")
            )));
            sh.counters
                .timed_sync(|| io.file.write_and_sync(chunk, io.write_off))
                .map_err(|e| ("write+fdatasync", e))?;
            fail::fail_point!("wal::after_fdatasync", |_| Err((
                "write+fdatasync",
                injected("wal::after_fdatasync")
            )));
        } else {
            io.file
                .write_at(chunk, io.write_off)
                .map_err(|e| ("write", e))?;
        }
        {
            let mut segs = sh.segs.write();
            let seg = segs.last_mut().expect("the current segment is indexed");
            assert_eq!(seg.header.seq, io.header.seq, "writer and index agree");
            assert_eq!(
                seg.header.first_index + seg.offsets.len() as u64,
                batch.first_index + pos as u64,
                "batches are written in index order"
            );
            for f in pos..k {
                let off = io.write_off + (batch.frames[f] as usize - start) as u64;
                seg.offsets
                    .push(u32::try_from(off).expect("segments are below 4 GiB"));
            }
            seg.end = io.write_off + (end - start) as u64;
        }
        io.write_off += (end - start) as u64;
        pos = k;
    }
    // Written, not yet durable: a failure here must leave nothing acknowledged.
    fail::fail_point!("wal::after_write", |_| Err((
        "write",
        injected("wal::after_write")
    )));
    let c = &sh.counters;
    c.records.fetch_add(n as u64, Ordering::Relaxed);
    c.bytes.fetch_add(batch.buf.len() as u64, Ordering::Relaxed);
    c.batches.fetch_add(1, Ordering::Relaxed);
    let job = SyncJob {
        file: (!inline_sync).then(|| io.file.clone()),
        seq: batch.last_seq,
        last_index: batch.first_index + n as u64 - 1,
    };
    Ok((job, (batch.buf, batch.frames)))
}

/// Closes the current segment (durably) and opens the next one at `first_index`.
fn rotate(sh: &Shared, io: &mut Io, first_index: u64) -> Result<(), IoFailure> {
    fail::fail_point!("wal::rotate", |_| Err((
        "create segment",
        injected("wal::rotate")
    )));
    sh.counters
        .timed_sync(|| io.file.sync_data())
        .map_err(|e| ("fdatasync", e))?;
    let ready = sh.prealloc.take().map_err(|e| ("create segment", e))?;
    let (seg, new_io) = install_segment(&*sh.fs, &sh.dir, ready, io.header.seq + 1, first_index, 0)
        .map_err(|e| ("create segment", e))?;
    sh.segs.write().push(seg);
    *io = new_io;
    Ok(())
}

fn syncer_loop(sh: &Shared) {
    loop {
        let jobs = {
            let mut st = sh.state.lock();
            loop {
                if st.stopped {
                    return;
                }
                if !st.sync_queue.is_empty() {
                    break;
                }
                if st.writer_done {
                    return;
                }
                sh.syncer_cv.wait(&mut st);
            }
            std::mem::take(&mut st.sync_queue)
        };
        let mut files: Vec<&Arc<dyn LogFile>> = Vec::new();
        for f in jobs.iter().filter_map(|j| j.file.as_ref()) {
            if !files
                .iter()
                .any(|g| std::ptr::addr_eq(Arc::as_ptr(g), Arc::as_ptr(f)))
            {
                files.push(f);
            }
        }
        fail::fail_point!("wal::fdatasync", |_| fail_stop(
            sh,
            "fdatasync",
            &injected("wal::fdatasync")
        ));
        for f in files {
            if let Err(e) = sh.counters.timed_sync(|| f.sync_data()) {
                fail_stop(sh, "fdatasync", &e);
                return;
            }
        }
        // Durable, not yet acknowledged.
        fail::fail_point!("wal::after_fdatasync", |_| fail_stop(
            sh,
            "fdatasync",
            &injected("wal::after_fdatasync")
        ));
        let last = jobs.last().expect("non-empty");
        complete(sh, jobs.len(), last.seq, last.last_index);
    }
}

/// Writes batches that an appender claimed from an idle log (see [`Wal::append_durable`]), in
/// the calling thread: each one written, the last linked with its fdatasync (a rotation in
/// between syncs the segment it closes), then all marked durable at once.
fn write_claimed(sh: &Shared, claimed: Vec<Batch>) -> Result<()> {
    let n = claimed.len();
    let mut done = None;
    let mut spares = Vec::with_capacity(n);
    for (i, batch) in claimed.into_iter().enumerate() {
        match write_batch(sh, batch, i + 1 == n) {
            Ok((job, spare)) => {
                done = Some((job.seq, job.last_index));
                spares.push(spare);
            }
            Err((op, e)) => {
                fail_stop(sh, op, &e);
                sh.state.lock().writing = false;
                sh.state_cv.notify_all();
                return Err(sh.durability.stopped().unwrap_or(Error::Closed));
            }
        }
    }
    let (seq, last) = done.expect("claimed batches are never empty");
    {
        let mut st = sh.state.lock();
        st.writing = false;
        st.written_index = last;
        for spare in spares {
            if st.spare.len() < 4 {
                st.spare.push(spare);
            }
        }
    }
    complete(sh, n, seq, last);
    Ok(())
}

/// Marks `batches` batches durable through append `seq` and index `last_index`.
fn complete(sh: &Shared, batches: usize, seq: u64, last_index: u64) {
    let wake_writer = {
        let mut st = sh.state.lock();
        if st.stopped {
            return;
        }
        st.inflight -= batches;
        // The group just made durable plus everything still waiting: the concurrency the next
        // batch can expect once the woken appenders come back.
        let completed = last_index.saturating_sub(st.durable_index);
        let waiting = (st.next_index - 1).saturating_sub(last_index);
        st.linger_target = usize::try_from(completed + waiting).unwrap_or(usize::MAX);
        st.durable_index = st.durable_index.max(last_index);
        st.completed_at = Some(Instant::now());
        // A writer asleep on an empty queue has nothing to resume; the next append wakes it.
        st.writer_wait != WriterWait::Idle
    };
    sh.durability.advance(seq);
    if wake_writer {
        sh.writer_cv.notify_one();
    }
    sh.state_cv.notify_all();
}
