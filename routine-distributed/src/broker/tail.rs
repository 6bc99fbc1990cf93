//! Reading a stream that one process alone reads (an engine's reply
//! stream, a worker's unit stream): from where it last read, each entry
//! deleted once handled.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadReply};

use super::messages::entries;
use super::{command, Broker, BrokerError};

/// Reads `stream` on a connection of its own, parsing each entry as a `T`.
pub(crate) struct StreamTail<T> {
    connection: MultiplexedConnection,
    broker: Broker,
    stream: String,
    block: Duration,
    last_id: String,
    parse: fn(&StreamId) -> Option<T>,
}

impl Broker {
    /// A reader of `stream` from its start, waiting up to `block` a read.
    pub(crate) async fn tail<T>(
        &self,
        stream: String,
        block: Duration,
        parse: fn(&StreamId) -> Option<T>,
    ) -> Result<StreamTail<T>, BrokerError> {
        Ok(StreamTail {
            connection: self.blocking_connection(block).await?,
            broker: self.clone(),
            stream,
            block,
            last_id: "0-0".to_owned(),
            parse,
        })
    }
}

impl<T> StreamTail<T> {
    /// The entries that arrived, waiting up to the block time, with their
    /// ids; `None` for an entry that does not parse.
    pub(crate) async fn read(&mut self) -> Result<Vec<(String, Option<T>)>, BrokerError> {
        let read: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&self.last_id)
            .query_async(&mut self.connection)
            .await
            .map_err(command("XREAD"))?;
        let read: Vec<(String, Option<T>)> = entries(read)
            .into_iter()
            .map(|(_, entry)| {
                let parsed = (self.parse)(&entry);
                (entry.id, parsed)
            })
            .collect();
        if let Some((last, _)) = read.last() {
            self.last_id = last.clone();
        }
        Ok(read)
    }

    /// Opens a new connection after a failed read, reading on from where
    /// it was: an entry handled and not yet deleted is not read again.
    pub(crate) async fn reconnect(&mut self) -> Result<(), BrokerError> {
        self.connection = self.broker.blocking_connection(self.block).await?;
        Ok(())
    }

    /// Deletes entries already handled, off the readers' path.
    pub(crate) fn tidy(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let (mut connection, stream) = (self.broker.connection(), self.stream.clone());
        tokio::spawn(async move {
            let _: Result<(), _> = redis::cmd("XDEL")
                .arg(stream)
                .arg(ids)
                .query_async(&mut connection)
                .await;
        });
    }
}
