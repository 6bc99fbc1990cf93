//! Gangs: the units of one multi-unit call, started together on workers'
//! slots, passing messages through the workers' unit streams.
//!
//! ```text
//! {ns}:gang-slots        sorted set: `worker|gang|rank` per reserved slot, scored by when the
//!                        reservation lapses (renewed by the gang's coordinator while it runs)
//! {ns}:units:{worker}    one stream per worker, read by it alone: `start` (a unit to run),
//!                        `message` (for a unit it runs), `returned` (a peer returned), `end`
//! {ns}:gangs             hash: gang → `task|call|count` of each running gang, for `status`
//! {ns}:gangs-waiting     sorted set: `gang|task|least|most` of gangs waiting for slots,
//!                        scored by when the entry lapses (renewed at each try to start)
//! ```
//!
//! A gang's slots are reserved and its starts sent in one script: all or
//! nothing, so that two gangs that each need most of the free slots never
//! hold part of them while waiting for the rest. A gang id names one
//! attempt: a message of an earlier attempt is never received.

use std::collections::HashMap;
use std::time::Duration;

use super::messages::{Part, UnitEntry, UnitNotice};
use super::tail::StreamTail;
use super::{command, now_millis, Broker, BrokerError};
use routine_core::key::Key;
use routine_core::RunId;

/// How long a unit stream written by a unit lives without its worker's
/// heartbeat (which keeps it while the worker lives).
const ORPHAN_EXPIRY_MS: u64 = 60_000;

/// A gang to start: what every unit's start carries.
pub(crate) struct GangStart<'a> {
    pub(crate) gang: &'a str,
    pub(crate) task: &'a str,
    pub(crate) version: &'a str,
    pub(crate) least: usize,
    pub(crate) most: usize,
    pub(crate) reply_to: &'a str,
    pub(crate) run: Option<RunId>,
    pub(crate) call: Key,
    /// Rank 0's input.
    pub(crate) input: &'a Part,
}

/// What became of an attempt to start a gang.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// Its units were sent their starts: the worker of each rank.
    Started(Vec<String>),
    /// Too few free slots: how many there were.
    Short(u64),
}

/// The gangs a broker knows of; see [`Broker::gangs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gangs {
    /// The gangs whose units run.
    pub running: Vec<RunningGang>,
    /// The gangs waiting for enough free slots to start.
    pub waiting: Vec<WaitingGang>,
}

/// A gang whose units run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningGang {
    /// The gang's attempt.
    pub id: String,
    /// Its task's routine ID, `name:version`.
    pub task: String,
    /// Its call's key, in hex.
    pub call: String,
    /// The worker of each rank.
    pub units: Vec<(usize, String)>,
}

/// A gang waiting for slots.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitingGang {
    /// The gang's attempt.
    pub id: String,
    /// Its task's routine ID, `name:version`.
    pub task: String,
    /// The fewest units it may start with.
    pub least: usize,
    /// The most it may start with.
    pub most: usize,
}

/// A waiting gang's member in the sorted set of waiting gangs.
pub(crate) fn waiting_member(start: &GangStart<'_>) -> String {
    format!(
        "{}|{}:{}|{}|{}",
        start.gang, start.task, start.version, start.least, start.most
    )
}

/// A reserved slot's member in the sorted set.
pub(crate) fn member(worker: &str, gang: &str, rank: usize) -> String {
    format!("{worker}|{gang}|{rank}")
}

impl Broker {
    pub(crate) fn unit_stream(&self, worker: &str) -> String {
        format!("{}:units:{worker}", self.namespace)
    }

    pub(crate) fn gang_slots(&self) -> String {
        format!("{}:gang-slots", self.namespace)
    }

    fn running_gangs(&self) -> String {
        format!("{}:gangs", self.namespace)
    }

    fn waiting_gangs(&self) -> String {
        format!("{}:gangs-waiting", self.namespace)
    }

