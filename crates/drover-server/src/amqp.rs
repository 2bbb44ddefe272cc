//! The priority router's RabbitMQ side: the publisher that empties the store's dispatch outbox
//! onto the contract's queues, with publisher confirms.
//!
//! Each step ([`Publisher::run_once`], a background worker of the leader) makes sure it has a
//! connection and a channel in confirm mode with the contract's topology declared
//! (`jobs.exchange`, direct and durable; `job.high`, `job.medium`, `job.low`, durable, with
//! `x-max-priority` 10, 5, 1 as their only argument, each bound under its own name;
//! `status.exchange`, topic), reads the publications due, publishes each as a persistent
//! message with its class's priority, waits for the broker's confirms and only then marks the
//! confirmed ones published. A broker that is down fails the step (recorded on the worker
//! board) and the next step connects again; nothing due is lost, and a message whose confirm
//! was lost is published again, which status updates tolerate. The status changes the router
//! recorded in the store's outbox (`DispatchStore::enqueue_messages`, from any replica) go to
//! `status.exchange` under `status.update` on the same channel, in the order recorded, and are
//! forgotten once confirmed.
//!
//! It must not decide what is due (the store does) or what a message says (`priority.rs`
//! builds the contract's job record).

use crate::clock::Clock;
use crate::priority::job_message;
use crate::workers::{Counts, Worker};
use drover_core::priority::PriorityClass;
use drover_store::{DispatchStore, Published, StoreError};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

pub const JOBS_EXCHANGE: &str = "jobs.exchange";
pub const STATUS_EXCHANGE: &str = "status.exchange";
pub const STATUS_ROUTING_KEY: &str = "status.update";

/// Publications read per batch; a step publishes batches until none are left or it has
/// published [`MAX_PER_STEP`].
const BATCH: u32 = 2000;
const MAX_PER_STEP: usize = 50_000;
/// How long connecting, declaring or a batch's confirms may take before the step fails.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Status events read per batch; a step publishes batches until none are left or it has
/// published [`MAX_PER_STEP`].
const EVENTS_BATCH: u32 = 2000;
/// After a failed connection, steps wait this long before the next try, doubling up to
/// [`MAX_RECONNECT_PAUSE`], so that a broker down for an hour costs a log line a minute, not
/// twenty a second.
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(500);
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(30);

/// Why a step failed; the next step tries again.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker at {url}: {source}")]
    Broker {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker at {0} did not answer within {BROKER_TIMEOUT:?}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The open connection and its confirm-mode channel.
struct Link {
    _connection: Connection,
    channel: Channel,
}

/// The outbox's publisher. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Publisher {
    url: String,
    store: Arc<dyn DispatchStore>,
    clock: Arc<dyn Clock>,
    link: Arc<Mutex<Option<Link>>>,
    /// After a failed connection: not before when, and the pause after the next failure.
    backoff: Arc<std::sync::Mutex<Option<(tokio::time::Instant, Duration)>>>,
}

impl Publisher {
    pub fn new(url: String, store: Arc<dyn DispatchStore>, clock: Arc<dyn Clock>) -> Self {
        Publisher {
            url,
            store,
            clock,
            link: Arc::default(),
            backoff: Arc::default(),
        }
    }

    fn broker(&self, source: lapin::Error) -> PublishError {
        PublishError::Broker {
            url: redacted(&self.url),
            source,
        }
    }

