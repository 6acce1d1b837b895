//! Durable events for Wisp: nothing a caller was told "accepted" is ever lost.
//!
//! * [`EventStore`]: one SQLite file (WAL, `synchronous=FULL`) holding async invocations
//!   (at-least-once delivery with leases, retries with backoff, a dead-letter queue per
//!   function, on-success / on-failure destinations), named queues (SQS-like visibility
//!   timeouts, receive counts, redrive to a dead-letter queue) and the last fired tick of
//!   every schedule. Every write goes through one writer thread that commits the requests
//!   waiting at that moment in one transaction: concurrent callers share one fsync
//!   (group commit), and each call returns only after its commit.
//! * [`schedule`]: `rate(...)`, AWS `cron(...)` (six fields) and standard five-field cron
//!   expressions in an IANA time zone; [`EventStore::fire_schedule`] turns a due tick into
//!   exactly one durable enqueue.
//! * [`Dispatcher`]: claims due async invocations, runs them with bounded concurrency and
//!   completes them.
//! * [`webhook`]: HMAC-SHA256 signature checks (GitHub, Stripe, generic).
//! * [`envelope`]: CloudEvents 1.0 and the Lambda event shapes (SQS, destination records,
//!   EventBridge scheduled events, SQS partial batch responses).
//!
//! Time comes from a [`Clock`], so tests drive retries, leases, visibility timeouts and
//! schedules with a [`ManualClock`] instead of sleeping.
#![forbid(unsafe_code)]

mod clock;
mod dispatcher;
pub mod envelope;
mod error;
mod invocations;
mod queues;
pub mod schedule;
mod scheduler;
mod store;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatcher::{Dispatcher, DispatcherConfig, InvokeFn, InvokeFuture};
pub use error::EventError;
pub use invocations::{
    Claimed, Completion, DeadLetter, DeadReason, EnqueueOptions, EventId, EventInfo, EventState,
    InvokeOutcome, Redrive,
};
pub use jiff::Timestamp;
pub use queues::{
    BatchReceive, Message, MessageAttribute, QueueConfig, QueueStats, RedrivePolicy,
    SystemAttributes, check_queue_name,
};
pub use scheduler::{Fired, MissedTicks, ScheduleDef, TickPayload, run_schedules};
pub use store::{EventStore, MaintenanceReport, RetryPolicy, StoreConfig, Target};

/// The account id in every ARN and envelope (Wisp has no accounts; Lambda code expects one).
pub const ACCOUNT_ID: &str = "000000000000";
