//! Cluster-wide slots of a task's `concurrency`: a sorted set per routine,
//! each member a holder, its score the time its hold lapses. A holder
//! renews its hold while its body runs; a holder that dies stops renewing,
//! and its slot is free once its hold lapses.

use std::time::Duration;

use super::{now_millis, Broker, BrokerError};

impl Broker {
    /// The sorted set of the holders of `task`'s slots.
    pub(crate) fn slots_key(&self, task: &str, version: &str) -> String {
        format!("{}:slots:{task}:{version}", self.namespace)
    }

    /// Takes one of `limit` slots in `slots` for `holder`, for `hold`
    /// unless renewed: false if all are held. Lapsed holds are dropped
    /// first.
    pub(crate) async fn take_slot(
        &self,
        slots: &str,
        holder: &str,
        limit: u32,
        hold: Duration,
    ) -> Result<bool, BrokerError> {
        const TAKE: &str = r"
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
            if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
                return 1
            end
            if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
                redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
                return 1
            end
            return 0
        ";
        let now = now_millis();
        let mut take = redis::cmd("EVAL");
        take.arg(TAKE)
            .arg(1)
            .arg(slots)
            .arg(now)
            .arg(now + hold.as_millis() as u64)
            .arg(holder)
            .arg(limit);
        let taken: i64 = self.query("EVAL take slot", &take).await?;
        Ok(taken == 1)
    }

    /// Extends `holder`'s hold by `hold` from now; false if it had lapsed
    /// (and another holder may have its slot).
    pub(crate) async fn renew_slot(
        &self,
        slots: &str,
        holder: &str,
        hold: Duration,
    ) -> Result<bool, BrokerError> {
        let mut renew = redis::cmd("ZADD");
        renew
            .arg(slots)
            .arg("XX")
            .arg("CH")
            .arg(now_millis() + hold.as_millis() as u64)
            .arg(holder);
        let changed: i64 = self.query("ZADD XX", &renew).await?;
        Ok(changed == 1)
    }

    /// Gives `holder`'s slot back, in the background.
    pub(crate) fn release_slot(&self, slots: String, holder: String) {
        let mut connection = self.connection();
        tokio::spawn(async move {
            let _: Result<(), _> = redis::cmd("ZREM")
                .arg(slots)
                .arg(holder)
                .query_async(&mut connection)
                .await;
        });
    }
}
