//! A connection's requests in flight, answered in the order they came. Writes go to the log
//! as they arrive, so a session's writes share commits with each other; every other request
//! runs once all before it are answered, so a read sees the session's earlier writes, and a
//! write behind a read or an auth waits for it (and carries the identities the auth added).
//!
//! Writes enter the log in the order they came: only a run of writes at the front is ever
//! submitted, one after another, by the connection's own task and never from a future that
//! may be dropped half-way. A write that never reached the log for want of a leader is
//! submitted again only when no later write went behind it; otherwise the connection closes
//! (the client learns the outcome is unknown), as a ZooKeeper follower closes its clients'
//! connections when it loses its leader. Nothing is proposed but what the client asked.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use super::acl::AuthId;
use super::codes::op;
use super::conn::ConnError;
use super::records::RequestHeader;
use super::request::{self, Client, Fatal, Reply};
use super::session::{self, ZkContext};
use super::txn::{ZkAnswer, ZkDone};
use crate::member::error::Error;
use crate::member::proposer::Failed;

type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a request is.
enum State {
    /// Not started: a write behind a request that is not, or anything else behind others.
    Waiting,
    /// A write in the log's hands.
    Submitted(Pending<Result<ZkAnswer, Failed>>),
    /// Anything else, running at the front.
    Running(Pending<Result<(Reply, Vec<AuthId>), Fatal>>),
    /// closeSession, running at the front.
    Closing(Pending<Result<ZkAnswer, Error>>),
}

struct Item {
    header: RequestHeader,
    body: Vec<u8>,
    /// Its body's length, counted in the pipeline's bytes.
    size: usize,
    write: bool,
    arrived: Instant,
    state: State,
}

/// What the front request came to.
#[derive(Debug)]
pub enum Done {
    /// Answer `xid` with `reply`.
    Answered {
        /// The request's xid.
        xid: i32,
        /// Its reply.
        reply: Reply,
    },
    /// The session is closed: answer `xid` at `zxid`, then close the connection.
    Closed {
        /// closeSession's xid.
        xid: i32,
        /// The revision that closed it.
        zxid: i64,
    },
    /// The front write never reached the log and will be submitted again.
    Again,
}

/// One connection's requests in flight.
pub struct Pipeline {
    ctx: Arc<ZkContext>,
    items: VecDeque<Item>,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
}

impl Pipeline {
    /// An empty pipeline holding at most `count_max` requests and (past the first)
    /// `bytes_max` bytes of them.
    pub fn new(ctx: Arc<ZkContext>, count_max: usize, bytes_max: usize) -> Pipeline {
        assert!(count_max > 0);
        Pipeline {
            ctx,
            items: VecDeque::new(),
            bytes: 0,
            count_max,
            bytes_max,
        }
    }

    /// Whether no request is in flight.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the client asked to close its session.
    pub fn closing(&self) -> bool {
        self.items
            .iter()
            .any(|i| i.header.kind == op::CLOSE_SESSION)
    }

    /// Whether it takes no more requests until the front one is answered.
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.count_max || self.bytes >= self.bytes_max
    }

    /// Takes a request of `client`, behind every other; [`Pipeline::submit`] starts it if it
    /// is a write the client may make.
    pub fn push(&mut self, client: &Client, header: RequestHeader, body: Vec<u8>) {
        // Writes refused before the log (read-only sessions, no room for new data) are
        // answered by `request::handle` in turn.
        let write = !client.read_only
            && request::is_write(header.kind, &body)
            && (!request::adds_data(header.kind, &body) || (self.ctx.may_add_data)());
        self.bytes += body.len();
        self.items.push_back(Item {
            header,
            size: body.len(),
            body,
            write,
            arrived: Instant::now(),
            state: State::Waiting,
        });
    }

    /// Hands to the log, in order, the writes that have only submitted writes ahead of them.
    pub async fn submit(&mut self, client: &Client) -> Result<(), ConnError> {
        for item in self.items.iter_mut() {
            match item.state {
                State::Submitted(_) => continue,
                State::Waiting if item.write => {}
                State::Waiting | State::Running(_) | State::Closing(_) => break,
            }
            let t = request::write_txn(client, item.header.kind, &item.body);
            let deadline = item.arrived + self.ctx.proposer.request_timeout();
            let ticket = session::submit(&self.ctx, &t, deadline).await?;
            let ctx = Arc::clone(&self.ctx);
            item.state =
                State::Submitted(Box::pin(async move { session::answer(&ctx, ticket).await }));
        }
        Ok(())
    }

    /// What the front request comes to (there must be one). Safe to drop and call again:
    /// the request's progress stays here.
    pub async fn next(&mut self, client: &mut Client) -> Result<Done, ConnError> {
        let front = self.items.front_mut().expect("a request in flight");
        if matches!(front.state, State::Waiting) {
            debug_assert!(!front.write, "writes at the front are submitted first");
            let ctx = Arc::clone(&self.ctx);
            front.state = if front.header.kind == op::CLOSE_SESSION && client.read_only {
                // A read-only session was never recorded: closing it is closing the connection.
                let zxid = ctx.core.mvcc.snapshot().revision().unwrap_or(0);
                State::Closing(Box::pin(async move {
                    Ok(ZkAnswer {
                        result: Ok(ZkDone::Done),
                        zxid,
                    })
                }))
            } else if front.header.kind == op::CLOSE_SESSION {
                let session = client.session;
                State::Closing(Box::pin(async move { session::close(&ctx, session).await }))
            } else {
                let (header, body) = (front.header.clone(), std::mem::take(&mut front.body));
                let mut c = client.clone();
                State::Running(Box::pin(async move {
                    let reply = request::handle(&ctx, &mut c, &header, &body).await?;
                    Ok((reply, c.ids))
                }))
            };
        }
        let xid = front.header.xid;
        let done = match &mut front.state {
            State::Submitted(answer) => match answer.await {
                Ok(done) => Done::Answered {
                    xid,
                    reply: request::written(front.header.kind, done),
                },
                Err(f) => {
                    let deadline = front.arrived + self.ctx.proposer.request_timeout();
                    let alone = !matches!(
                        self.items.get(1).map(|i| &i.state),
                        Some(State::Submitted(_))
                    );
                    if !(alone && session::again(&self.ctx, &f, deadline)) {
                        return Err(ConnError::Member(f.error));
                    }
                    tracing::debug!(error = %f.error, "a ZooKeeper write goes again");
                    self.items[0].state = State::Waiting;
                    return Ok(Done::Again);
                }
            },
            State::Running(run) => {
                let (reply, ids) = run.await?;
                client.ids = ids;
                Done::Answered { xid, reply }
            }
            State::Closing(close) => Done::Closed {
                xid,
                zxid: close.await?.zxid,
            },
            State::Waiting => unreachable!("started above"),
        };
        let item = self.items.pop_front().expect("the front request");
        self.bytes -= item.size;
        Ok(done)
    }
}