    /// The gangs running (with the worker of each unit) and the gangs
    /// waiting for free slots, as the broker knows them now.
    pub async fn gangs(&self) -> Result<Gangs, BrokerError> {
        let now = now_millis();
        let (held, running, waiting): (Vec<String>, HashMap<String, String>, Vec<String>) =
            redis::pipe()
                .cmd("ZRANGEBYSCORE")
                .arg(self.gang_slots())
                .arg(now)
                .arg("+inf")
                .cmd("HGETALL")
                .arg(self.running_gangs())
                .cmd("ZRANGEBYSCORE")
                .arg(self.waiting_gangs())
                .arg(now)
                .arg("+inf")
                .query_async(&mut self.connection())
                .await
                .map_err(command("ZRANGEBYSCORE"))?;
        let mut units: HashMap<&str, Vec<(usize, String)>> = HashMap::new();
        for held in &held {
            let mut fields = held.splitn(3, '|');
            if let (Some(worker), Some(gang), Some(rank)) =
                (fields.next(), fields.next(), fields.next())
            {
                if let Ok(rank) = rank.parse() {
                    units
                        .entry(gang)
                        .or_default()
                        .push((rank, worker.to_owned()));
                }
            }
        }
        let mut gangs = Gangs::default();
        for (gang, description) in &running {
            // A gang whose reservations are gone (its caller died) is over.
            let Some(mut placed) = units.remove(gang.as_str()) else {
                continue;
            };
            placed.sort_unstable();
            let mut fields = description.splitn(3, '|');
            gangs.running.push(RunningGang {
                id: gang.clone(),
                task: fields.next().unwrap_or_default().to_owned(),
                call: fields.next().unwrap_or_default().to_owned(),
                units: placed,
            });
        }
        gangs.running.sort_by(|a, b| a.id.cmp(&b.id));
        for waiting in waiting {
            let fields: Vec<&str> = waiting.splitn(4, '|').collect();
            if let [gang, task, least, most] = fields[..] {
                gangs.waiting.push(WaitingGang {
                    id: gang.to_owned(),
                    task: task.to_owned(),
                    least: least.parse().unwrap_or(0),
                    most: most.parse().unwrap_or(0),
                });
            }
        }
        Ok(gangs)
    }

    /// Reserves the slots of a gang on `workers` (each with its number of
    /// slots), as many as are free up to `most`, and sends each unit its
    /// start, in one script; or nothing, when fewer than `least` are free.
    pub(crate) async fn start_gang(
        &self,
        start: &GangStart<'_>,
        workers: &[(String, u32)],
        hold: Duration,
    ) -> Result<Reservation, BrokerError> {
        const START: &str = r"
            local slots, gangs, waiting = KEYS[1], KEYS[2], KEYS[3]
            local now, lapse, gang = tonumber(ARGV[1]), ARGV[2], ARGV[3]
            local least, most = tonumber(ARGV[4]), tonumber(ARGV[5])
            local streams, nworkers = ARGV[6], tonumber(ARGV[7])
            local base = 8 + 2 * nworkers
            local waits = ARGV[base + 7]
            redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
            redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)
            local used = {}
            for _, held in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
                local worker = string.match(held, '^(.-)|')
                if worker then used[worker] = (used[worker] or 0) + 1 end
            end
            local free, total = {}, 0
            for i = 0, nworkers - 1 do
                local worker = ARGV[8 + 2 * i]
                local left = tonumber(ARGV[9 + 2 * i]) - (used[worker] or 0)
                if left > 0 then
                    free[#free + 1] = {worker, left}
                    total = total + left
                end
            end
            if total < least then
                redis.call('ZADD', waiting, lapse, waits)
                return {'short', tostring(total)}
            end
            redis.call('ZREM', waiting, waits)
            -- The fewest workers: a gang on fewer machines loses less to one death.
            table.sort(free, function(a, b)
                if a[2] ~= b[2] then return a[2] > b[2] end
                return a[1] < b[1]
            end)
            local count, ranks = math.min(total, most), {}
            for _, worker in ipairs(free) do
                for _ = 1, worker[2] do
                    if #ranks < count then ranks[#ranks + 1] = worker[1] end
                end
            end
            local placed = table.concat(ranks, ',')
            redis.call('HSET', gangs, gang,
                ARGV[base] .. ':' .. ARGV[base + 1] .. '|' .. ARGV[base + 4] .. '|' .. count)
            for rank = 0, count - 1 do
                local worker = ranks[rank + 1]
                redis.call('ZADD', slots, lapse, worker .. '|' .. gang .. '|' .. rank)
                local input, layout = '', ''
                if rank == 0 then input, layout = ARGV[base + 5], ARGV[base + 6] end
                redis.call('XADD', streams .. worker, '*', 'kind', 'start', 'gang', gang,
                    'rank', rank, 'count', count, 'workers', placed,
                    'task', ARGV[base], 'version', ARGV[base + 1], 'reply', ARGV[base + 2],
                    'run', ARGV[base + 3], 'call', ARGV[base + 4], 'input', input,
                    'input_layout', layout)
            end
            return {'started', placed}";
        let now = now_millis();
        let (input, layout) = Part::layout(std::slice::from_ref(start.input));
        let mut eval = redis::cmd("EVAL");
        eval.arg(START)
            .arg(3)
            .arg(self.gang_slots())
            .arg(self.running_gangs())
            .arg(self.waiting_gangs())
            .arg(now)
            .arg(now + hold.as_millis() as u64)
            .arg(start.gang)
            .arg(start.least)
            .arg(start.most)
            .arg(self.unit_stream(""))
            .arg(workers.len());
        for (worker, slots) in workers {
            eval.arg(worker).arg(*slots);
        }
        eval.arg(start.task)
            .arg(start.version)
            .arg(start.reply_to)
            .arg(start.run.map(|r| r.to_string()).unwrap_or_default())
            .arg(start.call.to_hex())
            .arg(&input[..])
            .arg(layout)
            .arg(waiting_member(start));
        let (status, detail): (String, String) = self.query("EVAL start gang", &eval).await?;
        Ok(match status.as_str() {
            "started" => Reservation::Started(detail.split(',').map(str::to_owned).collect()),
            _ => Reservation::Short(detail.parse().unwrap_or(0)),
        })
    }

