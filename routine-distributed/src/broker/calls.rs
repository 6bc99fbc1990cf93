//! The caller's side of the broker: claiming a call cluster-wide, sending
//! its request, and reading the replies.

use std::time::Duration;

use super::messages::{Notice, Part, Request};
use super::tail::StreamTail;
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
                    'notify_start', ARGV[11], 'traceparent', ARGV[12])
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
            .arg(if request.notify_start { "1" } else { "0" })
            .arg(request.traceparent.as_deref().unwrap_or_default());
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
    ) -> Result<StreamTail<Notice>, BrokerError> {
        self.tail(stream.to_owned(), block, Notice::parse).await
    }

    /// Deletes a stream (a caller's reply stream, when it goes).
    pub(crate) async fn drop_stream(&self, stream: &str) {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(stream)
            .query_async(&mut self.connection())
            .await;
    }
}
