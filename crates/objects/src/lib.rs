//! An S3-compatible object store served by a Wisp node.
//!
//! [`ObjectStore`] keeps buckets and objects under a root directory (the node passes
//! `<data-dir>/objects`): object bytes in immutable files written atomically and
//! fsynced, metadata in SQLite. [`router`] serves the S3 REST API over it (path-style
//! and `bucket.localhost` virtual-hosted addressing) so that `aws s3`, `aws s3api` and
//! boto3 work unchanged, authenticating every request with AWS Signature Version 4
//! against [`Credentials`]. Every object created or removed is reported, once durable,
//! as an [`ObjectEvent`] to an [`EventSink`], and the request is answered only once the
//! sink has acknowledged its events (so a node can make triggers durable before "200 OK");
//! [`s3_notification_record`] turns one into the record an S3-triggered function expects.
#![forbid(unsafe_code)]

mod auth;
pub mod checksum;
mod chunked;
mod cors;
mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
mod http_api;
pub mod names;
mod post;
pub mod sigv4;
mod store;
mod timefmt;
mod xml;

pub use auth::{Credentials, StaticCredentials};
pub use error::{S3Error, StoreError};
pub use events::{
    Ack, Acker, CreatedKind, DiscardEvents, EventFilter, EventKind, EventSink, KindPattern,
    ObjectEvent, RemovedKind, s3_notification_record,
};
pub use http_api::{TrustedPrincipal, router};
pub use store::{BucketInfo, ObjectChecksum, ObjectInfo, ObjectReader, ObjectStore};

use std::time::Duration;

/// Limits and naming of an object store.
#[derive(Debug, Clone)]
pub struct Config {
    /// The region reported by GetBucketLocation and HeadBucket, and given to buckets
    /// created without a LocationConstraint. SigV4 requests must be signed for it, as
    /// S3 requires the bucket's region: others get 400 AuthorizationHeaderMalformed
    /// naming it (a node passes its `--region`, which its functions' SDKs sign with).
    pub region: String,
    /// Largest object accepted by a single PUT or a copy (S3: 5 GiB).
    pub max_object_size: u64,
    /// Largest part of a multipart upload (S3: 5 GiB).
    pub max_part_size: u64,
    /// Smallest part, except the last, of a completed multipart upload (S3: 5 MiB).
    pub min_part_size: u64,
    /// Requests signed further than this from the server's clock are refused.
    pub max_clock_skew: Duration,
    /// Host suffixes under which `<bucket>.<suffix>` is virtual-hosted addressing
    /// (default `localhost`, so `http://bucket.localhost:port/key` works).
    pub virtual_host_suffixes: Vec<String>,
    /// The owner reported in listings.
    pub owner_id: String,
    pub owner_display_name: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            max_object_size: 5 * 1024 * 1024 * 1024,
            max_part_size: 5 * 1024 * 1024 * 1024,
            min_part_size: 5 * 1024 * 1024,
            max_clock_skew: Duration::from_secs(15 * 60),
            virtual_host_suffixes: vec!["localhost".into()],
            owner_id: "wisp".into(),
            owner_display_name: "wisp".into(),
        }
    }
}
