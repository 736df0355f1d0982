//! One connection's notifications taken from its queue and not sent yet, in the order they
//! came. A reply goes out after every notification whose change it reflects and before every
//! one whose change it does not: a read's reply reflects its view, and a change fired while
//! the read was answered is told after it. ZooKeeper's clients register a read's watcher when
//! its reply comes, so a notification sent before that reply would find no watcher and be
//! lost to the client.
//!
//! It never holds more than [`QUEUED_PER_CONNECTION_MAX`] notifications: past that the
//! connection is cut off, as when its queue overflows.

use std::collections::VecDeque;

use tokio::io::AsyncWrite;
use tokio::sync::mpsc::error::TryRecvError;

use super::watches::{Note, Notifications, QUEUED_PER_CONNECTION_MAX, SESSION_ENDED};

/// What taking a connection's queue found besides notifications.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// The session ended.
    pub ended: bool,
    /// The connection was cut off: no more notifications will be queued for it, or it
    /// holds as many as it may.
    pub cut: bool,
}

/// Notifications waiting to be sent.
#[derive(Debug, Default)]
pub struct Outbox {
    held: VecDeque<Note>,
}

impl Outbox {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds `note` behind the others (or marks the session ended).
    pub fn hold(&mut self, note: Note) -> Taken {
        if note.frame == SESSION_ENDED {
            return Taken {
                ended: true,
                cut: false,
            };
        }
        if self.held.len() >= QUEUED_PER_CONNECTION_MAX {
            return Taken {
                ended: false,
                cut: true,
            };
        }
        self.held.push_back(note);
        Taken::default()
    }

    /// Holds everything queued for the connection now.
    pub fn take(&mut self, notes: &mut Notifications) -> Taken {
        let mut taken = Taken::default();
        loop {
            match notes.try_recv() {
                Ok(note) => {
                    let t = self.hold(note);
                    taken.ended |= t.ended;
                    taken.cut |= t.cut;
                    if t.cut {
                        return taken;
                    }
                }
                Err(TryRecvError::Empty) => return taken,
                Err(TryRecvError::Disconnected) => {
                    taken.cut = true;
                    return taken;
                }
            }
        }
    }

    /// Sends, in order, every held notification of a revision up to `revision`; the others
    /// stay. Answers how many went.
    pub async fn send_through<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        revision: i64,
    ) -> Result<u64, super::conn::ConnError> {
        let mut sent = 0;
        let mut kept = VecDeque::new();
        while let Some(note) = self.held.pop_front() {
            if note.revision <= revision {
                super::conn::send(w, &[&note.frame]).await?;
                sent += 1;
            } else {
                kept.push_back(note);
            }
        }
        self.held = kept;
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(revision: i64, path: &str) -> Note {
        Note {
            revision,
            frame: path.as_bytes().to_vec(),
        }
    }

    /// The frames `out` holds, each after its four-byte length.
    fn frames(out: &[u8]) -> Vec<String> {
        let mut at = 0;
        let mut seen = Vec::new();
        while at < out.len() {
            let len = u32::from_be_bytes(out[at..at + 4].try_into().unwrap()) as usize;
            seen.push(String::from_utf8_lossy(&out[at + 4..at + 4 + len]).into_owned());
            at += 4 + len;
        }
        seen
    }

    #[tokio::test]
    async fn only_what_a_reply_reflects_goes_before_it_and_order_holds() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        for (rev, path) in [(5, "/a"), (9, "/b"), (4, "/c"), (12, "/d")] {
            tx.try_send(note(rev, path)).unwrap();
        }
        let mut o = Outbox::default();
        assert_eq!(o.take(&mut rx), Taken::default());
        let mut out = Vec::new();
        assert_eq!(o.send_through(&mut out, 5).await.unwrap(), 2);
        assert_eq!(frames(&out), ["/a", "/c"]);
        out.clear();
        assert_eq!(o.send_through(&mut out, i64::MAX).await.unwrap(), 2);
        assert_eq!(frames(&out), ["/b", "/d"]);
        assert!(o.is_empty());
        tx.try_send(Note {
            revision: 13,
            frame: SESSION_ENDED.to_vec(),
        })
        .unwrap();
        drop(tx);
        let t = o.take(&mut rx);
        assert!(t.ended && t.cut && o.is_empty());
    }

    #[test]
    fn it_holds_no_more_than_a_queue_may() {
        let mut o = Outbox::default();
        for i in 0..QUEUED_PER_CONNECTION_MAX {
            assert_eq!(o.hold(note(i as i64, "/x")), Taken::default());
        }
        assert!(o.hold(note(0, "/x")).cut);
    }
}
