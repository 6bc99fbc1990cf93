//! The worker's side of the broker: joining the work streams' consumer
//! group, reading and claiming requests, answering and acknowledging them,
//! dead-lettering the ones that keep killing workers, and the heartbeat.

use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};

use super::messages::{entries, Reply, Request};
use super::{command, now_millis, Broker, BrokerError, WorkerStatus, GROUP};

/// A request as a worker received it from a work stream.
pub(crate) struct Delivery {
    /// The work stream it came from.
    pub(crate) stream: String,
    /// Its entry id there.
    pub(crate) id: String,
    /// The request; `None` if the entry is not one (dropped unanswered).
    pub(crate) request: Option<Request>,
}

impl Delivery {
    fn of(stream: String, entry: redis::streams::StreamId) -> Delivery {
        Delivery {
            request: Request::parse(&entry),
            stream,
            id: entry.id,
        }
    }
}

/// What a worker's heartbeat says of it.
pub(crate) struct Heartbeat<'a> {
    pub(crate) worker: &'a str,
    pub(crate) status: WorkerStatus,
    /// The routines it runs now, comma-separated.
    pub(crate) running: String,
    /// The routine IDs it serves.
    pub(crate) serves: Vec<String>,
    /// When the broker forgets it if it stops beating.
    pub(crate) expiry: Duration,
    /// Large arguments it downloaded so far.
    pub(crate) downloads: u64,
    /// Calls waiting for a slot of their task's `concurrency`.
    pub(crate) waiting_for_slot: u64,
    /// Its slots.
    pub(crate) slots: u32,
}

/// A worker's own connection for blocking reads of its work streams.
pub(crate) struct WorkReader {
    connection: MultiplexedConnection,
    broker: Broker,
    consumer: String,
    streams: Vec<String>,
    block: Duration,
}

impl WorkReader {
    /// New requests for `consumer`, at most `count`, waiting up to the
    /// block time.
    pub(crate) async fn read(&mut self, count: usize) -> Result<Vec<Delivery>, BrokerError> {
        let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.streams)
            .arg(vec![">"; self.streams.len()])
            .query_async(&mut self.connection)
            .await
            .map_err(command("XREADGROUP"))?;
        Ok(entries(read)
            .into_iter()
            .map(|(stream, entry)| Delivery::of(stream, entry))
            .collect())
    }

    /// Opens a new connection after a failed read.
    pub(crate) async fn reconnect(&mut self) -> Result<(), BrokerError> {
        self.connection = self.broker.blocking_connection(self.block).await?;
        Ok(())
    }
}

