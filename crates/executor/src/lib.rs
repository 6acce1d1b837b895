//! Runs WebAssembly components of the `wasi:http/proxy` world (WASI 0.2) on wasmtime.
//!
//! The executor owns the wasmtime [`Engine`](wasmtime::Engine) (pooling allocator with
//! copy-on-write memory images, epoch interruption), validates and compiles components
//! ahead of time, loads compiled artifacts without recompiling, and runs one request in a
//! fresh [`Store`](wasmtime::Store) with the function's limits (timeout, memory), capturing
//! its stdout and stderr.
//!
//! It is not for routing, concurrency limits, metering or storage: the invoker does those.
//!
//! `unsafe` is denied except in [`Executor::load`], which maps a compiled artifact that
//! this executor wrote itself.
#![deny(unsafe_code)]

mod body;
mod engine;
mod host;
mod logpipe;

pub use body::{BoxError, ResponseStream, StreamBody, full};
pub use engine::{
    CompileError, Executor, ExecutorConfig, ExecutorError, InvocationContext, InvocationResult,
    LoadedComponent, WarmPool,
};
pub use host::{BucketScope, Caller, HostService, Outbound};