    async fn within<T>(
        &self,
        f: impl Future<Output = Result<T, lapin::Error>>,
    ) -> Result<T, PublishError> {
        match tokio::time::timeout(BROKER_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.broker(e)),
            Err(_) => Err(PublishError::Timeout(redacted(&self.url))),
        }
    }

    /// Connects, opens a channel in confirm mode and declares the topology.
    async fn connect(&self) -> Result<Link, PublishError> {
        let connection = self
            .within(Connection::connect(
                &self.url,
                ConnectionProperties::default(),
            ))
            .await?;
        let channel = self.within(connection.create_channel()).await?;
        self.within(channel.confirm_select(ConfirmSelectOptions::default()))
            .await?;
        self.within(declare_topology(&channel)).await?;
        tracing::info!(broker = %redacted(&self.url), "connected to the broker; topology declared");
        Ok(Link {
            _connection: connection,
            channel,
        })
    }

    /// Publishes `messages` (routing key, message priority, body) to `exchange` as persistent
    /// JSON and waits for the broker's answer to each: whether it confirmed it, in order.
    /// Every message is handed to the connection before any is awaited, so that its I/O
    /// thread writes them together rather than one write (and one thread hop) per message.
    async fn publish_all(
        &self,
        channel: &Channel,
        exchange: &str,
        messages: &[(&str, Option<u8>, Vec<u8>)],
    ) -> Result<Vec<bool>, PublishError> {
        let publishes = messages.iter().map(|(key, priority, body)| {
            let mut properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            if let Some(p) = priority {
                properties = properties.with_priority(*p);
            }
            channel.basic_publish(
                exchange.into(),
                (*key).into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
        });
        let confirms = self
            .within(futures::future::try_join_all(publishes))
            .await?;
        let mut acked = Vec::with_capacity(confirms.len());
        for confirm in confirms {
            acked.push(self.within(confirm).await?.is_ack());
        }
        Ok(acked)
    }

    /// Publishes one batch of what is due; how many were read and how many confirmed.
    async fn publish_due(&self, channel: &Channel) -> Result<(usize, usize), PublishError> {
        let due = self.store.due_publications(BATCH).await?;
        let read = due.len();
        let mut messages = Vec::with_capacity(read);
        for p in &due {
            let body = serde_json::to_vec(&job_message(&p.task, &p.job_created_at))
                .map_err(|e| StoreError::Internal(format!("encoding a job message: {e}")))?;
            messages.push((p.route.queue.as_str(), Some(p.route.priority), body));
        }
        let acked = self.publish_all(channel, JOBS_EXCHANGE, &messages).await?;
        let confirmed: Vec<Published> = (due.iter().zip(acked))
            .filter(|(_, ack)| *ack)
            .map(|(p, _)| Published {
                task_id: p.task.id.clone(),
                attempts: p.task.attempt,
            })
            .collect();
        let n = confirmed.len();
        if n > 0 {
            self.store
                .mark_published(confirmed, self.clock.now())
                .await?;
        }
        Ok((read, n))
    }

    /// Publishes one batch of the messages waiting (status events) and forgets those
    /// confirmed; how many were read and how many confirmed.
    async fn publish_messages(&self, channel: &Channel) -> Result<(usize, usize), PublishError> {
        let due = self.store.due_messages(EVENTS_BATCH).await?;
        let read = due.len();
        let mut confirmed = Vec::new();
        // Consecutive messages for one exchange go out together.
        for run in due.chunk_by(|a, b| a.message.exchange == b.message.exchange) {
            let messages: Vec<_> = run
                .iter()
                .map(|q| {
                    let m = &q.message;
                    (m.routing_key.as_str(), None, m.body.as_bytes().to_vec())
                })
                .collect();
            let acked = (self.publish_all(channel, &run[0].message.exchange, &messages)).await?;
            confirmed.extend(
                run.iter()
                    .zip(acked)
                    .filter(|(_, a)| *a)
                    .map(|(q, _)| q.seq),
            );
        }
        let n = confirmed.len();
        if n > 0 {
            self.store.forget_messages(confirmed).await?;
        }
        Ok((read, n))
    }

    async fn step(&self, link: &Link) -> Result<Counts, PublishError> {
        let mut published = 0;
        loop {
            let (read, confirmed) = self.publish_due(&link.channel).await?;
            published += confirmed;
            if read < BATCH as usize || published >= MAX_PER_STEP {
                break;
            }
        }
        let mut events = 0;
        loop {
            let (read, confirmed) = self.publish_messages(&link.channel).await?;
            events += confirmed;
            if read < EVENTS_BATCH as usize || events >= MAX_PER_STEP {
                break;
            }
        }
        Ok(vec![
            ("jobs_published", published as u64),
            ("status_events_published", events as u64),
        ])
    }
}

#[async_trait::async_trait]
impl Worker for Publisher {
    type Error = PublishError;

    fn name(&self) -> &'static str {
        "amqp-publisher"
    }

    async fn run_once(&self) -> Result<Counts, PublishError> {
        let mut link = self.link.lock().await;
        if !link
            .as_ref()
            .is_some_and(|l| l.channel.status().connected())
        {
            let waiting = *self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((until, _)) = waiting
                && tokio::time::Instant::now() < until
            {
                return Ok(Vec::new());
            }
            match self.connect().await {
                Ok(open) => {
                    *link = Some(open);
                    *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(e) => {
                    let pause = waiting.map_or(FIRST_RECONNECT_PAUSE, |(_, p)| {
                        (p * 2).min(MAX_RECONNECT_PAUSE)
                    });
                    *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((tokio::time::Instant::now() + pause, pause));
                    return Err(e);
                }
            }
        }
        let Some(open) = link.as_ref() else {
            return Ok(Vec::new());
        };
        let stepped = self.step(open).await;
        if let Err(PublishError::Broker { .. } | PublishError::Timeout(_)) = &stepped {
            // Start over with a fresh connection next step.
            *link = None;
        }
        stepped
    }

    /// Publishing is delivery, not a change of drover's state worth an action record per step.
    fn records_actions(&self) -> bool {
        false
    }
}

/// Declares the contract's exchanges and queues (idempotent; a queue that exists with other
/// arguments makes the broker close the channel, which fails the step with its message).
async fn declare_topology(channel: &Channel) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    (channel.exchange_declare(
        JOBS_EXCHANGE.into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    ))
    .await?;
    (channel.exchange_declare(
        STATUS_EXCHANGE.into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    ))
    .await?;
    for class in PriorityClass::ALL {
        let mut arguments = FieldTable::default();
        // A 32-bit signed integer, as the original system and Python's pika declare it: the
        // broker refuses a declaration whose arguments differ in type or value.
        arguments.insert(
            "x-max-priority".into(),
            AMQPValue::LongInt(i32::from(class.message_priority())),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        (channel.queue_declare(class.queue().into(), options, arguments)).await?;
        (channel.queue_bind(
            class.queue().into(),
            JOBS_EXCHANGE.into(),
            class.queue().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await?;
    }
    Ok(())
}

/// The URL with its password hidden, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redacted("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redacted("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