    /// Extends the reservations `members` by `hold` from now: how many
    /// were still held.
    pub(crate) async fn renew_gang(
        &self,
        members: &[String],
        hold: Duration,
    ) -> Result<usize, BrokerError> {
        let lapse = now_millis() + hold.as_millis() as u64;
        let mut renew = redis::cmd("ZADD");
        renew.arg(self.gang_slots()).arg("XX").arg("CH");
        for member in members {
            renew.arg(lapse).arg(member);
        }
        // `CH` counts the members whose score changed: every held one.
        let renewed: usize = self.query("ZADD XX gang", &renew).await?;
        Ok(renewed)
    }

    /// Which of `members` are still reserved.
    pub(crate) async fn gang_held(&self, members: &[String]) -> Result<Vec<bool>, BrokerError> {
        let mut pipe = redis::pipe();
        for member in members {
            pipe.cmd("ZSCORE").arg(self.gang_slots()).arg(member);
        }
        let scores: Vec<Option<f64>> = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(command("ZSCORE"))?;
        Ok(scores.iter().map(Option::is_some).collect())
    }

    /// Whether each of `workers` is alive (its heartbeat has not expired).
    pub(crate) async fn alive(&self, workers: &[&str]) -> Result<Vec<bool>, BrokerError> {
        let mut pipe = redis::pipe();
        for worker in workers {
            pipe.cmd("EXISTS").arg(self.worker_key(worker));
        }
        pipe.query_async(&mut self.connection())
            .await
            .map_err(command("EXISTS"))
    }

