//! Firing schedules: each due tick becomes exactly one durable async-invocation enqueue,
//! committed with the schedule's last-tick update, so a tick fires at most once even
//! across restarts.
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::sync::watch;

use crate::clock::{ms, ts};
use crate::envelope::{CloudEvent, event_traceparent, scheduled_event};
use crate::error::Result;
use crate::invocations::{EnqueueOptions, EventId, insert};
use crate::schedule::Schedule;
use crate::store::{EventStore, last_tick, set_last_tick};

/// What to do with ticks that passed while nothing was firing (the node was down).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedTicks {
    /// Run once at start for all of them (with the latest missed tick's time).
    #[default]
    RunOnce,
    /// Drop them; the next tick fires as usual.
    Skip,
}

/// The payload an enqueued tick carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TickPayload {
    /// EventBridge's "Scheduled Event" JSON, for native (Lambda) runtimes.
    #[default]
    ScheduledEvent,
    /// A CloudEvent (`wisp.schedule.tick`), for WebAssembly functions.
    CloudEvent,
}

/// A schedule that invokes `function`.
#[derive(Clone, Debug)]
pub struct ScheduleDef {
    /// Unique; the key of the persisted last tick (and the rule name in the ARN).
    pub name: String,
    pub schedule: Schedule,
    pub function: String,
    pub missed: MissedTicks,
    /// A tick fired within this long after its time is on time, not missed (EventBridge
    /// fires within 60 s of the tick).
    pub grace: Duration,
    pub payload: TickPayload,
    /// Delivery settings of the enqueued invocations (`id` is ignored: each tick gets its own).
    pub options: EnqueueOptions,
}

impl ScheduleDef {
    pub fn new(name: impl Into<String>, schedule: Schedule, function: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            schedule,
            function: function.into(),
            missed: MissedTicks::default(),
            grace: Duration::from_secs(60),
            payload: TickPayload::default(),
            options: EnqueueOptions::default(),
        }
    }
}

/// A tick that was enqueued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub tick: Timestamp,
    pub event_id: EventId,
    /// The tick was late by more than the grace period (a `RunOnce` catch-up).
    pub catch_up: bool,
}

impl EventStore {
    /// Fires `def` if a tick is due: reads its last tick, and if a tick passed since,
    /// enqueues one invocation for the latest such tick and records it, in one
    /// transaction. The first call for a new schedule only records "now" (no back-fill).
    pub async fn fire_schedule(&self, def: &ScheduleDef) -> Result<Option<Fired>> {
        let (def, now) = (def.clone(), self.now());
        self.call(move |conn, ctx| {
            let Some(last) = last_tick(conn, &def.name)? else {
                set_last_tick(conn, &def.name, ms(now))?;
                return Ok(None);
            };
            let Some(tick) = def.schedule.latest_between(ts(last), now) else {
                return Ok(None);
            };
            set_last_tick(conn, &def.name, ms(tick))?;
            let late = ms(now) - ms(tick) > crate::clock::dur_ms(def.grace);
            if late && def.missed == MissedTicks::Skip {
                tracing::info!(schedule = %def.name, %tick, "missed tick skipped");
                return Ok(None);
            }
            // Always a fresh id: a fixed `options.id` would make every later tick a no-op.
            let id = EventId::new();
            // The tick's trace: its invocations are spans under it, and a CloudEvent
            // carries it (the distributed-tracing extension).
            let traceparent = def.options.traceparent.clone().unwrap_or_else(|| event_traceparent(id));
            let payload = match def.payload {
                TickPayload::ScheduledEvent => serde_json::to_vec(&scheduled_event(&id.to_string(), &def.name, tick, &ctx.config.region)),
                TickPayload::CloudEvent => serde_json::to_vec(
                    &CloudEvent::new(id.to_string(), format!("/wisp/schedules/{}", def.name), "wisp.schedule.tick")
                        .with_time(tick)
                        .with_traceparent(Some(traceparent.clone()))
                        .with_json(json!({ "schedule": def.name, "expression": def.schedule.expression(), "tick": tick.to_string() })),
                ),
            }
            .unwrap_or_default();
            let opts = EnqueueOptions { id: Some(id), traceparent: Some(traceparent), ..def.options.clone() };
            insert(conn, ctx, ms(now), &def.function, &payload, &opts)?;
            Ok(Some(Fired { tick, event_id: id, catch_up: late }))
        })
        .await
    }

    /// Forgets a schedule's last tick (when the schedule is deleted).
    pub async fn remove_schedule(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.call(move |conn, _| {
            Ok(conn.execute("DELETE FROM schedules WHERE name = ?1", [name])? > 0)
        })
        .await
    }

    /// The persisted last tick of a schedule.
    pub async fn schedule_last_tick(&self, name: &str) -> Result<Option<Timestamp>> {
        let name = name.to_string();
        self.call(move |conn, _| Ok(last_tick(conn, &name)?.map(ts)))
            .await
    }
}

/// Fires the schedules in `defs` (replaced whenever the sender changes it, e.g. on deploy)
/// until `shutdown` resolves: at start (catching up missed ticks) and at each next tick,
/// sleeping on the store's clock in between.
pub async fn run_schedules(
    store: EventStore,
    mut defs: watch::Receiver<Vec<ScheduleDef>>,
    shutdown: impl Future<Output = ()>,
) {
    let clock = store.clock().clone();
    tokio::pin!(shutdown);
    loop {
        let current = defs.borrow_and_update().clone();
        // Concurrently, so that all the schedules due at once share one commit.
        let mut firing = tokio::task::JoinSet::new();
        for def in current.iter().cloned() {
            let store = store.clone();
            firing.spawn(async move {
                match store.fire_schedule(&def).await {
                    Ok(Some(f)) => tracing::debug!(schedule = %def.name, tick = %f.tick, event = %f.event_id, "schedule fired"),
                    Ok(None) => {}
                    Err(e) => tracing::error!(schedule = %def.name, error = %e, "firing schedule failed"),
                }
            });
        }
        while firing.join_next().await.is_some() {}
        let now = clock.now();
        // Retry a failed store call within a minute even if no tick is near.
        let next = current
            .iter()
            .filter_map(|d| d.schedule.next_after(now))
            .min()
            .unwrap_or(Timestamp::MAX)
            .min(crate::clock::add(now, Duration::from_secs(60)));
        tokio::select! {
            () = &mut shutdown => return,
            changed = defs.changed() => if changed.is_err() { return },
            () = clock.sleep_until(next) => {}
        }
    }
}
