//! drover's `drover.v1.Nodes/WatchNodes`: the registry's node changes as they are committed.
//!
//! [`NodeFeed`] turns the store's committed events into changes (a node registered, taken
//! DOWN, brought back, forgotten, or moved to another status; not every heartbeat, which would
//! be thousands a second on a large cluster) on a broadcast channel; each watcher gets those
//! committed after it subscribed. A watcher that falls more than [`BACKLOG`] changes behind is
//! ended with `DATA_LOSS` (list the nodes again, then watch). Every stream ends when the server
//! stops. Changes committed by another replica on a shared store are not seen here.

use drover_core::{Event, NodeStatus};
use drover_proto::drover::v1 as pb;
use futures::StreamExt;
use std::pin::Pin;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Changes a watcher may fall behind before its stream is ended.
pub const BACKLOG: usize = 4096;

/// The node changes of this server's commits, for watchers.
#[derive(Clone)]
pub struct NodeFeed {
    tx: broadcast::Sender<pb::NodeChange>,
}

impl Default for NodeFeed {
    fn default() -> Self {
        NodeFeed {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl NodeFeed {
    /// Publishes the node changes among a commit's `events` (called by the store after each
    /// commit; never blocks).
    pub fn observe(&self, events: &[Event]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for e in events {
            let change = |kind: &str, node_id: &str, status: &str| pb::NodeChange {
                kind: kind.into(),
                node_id: node_id.into(),
                status: status.into(),
            };
            let up = NodeStatus::Up.as_str();
            let c = match e {
                Event::NodeRegistered { node_id } => change("registered", node_id, up),
                Event::NodeDown { node_id } => change("down", node_id, NodeStatus::Down.as_str()),
                Event::NodeRevived { node_id } => change("revived", node_id, up),
                Event::NodeForgotten { node_id } => change("forgotten", node_id, ""),
                Event::NodeDraining { node_id } => {
                    change("draining", node_id, NodeStatus::Draining.as_str())
                }
                Event::NodeUndrained { node_id } => change("undrained", node_id, up),
                _ => continue,
            };
            // No watcher left between the check and the send is not an error.
            let _ = self.tx.send(c);
        }
    }
}

/// The `drover.v1.Nodes` service.
pub struct Nodes {
    pub feed: NodeFeed,
    pub shutdown: CancellationToken,
}

type ChangeStream = Pin<Box<dyn futures::Stream<Item = Result<pb::NodeChange, Status>> + Send>>;

#[tonic::async_trait]
impl pb::nodes_server::Nodes for Nodes {
    type WatchNodesStream = ChangeStream;

    async fn watch_nodes(
        &self,
        _request: Request<pb::WatchNodesRequest>,
    ) -> Result<Response<ChangeStream>, Status> {
        let rx = self.feed.tx.subscribe();
        let changes = futures::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(change) => Some((Ok(change), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(missed)) => Some((
                    Err(Status::data_loss(format!(
                        "this watcher fell {missed} changes behind; list the nodes again, then \
                         watch"
                    ))),
                    None,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        let stop = self.shutdown.clone().cancelled_owned();
        Ok(Response::new(Box::pin(changes.take_until(stop))))
    }
}
