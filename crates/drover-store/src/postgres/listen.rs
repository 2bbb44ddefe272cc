//! Hearing about work made claimable by other replicas: `LISTEN drover_work` on a connection of
//! its own, outside the pool.
//!
//! Every write whose events may free work sends `NOTIFY drover_work` with its commit
//! (`write.rs`), carrying the writing store's nonce. This module owns the listening connection
//! and its reconnection: a notification from any other store calls the wakers registered on
//! the store's observers (`Stores::on_work_elsewhere`), and while the connection is down the
//! wakers are called every `PgOptions::poll_while_deaf` instead, so a waiting claim still looks
//! again (a spurious wake costs one empty claim; a missed one would cost a whole long-poll). It
//! must not decide what is claimable, and it never writes.

use super::PgStore;
use crate::EventObservers;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

/// The channel of the notifications that say work may have been freed.
pub const WORK_CHANNEL: &str = "drover_work";

/// A store's listener: started once, on the store's first use; stopped when the store is
/// closed or every clone of it is gone.
pub(super) struct Listener {
    started: AtomicBool,
    stop: watch::Sender<bool>,
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            started: AtomicBool::new(false),
            stop: watch::Sender::new(false),
        }
    }
}

impl Listener {
    pub(super) fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts `store`'s listener unless it runs already.
pub(super) fn start(store: &PgStore) {
    if store.listener.started.swap(true, Ordering::SeqCst) {
        return;
    }
    let hearing = Hearing {
        config: store.config.clone(),
        nonce: store.nonce.to_string(),
        observers: store.observers.clone(),
        poll: store.options.poll_while_deaf.max(Duration::from_millis(10)),
    };
    let stop = store.listener.stop.subscribe();
    // Detached: it ends when the store is closed or dropped (the sender goes away).
    drop(tokio::spawn(hearing.run(stop)));
}

struct Hearing {
    config: tokio_postgres::Config,
    nonce: String,
    observers: Arc<EventObservers>,
    poll: Duration,
}

/// Whether the listener should stop: asked to, or its store is gone.
fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

impl Hearing {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if stopping(&stop) {
                return;
            }
            match self.listen(&mut stop).await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "not hearing other replicas' work; polling"),
            }
            // Deaf: look for work every `poll` until the connection is back. The first wake
            // also covers what was notified while the connection was going down.
            self.observers.wake_elsewhere();
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// Listens until stopped (`Ok`) or until the connection fails (`Err`).
    async fn listen(&self, stop: &mut watch::Receiver<bool>) -> Result<(), String> {
        let (client, mut connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let (heard, mut notes) = mpsc::unbounded_channel();
        // The connection delivers notifications only while it is polled: a task of its own
        // polls it and hands them over; it ends when the connection does.
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if heard.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        let out = async {
            client
                .batch_execute(&format!("LISTEN {WORK_CHANNEL}"))
                .await
                .map_err(|e| e.to_string())?;
            // Work may have been freed while this store was not listening.
            self.observers.wake_elsewhere();
            loop {
                tokio::select! {
                    note = notes.recv() => match note {
                        Some(from) if from == self.nonce => {}
                        Some(_) => self.observers.wake_elsewhere(),
                        None => return Err("the listening connection closed".to_string()),
                    },
                    _ = stop.changed() => {
                        if stopping(stop) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        .await;
        driver.abort();
        out
    }
}
