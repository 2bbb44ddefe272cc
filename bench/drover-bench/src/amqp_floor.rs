//! The floor of the priority-router scenario: registrations published straight to RabbitMQ.
//! Each `POST /api/jobs/register` is parsed, routed to its priority class's queue by the
//! contract's rule, published persistent on one confirm-mode channel and answered 202 once the
//! broker confirms it, behind the same HTTP stack as drover's. `GET /api/v1/workers` shows the
//! confirmed count where the scenario reads drover's publisher.
//!
//! It keeps nothing: no store, no outbox, no idempotent ids, no status. Its figure is what HTTP
//! in and confirmed publishing out cost by themselves on this machine, beside the same broker
//! and load generator, so the scenario can say how much of drover's figure is drover's own
//! work (durably recording each job before it is published). It is mounted by `floor.rs` when
//! the floor is given `--amqp-url`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_api::{WorkerInfo, WorkerList};
use drover_core::priority::{DEFAULT_PRIORITY, PriorityClass};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const EXCHANGE: &str = "jobs.exchange";
struct Floor {
    _connection: Connection,
    channel: Channel,
    published: AtomicU64,
}

type Shared = Arc<Floor>;

/// The routes the priority-router scenario calls, publishing to the broker at `url`.
pub async fn routes(url: &str) -> anyhow::Result<Router> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    for class in PriorityClass::ALL {
        let (queue, max) = (class.queue(), class.message_priority());
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-priority".into(), AMQPValue::LongInt(i32::from(max)));
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.into(), options, arguments)
            .await?;
        channel
            .queue_bind(
                queue.into(),
                EXCHANGE.into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let shared = Arc::new(Floor {
        _connection: connection,
        channel,
        published: AtomicU64::new(0),
    });
    Ok(Router::new()
        .route("/api/jobs/register", post(register))
        .route("/api/v1/workers", get(workers))
        .with_state(shared))
}

async fn register(State(f): State<Shared>, body: Bytes) -> (StatusCode, Json<Value>) {
    let Ok(job) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_json"})),
        );
    };
    let id = job["id"].as_str().unwrap_or_default().to_string();
    let priority = job["priority"].as_i64().unwrap_or(DEFAULT_PRIORITY);
    // The contract's routing rule, as drover's own router applies it.
    let class = PriorityClass::of(priority);
    let queue = class.queue();
    let message = json!({
        "id": id, "type": job["type"], "priority": priority, "status": "pending",
        "payload": job["payload"], "retry_count": 0, "max_retries": 3,
        "execution_timeout": 300, "created_at": chrono::Utc::now().to_rfc3339(),
    });
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_priority(class.message_priority())
        .with_content_type("application/json".into());
    let confirmed = async {
        f.channel
            .basic_publish(
                EXCHANGE.into(),
                queue.into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&message)?,
                properties,
            )
            .await?
            .await?;
        anyhow::Ok(())
    };
    match confirmed.await {
        Ok(()) => {
            f.published.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "accepted", "job_id": id})),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": e.to_string()})),
        ),
    }
}

async fn workers(State(f): State<Shared>) -> Json<WorkerList> {
    let published = f.published.load(Ordering::Relaxed);
    let publisher = WorkerInfo {
        name: "amqp-publisher".into(),
        interval_seconds: None,
        runs: published,
        failures: 0,
        last_run_at: None,
        last_duration_ms: None,
        last_error: None,
        last_counts: Default::default(),
        totals: [("jobs_published".to_string(), published)].into(),
    };
    Json(WorkerList {
        workers: vec![publisher],
    })
}
