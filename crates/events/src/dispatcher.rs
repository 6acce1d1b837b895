//! The dispatcher: claims due async invocations, runs them with bounded concurrency and
//! completes them.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::clock::add;
use crate::invocations::{Claimed, InvokeOutcome};
use crate::store::EventStore;

pub type InvokeFuture = Pin<Box<dyn Future<Output = InvokeOutcome> + Send>>;
/// Runs one claimed event (the node calls `Invoker::invoke` here).
pub type InvokeFn = Arc<dyn Fn(Claimed) -> InvokeFuture + Send + Sync>;

#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Most invocations running at once.
    pub concurrency: usize,
    /// How often to look for retries that became due (new events wake it at once).
    pub poll_interval: Duration,
    /// How often to run [`EventStore::maintenance`].
    pub maintenance_interval: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            poll_interval: Duration::from_millis(500),
            maintenance_interval: Duration::from_secs(60),
        }
    }
}

pub struct Dispatcher {
    store: EventStore,
    invoke: InvokeFn,
    config: DispatcherConfig,
}

impl Dispatcher {
    pub fn new(store: EventStore, invoke: InvokeFn, config: DispatcherConfig) -> Self {
        Self {
            store,
            invoke,
            config,
        }
    }

    /// Runs until `shutdown` resolves, then waits for the invocations in flight to finish
    /// and be completed (an invocation cut short would only be re-delivered after its lease).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            store,
            invoke,
            config,
        } = self;
        let clock = store.clock().clone();
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let mut wake = store.watch_invocations();
        let mut next_maintenance = clock.now();
        tokio::pin!(shutdown);
        loop {
            while tasks.try_join_next().is_some() {}
            if clock.now() >= next_maintenance {
                next_maintenance = add(clock.now(), config.maintenance_interval);
                if let Err(e) = store.maintenance().await {
                    tracing::warn!(error = %e, "event store maintenance failed");
                }
            }
            wake.borrow_and_update();
            let free = permits.available_permits();
            let mut full = false;
            if free > 0 {
                match store.claim(free).await {
                    Ok(claimed) => {
                        full = claimed.len() == free;
                        for c in claimed {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                break;
                            };
                            let (store, invoke) = (store.clone(), invoke.clone());
                            tasks.spawn(async move {
                                // A panicking invocation is a failed attempt, not a lost event.
                                let outcome = tokio::spawn(invoke(c.clone())).await.unwrap_or_else(|e| InvokeOutcome::Failure {
                                    error: format!("the invocation panicked: {e}"),
                                    response: None,
                                });
                                if let Err(e) = store.complete(&c, outcome).await {
                                    tracing::error!(event = %c.id, error = %e, "completing an invocation failed; it will be re-delivered after its lease");
                                }
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "claiming async invocations failed"),
                }
            }
            if full {
                continue;
            }
            let poll = clock.sleep_until(add(clock.now(), config.poll_interval));
            tokio::select! {
                () = &mut shutdown => break,
                _ = wake.changed() => {}
                Some(_) = tasks.join_next(), if free == 0 => {}
                () = poll => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}