    /// Ends an attempt of a gang (`gang`, and its entry among the waiting
    /// gangs, `waiting`): its reservations go, the live workers that hold
    /// one are told to drop its units, and the unit streams of the dead
    /// workers `dead` are deleted. The reservations are found by the gang's
    /// name, not from what the caller knows: a call dropped after the gang
    /// started but before the start's answer reached it leaves none.
    pub(crate) async fn end_gang(
        &self,
        (gang, waiting): (&str, &str),
        dead: &[&str],
    ) -> Result<(), BrokerError> {
        const END: &str = r"
            local slots, gangs, waiting = KEYS[1], KEYS[2], KEYS[3]
            local streams, gang, waits = ARGV[1], ARGV[2], ARGV[3]
            local dead = {}
            for i = 4, #ARGV do dead[ARGV[i]] = true end
            local needle, told = '|' .. gang .. '|', {}
            for _, held in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
                if string.find(held, needle, 1, true) then
                    redis.call('ZREM', slots, held)
                    local worker = string.match(held, '^(.-)|')
                    if worker and not dead[worker] and not told[worker] then
                        told[worker] = true
                        redis.call('XADD', streams .. worker, '*', 'kind', 'end', 'gang', gang)
                    end
                end
            end
            redis.call('HDEL', gangs, gang)
            if waits ~= '' then redis.call('ZREM', waiting, waits) end
            for worker, _ in pairs(dead) do redis.call('DEL', streams .. worker) end
            return 0";
        let mut eval = redis::cmd("EVAL");
        eval.arg(END)
            .arg(3)
            .arg(self.gang_slots())
            .arg(self.running_gangs())
            .arg(self.waiting_gangs())
            .arg(self.unit_stream(""))
            .arg(gang)
            .arg(waiting)
            .arg(dead);
        self.query::<i64>("EVAL end-gang", &eval).await.map(|_| ())
    }

    /// Sends a message of a gang to the worker that runs its receiver.
    pub(crate) async fn post_message(
        &self,
        worker: &str,
        gang: &str,
        (from, to): (usize, usize),
        key: &str,
        body: &Part,
    ) -> Result<(), BrokerError> {
        let (inline, layout) = Part::layout(std::slice::from_ref(body));
        let stream = self.unit_stream(worker);
        // A stream written here expires if its worker has died (a live
        // worker's heartbeat keeps it): a message sent to a dead worker
        // after its gang ended never stays in Redis. Not retried: a
        // message sent twice would be received twice; a failed send fails
        // the attempt instead.
        redis::pipe()
            .cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("kind")
            .arg("message")
            .arg("gang")
            .arg(gang)
            .arg("from")
            .arg(from)
            .arg("to")
            .arg(to)
            .arg("key")
            .arg(key)
            .arg("body")
            .arg(&inline[..])
            .arg("body_layout")
            .arg(layout)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&stream)
            .arg(ORPHAN_EXPIRY_MS)
            .ignore()
            .query_async::<()>(&mut self.connection())
            .await
            .map_err(command("XADD message"))
    }

    /// Tells the workers `to` that the unit of rank `rank` returned.
    pub(crate) async fn post_returned(
        &self,
        to: &[&str],
        gang: &str,
        rank: usize,
    ) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        for worker in to {
            pipe.cmd("XADD")
                .arg(self.unit_stream(worker))
                .arg("*")
                .arg("kind")
                .arg("returned")
                .arg("gang")
                .arg(gang)
                .arg("rank")
                .arg(rank)
                .ignore()
                .cmd("PEXPIRE")
                .arg(self.unit_stream(worker))
                .arg(ORPHAN_EXPIRY_MS)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.connection())
            .await
            .map_err(command("XADD returned"))
    }

    /// Tells a gang's coordinator how one of its units ended.
    pub(crate) async fn send_unit_notice(
        &self,
        reply_to: &str,
        notice: &UnitNotice,
    ) -> Result<(), BrokerError> {
        let output = notice.output.as_ref();
        let (inline, layout) = match output {
            Some(part) => Part::layout(std::slice::from_ref(part)),
            None => (std::borrow::Cow::Borrowed(&[][..]), String::new()),
        };
        let mut xadd = super::work::notice(reply_to, &notice.gang, "unit", &notice.worker);
        xadd.arg("rank")
            .arg(notice.rank)
            .arg("ended")
            .arg(notice.ended.as_str())
            .arg("error")
            .arg(notice.error.as_deref().unwrap_or_default())
            .arg("output")
            .arg(&inline[..])
            .arg("output_layout")
            .arg(layout)
            .arg("has_output")
            .arg(if output.is_some() { "1" } else { "0" })
            .arg("took_us")
            .arg(notice.took.as_micros() as u64);
        let _: String = self.query("XADD unit", &xadd).await?;
        Ok(())
    }

    /// A reader of `worker`'s unit stream, on a connection of its own.
    pub(crate) async fn unit_reader(
        &self,
        worker: &str,
        block: Duration,
    ) -> Result<StreamTail<UnitEntry>, BrokerError> {
        self.tail(self.unit_stream(worker), block, UnitEntry::parse)
            .await
    }
}
