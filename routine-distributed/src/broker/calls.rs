//! The caller's side of the broker: claiming a call cluster-wide, sending
//! its request, and reading the replies.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;

use super::messages::{entries, Notice, Part, Request};
use super::{Broker, BrokerError};

impl Broker {
    /// Tells the workers that the caller of `request` gave up on it: the
    /// one running it drops the routine. Once, without retries: a worker
    /// that misses it runs the routine to its end.
    pub(crate) async fn cancel(&self, request: &str) -> Result<(), BrokerError> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.cancel_channel()).arg(request);
        let _: i64 = publish
            .query_async(&mut self.connection())
            .await
            .map_err(super::command("PUBLISH"))?;
        Ok(())
    }

    /// Claims the call cluster-wide (`inflight` set if absent, expiring
    /// after `ttl_ms`) and, if the claim is ours, sends the request: one
    /// round trip. False if another caller holds the claim.
    pub(crate) async fn claim_and_send(
        &self,
        inflight: &str,
        ttl_ms: u64,
        request: &Request,
    ) -> Result<bool, BrokerError> {
        // A retry after a lost reply finds its own claim: that request was
        // sent already.
        const CLAIM_AND_SEND: &str = r"
            if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
                return redis.call('XADD', KEYS[2], '*', 'request', ARGV[1], 'key', ARGV[3],
                    'task', ARGV[4], 'version', ARGV[5], 'args', ARGV[6], 'reply', ARGV[7],
                    'run', ARGV[8], 'parent', ARGV[9], 'args_layout', ARGV[10],
                    'notify_start', ARGV[11])
            end
            if redis.call('GET', KEYS[1]) == ARGV[1] then
                return 'sent before'
            end
            return false";
        let (inline, layout) = Part::layout(&request.arguments);
        let mut eval = redis::cmd("EVAL");
        eval.arg(CLAIM_AND_SEND)
            .arg(2)
            .arg(inflight)
            .arg(self.work_stream(&request.task, &request.version))
            .arg(&request.request)
            .arg(ttl_ms)
            .arg(request.key.to_hex())
            .arg(&request.task)
            .arg(&request.version)
            .arg(&inline[..])
            .arg(&request.reply_to)
            .arg(request.run.map(|r| r.to_string()).unwrap_or_default())
            .arg(request.parent.map(|k| k.to_hex()).unwrap_or_default())
            .arg(layout)
            .arg(if request.notify_start { "1" } else { "0" });
        let sent: Option<String> = self.query("EVAL claim-and-send", &eval).await?;
        Ok(sent.is_some())
    }

    /// Whether a claim on a call is still held (its call not landed).
    pub(crate) async fn claim_held(&self, inflight: &str) -> Result<bool, BrokerError> {
        self.query("EXISTS", redis::cmd("EXISTS").arg(inflight))
            .await
    }

    /// Extends a claim while its call is alive: `Some(false)` when the
    /// claim is gone (a broker that restarted without its data lost it,
    /// and likely the request too), `None` when the broker did not answer
    /// (left to the next renewal: the claim outlives several).
    pub(crate) async fn renew_claim(&self, inflight: &str, ttl_ms: u64) -> Option<bool> {
        redis::cmd("PEXPIRE")
            .arg(inflight)
            .arg(ttl_ms)
            .query_async(&mut self.connection())
            .await
            .ok()
    }

    /// Drops a claim, off the caller's path: the result is already stored,
    /// and an abandoned claim expires all the same.
    pub(crate) fn release_claim(&self, inflight: String) {
        let mut connection = self.connection();
        tokio::spawn(async move {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(inflight)
                .query_async(&mut connection)
                .await;
        });
    }

    /// A reader of the reply stream `stream`, on a connection of its own.
    pub(crate) async fn reply_reader(
        &self,
        stream: &str,
        block: Duration,
    ) -> Result<ReplyReader, BrokerError> {
        Ok(ReplyReader {
            connection: self.blocking_connection(block).await?,
            broker: self.clone(),
            stream: stream.to_owned(),
            block,
            last_id: "0-0".to_owned(),
        })
    }

    /// Deletes a stream (a caller's reply stream, when it goes).
    pub(crate) async fn drop_stream(&self, stream: &str) {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(stream)
            .query_async(&mut self.connection())
            .await;
    }
}

/// Reads one engine's reply stream, from where it last read.
pub(crate) struct ReplyReader {
    connection: MultiplexedConnection,
    broker: Broker,
    stream: String,
    block: Duration,
    last_id: String,
}

impl ReplyReader {
    /// The notices that arrived, waiting up to the reader's block time;
    /// `None` for an entry that is not one. Read entries are deleted after
    /// they are handed over.
    pub(crate) async fn read(&mut self) -> Result<Vec<(String, Option<Notice>)>, BrokerError> {
        let read: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last_id)
            .query_async(&mut self.connection)
            .await
            .map_err(super::command("XREAD"))?;
        let replies: Vec<(String, Option<Notice>)> = entries(read)
            .into_iter()
            .map(|(_, entry)| {
                let reply = Notice::parse(&entry);
                (entry.id, reply)
            })
            .collect();
        if let Some((last, _)) = replies.last() {
            self.last_id = last.clone();
        }
        Ok(replies)
    }

    /// Deletes entries already handed over: off the waiting calls' path.
    pub(crate) async fn tidy(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let _: Result<(), _> = redis::cmd("XDEL")
            .arg(&self.stream)
            .arg(ids)
            .query_async(&mut self.broker.connection())
            .await;
    }
}
