//! Named queues with SQS semantics: visibility timeouts, receive counts, a dead-letter queue
//! after `max_receive_count` receives, retention, batch receive with a batch window.
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use md5::{Digest, Md5};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::clock::{add, dur_ms, ms, ts};
use crate::error::{EventError, Result};
use crate::invocations::EventId;
use crate::store::{Ctx, EventStore, check_name, check_size};

/// Settings of a queue (SQS attributes of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a received message stays invisible before it is delivered again (0-12 h).
    pub visibility_timeout: Duration,
    /// Messages older than this are deleted (60 s to 14 days).
    pub retention: Duration,
    pub redrive: Option<RedrivePolicy>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            retention: Duration::from_secs(4 * 86_400),
            redrive: None,
        }
    }
}

/// After `max_receive_count` receives, the next receive moves the message to
/// `dead_letter_queue` (an existing queue) instead of delivering it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedrivePolicy {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// A typed message attribute (SQS `MessageAttributeValue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAttribute {
    /// `String`, `Number` or `Binary` (optionally with a `.custom` suffix).
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<Vec<u8>>,
}

impl MessageAttribute {
    pub fn string(v: impl Into<String>) -> Self {
        Self {
            data_type: "String".into(),
            string_value: Some(v.into()),
            binary_value: None,
        }
    }
}

/// The SQS system attributes Lambda passes in an SQS event record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemAttributes {
    pub approximate_receive_count: u32,
    pub sent_timestamp: Timestamp,
    pub approximate_first_receive_timestamp: Timestamp,
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub queue: String,
    pub message_id: String,
    /// Changes at every receive; only the latest one deletes the message.
    pub receipt_handle: String,
    pub body: String,
    pub md5_of_body: String,
    pub attributes: SystemAttributes,
    pub message_attributes: BTreeMap<String, MessageAttribute>,
}

/// Queue gauges for metrics (SQS's `ApproximateNumberOfMessages...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages that can be received now.
    pub depth: u64,
    /// Received and not yet deleted, within their visibility timeout.
    pub in_flight: u64,
    /// Age of the oldest message in the queue.
    pub oldest_age: Option<Duration>,
    /// Messages in the queue's dead-letter queue, if it has one.
    pub dlq_depth: Option<u64>,
}

/// How [`EventStore::receive_batch`] collects a batch for a subscriber (Lambda's event
/// source mapping: batch size and maximum batching window).
#[derive(Clone, Debug)]
pub struct BatchReceive {
    pub max: usize,
    /// Once the first message is in, keep collecting for up to this long (or until `max`).
    pub window: Duration,
    /// Long poll: wait up to this long for a first message.
    pub wait: Duration,
    /// Visibility timeout for these messages; `None` = the queue's.
    pub visibility: Option<Duration>,
}

impl Default for BatchReceive {
    fn default() -> Self {
        Self {
            max: 10,
            window: Duration::ZERO,
            wait: Duration::from_secs(20),
            visibility: None,
        }
    }
}

struct Q {
    visibility_ms: i64,
    retention_ms: i64,
    dead_letter: Option<String>,
    max_receive_count: Option<i64>,
}

fn queue(conn: &Connection, name: &str) -> Result<Q> {
    conn.prepare_cached("SELECT visibility_ms, retention_ms, dead_letter, max_receive_count FROM queues WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(Q {
                visibility_ms: r.get(0)?,
                retention_ms: r.get(1)?,
                dead_letter: r.get(2)?,
                max_receive_count: r.get(3)?,
            })
        })
        .optional()?
        .ok_or_else(|| EventError::NoSuchQueue(name.to_string()))
}

