//! How the units of a gang pass messages: an [`Inbox`] holds what arrived
//! for the units of this process; a [`Mailbox`] sends. In one process the
//! mailbox is the inbox itself; on workers, the distributed crate's mailbox
//! posts to a unit elsewhere through the broker, and its reader delivers
//! what arrives into the inbox of the worker's units.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Messages sent and not yet received: by sender, receiver and key, each
/// queue in the order sent.
type Mail = HashMap<(usize, usize, String), VecDeque<Vec<u8>>>;

/// The messages that arrived for the units of one gang in this process, in
/// the order each sender sent them, and which senders have returned (they
/// send no more: a unit waiting on one learns it at once).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use routine_core::unit::Inbox;
///
/// let inbox = Inbox::new(2);
/// inbox.deliver(0, 1, "greeting", b"hello".to_vec());
/// assert_eq!(inbox.take(0, 1, "greeting").await.unwrap(), b"hello");
/// inbox.returned(0);
/// assert!(inbox.take(0, 1, "greeting").await.is_err(), "unit 0 sends no more");
/// # }
/// ```
pub struct Inbox {
    mail: Mutex<Mail>,
    /// Woken when mail for the unit of that rank arrives, or a unit returns.
    arrived: Vec<Notify>,
    /// The units that have returned.
    ended: Vec<AtomicBool>,
}

/// The sender returned without sending the message a unit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReturned;

impl Inbox {
    /// The inbox of a gang of `count` units.
    pub fn new(count: usize) -> Inbox {
        Inbox {
            mail: Mutex::default(),
            arrived: (0..count).map(|_| Notify::new()).collect(),
            ended: (0..count).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    fn mail(&self) -> MutexGuard<'_, Mail> {
        self.mail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `bytes`, sent by the unit of rank `from` under `key`, arrives for
    /// the unit of rank `to`.
    pub fn deliver(&self, from: usize, to: usize, key: &str, bytes: Vec<u8>) {
        self.mail()
            .entry((from, to, key.to_owned()))
            .or_default()
            .push_back(bytes);
        if let Some(arrived) = self.arrived.get(to) {
            arrived.notify_waiters();
        }
    }

    /// The unit of rank `rank` has returned: units waiting for its
    /// messages stop waiting once its mail is read.
    pub fn returned(&self, rank: usize) {
        if let Some(ended) = self.ended.get(rank) {
            ended.store(true, Ordering::Release);
        }
        for arrived in &self.arrived {
            arrived.notify_waiters();
        }
    }

    /// The next message the unit of rank `from` sent the unit of rank `to`
    /// under `key`, waiting for it; `Err` once `from` has returned without
    /// sending it.
    pub async fn take(&self, from: usize, to: usize, key: &str) -> Result<Vec<u8>, SenderReturned> {
        let slot = (from, to, key.to_owned());
        loop {
            // Registered before the mail is looked at: a message delivered
            // in between wakes it.
            let arrived = self.arrived[to].notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(bytes) = self.mail().get_mut(&slot).and_then(VecDeque::pop_front) {
                return Ok(bytes);
            }
            if self.ended[from].load(Ordering::Acquire) {
                return Err(SenderReturned);
            }
            arrived.await;
        }
    }
}

/// The future of [`Mailbox::post`] and [`Mailbox::returned`].
pub type Posting<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Carries a gang's messages between its units, wherever they run; see
/// [`Inbox`]. A unit panics (ending its gang's attempt) when its mailbox
/// fails, with the mailbox's message.
pub trait Mailbox: Send + Sync + 'static {
    /// Sends `bytes` from the unit of rank `from` to the unit of rank `to`,
    /// under `key`.
    fn post<'a>(&'a self, from: usize, to: usize, key: &'a str, bytes: Vec<u8>) -> Posting<'a>;

    /// Where the messages for this process's units arrive.
    fn inbox(&self) -> &Inbox;

    /// The unit of rank `rank` has returned: tells the units that may wait
    /// for its messages.
    fn returned(&self, rank: usize) -> Posting<'_>;
}

/// The mailbox of a gang whose units all run in this process: the inbox
/// itself.
pub(crate) struct InProcess(pub(crate) Inbox);

impl Mailbox for InProcess {
    fn post<'a>(&'a self, from: usize, to: usize, key: &'a str, bytes: Vec<u8>) -> Posting<'a> {
        self.0.deliver(from, to, key, bytes);
        Box::pin(std::future::ready(Ok(())))
    }

    fn inbox(&self) -> &Inbox {
        &self.0
    }

    fn returned(&self, rank: usize) -> Posting<'_> {
        self.0.returned(rank);
        Box::pin(std::future::ready(Ok(())))
    }
}