impl Broker {
    /// The requests callers give up on, by request id, as they are
    /// published, on a connection of its own; the stream ends when that
    /// connection is lost.
    pub(crate) async fn cancellations(
        &self,
    ) -> Result<impl futures_util::Stream<Item = String> + use<>, BrokerError> {
        use futures_util::StreamExt;
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(super::command("SUBSCRIBE"))?;
        pubsub
            .subscribe(self.cancel_channel())
            .await
            .map_err(super::command("SUBSCRIBE"))?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|message| std::future::ready(message.get_payload::<String>().ok())))
    }

    /// Joins the consumer group of `stream`, creating what is missing (also
    /// after the broker lost its data in a restart).
    pub(crate) async fn join_group(&self, stream: &str) -> Result<(), BrokerError> {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.connection())
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(command("XGROUP CREATE")(e)),
            _ => Ok(()),
        }
    }

    /// A reader of `streams` for `consumer`, on a connection of its own.
    pub(crate) async fn work_reader(
        &self,
        consumer: &str,
        streams: Vec<String>,
        block: Duration,
    ) -> Result<WorkReader, BrokerError> {
        Ok(WorkReader {
            connection: self.blocking_connection(block).await?,
            broker: self.clone(),
            consumer: consumer.to_owned(),
            streams,
            block,
        })
    }

    /// Takes over, for `consumer`, up to `count` requests of `stream` that
    /// no consumer has claimed for `idle`.
    pub(crate) async fn claim_abandoned(
        &self,
        stream: &str,
        consumer: &str,
        idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.connection())
            .await
            .map_err(command("XAUTOCLAIM"))?;
        Ok(reply
            .claimed
            .into_iter()
            .map(|entry| Delivery::of(stream.to_owned(), entry))
            .collect())
    }

    /// Takes over, for `consumer`, up to `count` requests of `stream`
    /// pending with workers whose heartbeat has expired: a dead worker's
    /// work resumes as soon as its death is known, not after a fixed idle
    /// time. `min_idle` keeps two workers from taking over the same
    /// request: a request just taken over is not taken again.
    pub(crate) async fn claim_from_dead(
        &self,
        stream: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(count.max(1))
            .query_async(&mut self.connection())
            .await
            .map_err(command("XPENDING"))?;
        let mut alive: std::collections::HashMap<String, bool> = Default::default();
        let mut orphans = Vec::new();
        for (id, owner, _, _) in pending {
            if owner == consumer {
                continue;
            }
            let owner_alive = match alive.get(&owner) {
                Some(known) => *known,
                None => {
                    let exists: bool = redis::cmd("EXISTS")
                        .arg(self.worker_key(&owner))
                        .query_async(&mut self.connection())
                        .await
                        .map_err(command("EXISTS"))?;
                    *alive.entry(owner).or_insert(exists)
                }
            };
            if !owner_alive {
                orphans.push(id);
            }
        }
        if orphans.is_empty() {
            return Ok(Vec::new());
        }
        let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(&orphans)
            .query_async(&mut self.connection())
            .await
            .map_err(command("XCLAIM"))?;
        Ok(claimed
            .ids
            .into_iter()
            .map(|entry| Delivery::of(stream.to_owned(), entry))
            .collect())
    }

    /// How many times the request `id` of `stream` has been delivered.
    pub(crate) async fn deliveries(&self, stream: &str, id: &str) -> Result<u64, BrokerError> {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(&mut self.connection())
            .await
            .map_err(command("XPENDING"))?;
        Ok(pending.first().map_or(0, |p| p.3))
    }

    /// Records a request that kept killing its workers in the dead-letter
    /// stream.
    pub(crate) async fn dead_letter(
        &self,
        delivery: &Delivery,
        deliveries: u64,
    ) -> Result<(), BrokerError> {
        let request = delivery.request.as_ref();
        let _: String = redis::cmd("XADD")
            .arg(self.dead_letter_stream())
            .arg("*")
            .arg("stream")
            .arg(&delivery.stream)
            .arg("message")
            .arg(&delivery.id)
            .arg("deliveries")
            .arg(deliveries)
            .arg("request")
            .arg(request.map_or("", |r| r.request.as_str()))
            .arg("key")
            .arg(request.map(|r| r.key.to_hex()).unwrap_or_default())
            .arg("task")
            .arg(
                request
                    .map(|r| format!("{}@{}", r.task, r.version))
                    .unwrap_or_default(),
            )
            .query_async(&mut self.connection())
            .await
            .map_err(command("XADD"))?;
        Ok(())
    }

    /// The newest `count` dead letters, newest first: requests that killed
    /// the worker running them more often than `max_deliveries` allows.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.dead_letter_stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.connection())
            .await
            .map_err(command("XREVRANGE"))?;
        Ok(reply.ids.into_iter().map(DeadLetter::of).collect())
    }

    /// Acknowledges a request and deletes it from its stream.
    pub(crate) async fn finish(&self, stream: &str, id: &str) -> Result<(), BrokerError> {
        redis::pipe()
            .cmd("XACK")
            .arg(stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(stream)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(command("XACK"))
    }

    /// Claims a running request again, so that no other worker takes it
    /// over while it runs, however long.
    pub(crate) async fn keep_claim(
        &self,
        stream: &str,
        consumer: &str,
        id: &str,
    ) -> Result<(), BrokerError> {
        let _: Vec<String> = redis::cmd("XCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query_async(&mut self.connection())
            .await
            .map_err(command("XCLAIM"))?;
        Ok(())
    }

    /// Records a worker's heartbeat; it expires unless renewed.
    pub(crate) async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<(), BrokerError> {
        let key = self.worker_key(beat.worker);
        redis::pipe()
            .cmd("HSET")
            .arg(&key)
            .arg("status")
            .arg(beat.status.as_str())
            .arg("routine")
            .arg(&beat.running)
            .arg("last_seen")
            .arg(now_millis())
            .arg("routines")
            .arg(beat.serves.join(","))
            .arg("downloads")
            .arg(beat.downloads)
            .arg("waiting_for_slot")
            .arg(beat.waiting_for_slot)
            .arg("slots")
            .arg(beat.slots)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(beat.expiry.as_millis() as u64)
            .ignore()
            // Its unit stream goes with it.
            .cmd("PEXPIRE")
            .arg(self.unit_stream(beat.worker))
            .arg(beat.expiry.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(self.workers_set())
            .arg(beat.worker)
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(command("HSET"))
    }

    /// Forgets a worker that stops.
    pub(crate) async fn leave(&self, worker: &str) {
        let mut connection = self.connection();
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(self.worker_key(worker))
            .arg(self.unit_stream(worker))
            .query_async(&mut connection)
            .await;
        let _: Result<(), _> = redis::cmd("SREM")
            .arg(self.workers_set())
            .arg(worker)
            .query_async(&mut connection)
            .await;
    }

    /// Tells the caller on `reply_to` that the routine of `request` starts
    /// on `worker` now (asked by callers that keep a deadline).
    pub(crate) async fn send_started(
        &self,
        reply_to: &str,
        request: &str,
        worker: &str,
    ) -> Result<(), BrokerError> {
        let xadd = notice(reply_to, request, "started", worker);
        let _: String = self.query("XADD started", &xadd).await?;
        Ok(())
    }

    pub(crate) async fn send_reply(
        &self,
        reply_to: &str,
        reply: &Reply,
    ) -> Result<(), BrokerError> {
        let (status, error, error_value, entry) = match &reply.outcome {
            Ok(entry) => ("done", "", &[][..], entry.as_deref().unwrap_or_default()),
            Err(failure) => (
                "failed",
                failure.message.as_str(),
                failure.error.as_deref().unwrap_or_default(),
                &[][..],
            ),
        };
        let mut xadd = notice(reply_to, &reply.request, status, &reply.worker);
        xadd.arg("error")
            .arg(error)
            .arg("error_value")
            .arg(error_value)
            .arg("entry")
            .arg(entry);
        let _: String = self.query("XADD reply", &xadd).await?;
        Ok(())
    }
}

/// The `XADD` of a notice to the caller's reply stream `reply_to` (kept to
/// about 10,000 entries): `request`, `status`, `worker`, then whatever
/// fields the caller adds.
pub(super) fn notice(reply_to: &str, request: &str, status: &str, worker: &str) -> redis::Cmd {
    let mut xadd = redis::cmd("XADD");
    xadd.arg(reply_to)
        .arg("MAXLEN")
        .arg("~")
        .arg(10_000)
        .arg("*")
        .arg("request")
        .arg(request)
        .arg("status")
        .arg(status)
        .arg("worker")
        .arg(worker);
    xadd
}

/// A request set aside because it killed the worker running it too often
/// (see [`Broker::dead_letters`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// When it was set aside.
    pub at: SystemTime,
    /// Its task, as `name@version` (empty for a letter written before
    /// letters named it, or for a request that could not be read).
    pub task: String,
    /// The call's key, in hex (empty for a request that could not be read).
    pub key: String,
    /// How many times it was delivered, each time to a worker that died.
    pub deliveries: u64,
}

impl DeadLetter {
    fn of(entry: redis::streams::StreamId) -> DeadLetter {
        let field = |name: &str| -> String { entry.get::<String>(name).unwrap_or_default() };
        // A stream entry's id starts with its time in milliseconds.
        let millis = entry
            .id
            .split('-')
            .next()
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(0);
        DeadLetter {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(millis),
            task: field("task"),
            key: field("key"),
            deliveries: field("deliveries").parse().unwrap_or(0),
        }
    }
}
