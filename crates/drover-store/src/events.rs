//! Where a backend's committed events go: the observers registered on [`crate::Stores`].
//!
//! This module owns the registry and the rule that observers see only committed writes, each
//! write's events together, and the wakers told when another process sharing the store may
//! have made work claimable (a PostgreSQL replica). It must not decide which events a write
//! causes (the write code does) nor persist them (the journal will do that inside the
//! transaction).

use drover_core::Event;
use std::sync::{Arc, RwLock};

/// Something told about the events of each committed write.
pub type Observer = Arc<dyn Fn(&[Event]) + Send + Sync>;

/// Something told that work may have become claimable through a write it did not see.
pub type Waker = Arc<dyn Fn() + Send + Sync>;

/// The observers of one backend. Shared between the backend's write path and its [`crate::Stores`].
#[derive(Default)]
pub struct EventObservers {
    observers: RwLock<Vec<Observer>>,
    wakers: RwLock<Vec<Waker>>,
}

impl EventObservers {
    pub fn register(&self, observer: Observer) {
        // A poisoned lock only means an observer panicked while registering; the list is intact.
        let mut list = self.observers.write().unwrap_or_else(|p| p.into_inner());
        list.push(observer);
    }

    /// Tells every observer about one committed write's events. Nothing is sent for a write
    /// that caused none.
    pub fn notify(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let list = self.observers.read().unwrap_or_else(|p| p.into_inner());
        for observer in list.iter() {
            observer(events);
        }
    }

    pub fn register_waker(&self, waker: Waker) {
        let mut list = self.wakers.write().unwrap_or_else(|p| p.into_inner());
        list.push(waker);
    }

    /// Tells every waker that a write made elsewhere (another replica's) may have freed work.
    /// It carries no events: the writing process counted them.
    pub fn wake_elsewhere(&self) {
        let list = self.wakers.read().unwrap_or_else(|p| p.into_inner());
        for waker in list.iter() {
            waker();
        }
    }
}