/// Inserts a message; `Ok(false)` if the queue does not exist.
pub(crate) fn insert_message(
    conn: &Connection,
    ctx: &mut Ctx,
    now: i64,
    queue_name: &str,
    body: &str,
    attributes: &BTreeMap<String, MessageAttribute>,
    id: EventId,
) -> Result<bool> {
    check_size(&ctx.config, body.len())?;
    match queue(conn, queue_name) {
        Err(EventError::NoSuchQueue(_)) => return Ok(false),
        r => r?,
    };
    let attrs = serde_json::to_string(attributes).unwrap_or_else(|_| "{}".into());
    conn.prepare_cached(
        "INSERT OR IGNORE INTO messages (queue, id, body, attributes, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![queue_name, id.to_string(), body, attrs, now])?;
    ctx.woke_queues.push(queue_name.to_string());
    Ok(true)
}

/// Checks a queue name as [`EventStore::create_queue`] does: 1-80 letters, digits, `-`,
/// `_` or `.`.
pub fn check_queue_name(name: &str) -> Result<()> {
    check_name(name)
}

fn md5_hex(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

impl EventStore {
    /// Creates `name`, or updates its settings if it exists (so a deploy can apply a
    /// manifest every time). Returns whether it was created.
    pub async fn create_queue(&self, name: &str, config: QueueConfig) -> Result<bool> {
        check_name(name)?;
        if config.visibility_timeout > Duration::from_secs(12 * 3600) {
            return Err(EventError::InvalidOption(
                "visibility_timeout is at most 12 h".into(),
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(14 * 86_400)).contains(&config.retention)
        {
            return Err(EventError::InvalidOption(
                "retention is between 60 s and 14 days".into(),
            ));
        }
        if let Some(r) = &config.redrive {
            if !(1..=1000).contains(&r.max_receive_count) {
                return Err(EventError::InvalidOption(
                    "max_receive_count is between 1 and 1000".into(),
                ));
            }
            if r.dead_letter_queue == name {
                return Err(EventError::InvalidOption(
                    "a queue cannot be its own dead-letter queue".into(),
                ));
            }
        }
        let (name, now) = (name.to_string(), ms(self.now()));
        self.call(move |conn, _| {
            if let Some(r) = &config.redrive {
                queue(conn, &r.dead_letter_queue)?;
            }
            let existed = queue(conn, &name).is_ok();
            conn.prepare_cached(
                "INSERT INTO queues (name, visibility_ms, retention_ms, dead_letter, max_receive_count, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET visibility_ms = excluded.visibility_ms,
                     retention_ms = excluded.retention_ms, dead_letter = excluded.dead_letter,
                     max_receive_count = excluded.max_receive_count",
            )?
            .execute(params![
                name,
                dur_ms(config.visibility_timeout),
                dur_ms(config.retention),
                config.redrive.as_ref().map(|r| r.dead_letter_queue.clone()),
                config.redrive.as_ref().map(|r| r.max_receive_count),
                now,
            ])?;
            Ok(!existed)
        })
        .await
    }

    /// Creates `name` with default settings unless it exists, in which case its settings
    /// stay as they are (a deploy that names a queue as an async destination makes sure it
    /// exists without undoing `wisp queue create --dlq ...`). Returns whether it was created.
    pub async fn ensure_queue(&self, name: &str) -> Result<bool> {
        check_name(name)?;
        let defaults = QueueConfig::default();
        let (name, now) = (name.to_string(), ms(self.now()));
        self.call(move |conn, _| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO queues (name, visibility_ms, retention_ms, created_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![
                    name,
                    dur_ms(defaults.visibility_timeout),
                    dur_ms(defaults.retention),
                    now,
                ])?;
            Ok(n == 1)
        })
        .await
    }

    /// Deletes a queue and its messages. Refused while another queue uses it as its
    /// dead-letter queue. Returns whether it existed.
    pub async fn delete_queue(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.call(move |conn, _| {
            let user: Option<String> = conn
                .query_row(
                    "SELECT name FROM queues WHERE dead_letter = ?1 LIMIT 1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(user) = user {
                return Err(EventError::InvalidOption(format!(
                    "queue {user:?} uses {name:?} as its dead-letter queue"
                )));
            }
            conn.execute("DELETE FROM messages WHERE queue = ?1", [&name])?;
            Ok(conn.execute("DELETE FROM queues WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    pub async fn list_queues(&self) -> Result<Vec<(String, QueueConfig)>> {
        self.call(|conn, _| {
            let rows = conn
                .prepare("SELECT name, visibility_ms, retention_ms, dead_letter, max_receive_count FROM queues ORDER BY name")?
                .query_map([], |r| {
                    let dlq: Option<String> = r.get(3)?;
                    let max: Option<u32> = r.get(4)?;
                    Ok((
                        r.get(0)?,
                        QueueConfig {
                            visibility_timeout: Duration::from_millis(r.get(1)?),
                            retention: Duration::from_millis(r.get(2)?),
                            redrive: dlq.zip(max).map(|(dead_letter_queue, max_receive_count)| RedrivePolicy {
                                dead_letter_queue,
                                max_receive_count,
                            }),
                        },
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    /// Sends a message; returns its id once it is durable.
    pub async fn send(
        &self,
        queue: &str,
        body: &str,
        attributes: BTreeMap<String, MessageAttribute>,
    ) -> Result<String> {
        self.send_with_id(queue, body, attributes, EventId::new())
            .await
            .map(|id| id.to_string())
    }

    pub(crate) async fn send_with_id(
        &self,
        queue_name: &str,
        body: &str,
        attributes: BTreeMap<String, MessageAttribute>,
        id: EventId,
    ) -> Result<EventId> {
        let (queue_name, body, now) = (queue_name.to_string(), body.to_string(), ms(self.now()));
        self.call(move |conn, ctx| {
            if insert_message(conn, ctx, now, &queue_name, &body, &attributes, id)? {
                Ok(id)
            } else {
                Err(EventError::NoSuchQueue(queue_name))
            }
        })
        .await
    }

    /// Receives up to `max` visible messages, oldest first, and hides them for the
    /// visibility timeout (`visibility`, else the queue's). A message already received
    /// `max_receive_count` times goes to the dead-letter queue instead.
    pub async fn receive(
        &self,
        queue_name: &str,
        max: usize,
        visibility: Option<Duration>,
    ) -> Result<Vec<Message>> {
        let (queue_name, now) = (queue_name.to_string(), ms(self.now()));
        self.call(move |conn, ctx| {
            let q = queue(conn, &queue_name)?;
            let hide = visibility.map_or(q.visibility_ms, dur_ms);
            let mut out = Vec::new();
            while out.len() < max {
                type Row = (i64, String, String, String, i64, i64, Option<i64>);
                let rows: Vec<Row> = conn
                    .prepare_cached(
                        "SELECT seq, id, body, attributes, sent_at, receive_count, first_receive_at FROM messages
                         WHERE queue = ?1 AND visible_at <= ?2 AND sent_at > ?3 ORDER BY visible_at, seq LIMIT ?4",
                    )?
                    .query_map(params![queue_name, now, now - q.retention_ms, (max - out.len()) as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                if rows.is_empty() {
                    break;
                }
                for (seq, id, body, attrs, sent_at, count, first) in rows {
                    if let (Some(dlq), Some(limit)) = (&q.dead_letter, q.max_receive_count)
                        && count >= limit
                    {
                        conn.prepare_cached(
                            "UPDATE messages SET queue = ?2, source_queue = ?3, visible_at = ?4, receive_count = 0,
                                 first_receive_at = NULL, receipt = NULL WHERE seq = ?1",
                        )?
                        .execute(params![seq, dlq, queue_name, now])?;
                        tracing::warn!(
                            queue = queue_name,
                            message_id = id,
                            receive_count = count,
                            dead_letter_queue = dlq,
                            "a message reached its queue's max_receive_count: moved to the dead-letter queue"
                        );
                        ctx.woke_queues.push(dlq.clone());
                        continue;
                    }
                    let receipt = format!("{id}.{}", hex::encode(rand::rng().random::<[u8; 12]>()));
                    let first = first.unwrap_or(now);
                    conn.prepare_cached(
                        "UPDATE messages SET visible_at = ?2, receive_count = ?3, first_receive_at = ?4, receipt = ?5 WHERE seq = ?1",
                    )?
                    .execute(params![seq, now + hide, count + 1, first, receipt])?;
                    out.push(Message {
                        queue: queue_name.clone(),
                        message_id: id,
                        receipt_handle: receipt,
                        md5_of_body: md5_hex(&body),
                        body,
                        attributes: SystemAttributes {
                            approximate_receive_count: (count + 1) as u32,
                            sent_timestamp: ts(sent_at),
                            approximate_first_receive_timestamp: ts(first),
                        },
                        message_attributes: serde_json::from_str(&attrs).unwrap_or_default(),
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    /// Collects a batch for a subscriber: waits up to `wait` for a first message, then up
    /// to `window` more (measured from the first message) until `max` are in. Waiting uses
    /// the store's clock and wakes on every send to the queue.
    pub async fn receive_batch(
        &self,
        queue_name: &str,
        opts: &BatchReceive,
    ) -> Result<Vec<Message>> {
        let clock = self.inner.clock.clone();
        let mut sends = self.inner.wake.queue(queue_name);
        let mut deadline = add(clock.now(), opts.wait);
        let mut out: Vec<Message> = Vec::new();
        loop {
            sends.borrow_and_update();
            let got = self
                .receive(queue_name, opts.max - out.len(), opts.visibility)
                .await?;
            if out.is_empty() && !got.is_empty() {
                deadline = add(clock.now(), opts.window);
            }
            out.extend(got);
            if out.len() >= opts.max || clock.now() >= deadline {
                return Ok(out);
            }
            tokio::select! {
                changed = sends.changed() => if changed.is_err() { return Ok(out) },
                () = clock.sleep_until(deadline) => {}
            }
        }
    }

    /// Deletes a received message. `Ok(false)` if the handle is not the message's latest
    /// (it was received again after its visibility timeout) or the message is gone.
    pub async fn delete(&self, receipt_handle: &str) -> Result<bool> {
        let receipt = receipt_handle.to_string();
        self.call(move |conn, _| {
            Ok(conn
                .prepare_cached("DELETE FROM messages WHERE receipt = ?1")?
                .execute([receipt])?
                > 0)
        })
        .await
    }

    /// Makes a received message visible again `timeout` from now (0: at once).
    pub async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<bool> {
        let (receipt, now) = (receipt_handle.to_string(), ms(self.now()));
        self.call(move |conn, ctx| {
            let queue: Option<String> = conn
                .prepare_cached(
                    "UPDATE messages SET visible_at = ?2 WHERE receipt = ?1 RETURNING queue",
                )?
                .query_row(params![receipt, now + dur_ms(timeout)], |r| r.get(0))
                .optional()?;
            if let Some(q) = &queue {
                ctx.woke_queues.push(q.clone());
            }
            Ok(queue.is_some())
        })
        .await
    }

    /// Partial batch failure: deletes every message of `batch` except those whose id is in
    /// `failed` (which come back after their visibility timeout). Returns how many it deleted.
    pub async fn settle_batch(&self, batch: &[Message], failed: &[String]) -> Result<usize> {
        let failed: HashSet<&str> = failed.iter().map(String::as_str).collect();
        let receipts: Vec<String> = batch
            .iter()
            .filter(|m| !failed.contains(m.message_id.as_str()))
            .map(|m| m.receipt_handle.clone())
            .collect();
        self.call(move |conn, _| {
            let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE receipt = ?1")?;
            let mut n = 0;
            for r in receipts {
                n += stmt.execute([r])?;
            }
            Ok(n)
        })
        .await
    }

    /// Moves up to `max` messages from a dead-letter queue back to the queues they came
    /// from, with fresh receive counts. Returns how many moved.
    pub async fn redrive_queue(&self, dead_letter_queue: &str, max: usize) -> Result<usize> {
        let (dlq, now) = (dead_letter_queue.to_string(), ms(self.now()));
        self.call(move |conn, ctx| {
            let sources: Vec<String> = conn
                .prepare_cached(
                    "UPDATE messages SET queue = source_queue, source_queue = NULL, visible_at = ?2, receive_count = 0,
                         first_receive_at = NULL, receipt = NULL
                     WHERE seq IN (SELECT seq FROM messages WHERE queue = ?1 AND source_queue IS NOT NULL
                                   AND source_queue IN (SELECT name FROM queues) ORDER BY seq LIMIT ?3)
                     RETURNING queue",
                )?
                .query_map(params![dlq, now, max as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let n = sources.len();
            ctx.woke_queues.extend(sources);
            Ok(n)
        })
        .await
    }

    pub async fn stats(&self, queue_name: &str) -> Result<QueueStats> {
        let (queue_name, now) = (queue_name.to_string(), ms(self.now()));
        self.call(move |conn, _| {
            let q = queue(conn, &queue_name)?;
            let count = |name: &str| -> Result<(u64, u64, Option<i64>)> {
                Ok(conn
                    .prepare_cached(
                        "SELECT coalesce(sum(visible_at <= ?2), 0), coalesce(sum(visible_at > ?2), 0), min(sent_at)
                         FROM messages WHERE queue = ?1",
                    )?
                    .query_row(params![name, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?)
            };
            let (depth, in_flight, oldest) = count(&queue_name)?;
            let dlq_depth = match &q.dead_letter {
                Some(d) => Some(count(d).map(|(a, b, _)| a + b)?),
                None => None,
            };
            Ok(QueueStats {
                depth,
                in_flight,
                oldest_age: oldest.map(|o| Duration::from_millis(u64::try_from(now - o).unwrap_or(0))),
                dlq_depth,
            })
        })
        .await
    }
}
