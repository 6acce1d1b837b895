use crate::admission::Gate;
use crate::metrics::FunctionMetrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use wisp_core::{Function, FunctionName, FunctionSpec, RouteTable};
use wisp_executor::WarmPool;
use wisp_native::NativePool;

/// A function as it serves traffic: its active version and its concurrency gate.
#[derive(Debug)]
pub struct ActiveFunction {
    pub name: FunctionName,
    pub app: String,
    pub version: u32,
    pub spec: FunctionSpec,
    /// The spec's env, ready to hand to the executor.
    pub env: Vec<(String, String)>,
    /// The function's concurrency gate and queue. Shared across versions while its
    /// concurrency is unchanged, so a redeploy does not double it.
    pub gate: Arc<Gate>,
    /// Warm instances, for a version with `instance_reuse`; kept while the version serves.
    pub warm: Option<Arc<WarmPool>>,
    /// The instances of a native function's version; kept while the version serves, and
    /// stopped when it is replaced (once its in-flight invocations are done).
    pub native: Option<Arc<NativePool>>,
    /// The function's metric handles, made at its first invocation (so thousands of idle
    /// functions cost no metric memory) and kept across versions.
    pub metrics: Arc<OnceLock<FunctionMetrics>>,
}

/// An immutable snapshot of what is deployed: swapped whole on every change.
#[derive(Debug, Default)]
pub struct Registry {
    functions: HashMap<FunctionName, Arc<ActiveFunction>>,
    routes: RouteTable<Arc<ActiveFunction>>,
}

impl Registry {
    /// Builds the registry; `native_pool` makes the pool of a native function's version
    /// (the previous registry's pool is kept when the version did not change).
    pub fn build(
        functions: &[Function],
        previous: Option<&Registry>,
        native_pool: &dyn Fn(&Function) -> Option<Arc<NativePool>>,
    ) -> Registry {
        let mut reg = Registry::default();
        for f in functions {
            let same_version = previous
                .and_then(|p| p.functions.get(&f.name))
                .filter(|old| old.version == f.active_version && old.spec == f.active);
            let max = f.active.limits.concurrency();
            let gate = previous
                .and_then(|p| p.functions.get(&f.name))
                .filter(|old| old.spec.limits.concurrency() == max)
                .map(|old| old.gate.clone())
                .unwrap_or_else(|| Arc::new(Gate::new(max)));
            let warm = f.active.instance_reuse.then(|| {
                previous
                    .and_then(|p| p.functions.get(&f.name))
                    .filter(|old| old.version == f.active_version)
                    .and_then(|old| old.warm.clone())
                    .unwrap_or_else(|| Arc::new(WarmPool::new(max.min(64) as usize)))
            });
            let active = Arc::new(ActiveFunction {
                name: f.name.clone(),
                app: f.app.clone(),
                version: f.active_version,
                spec: f.active.clone(),
                env: f
                    .active
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                gate,
                warm,
                native: match same_version.and_then(|old| old.native.clone()) {
                    Some(pool) => Some(pool),
                    None if f.active.native.is_some() => native_pool(f),
                    None => None,
                },
                metrics: previous
                    .and_then(|p| p.functions.get(&f.name))
                    .map(|old| old.metrics.clone())
                    .unwrap_or_default(),
            });
            for route in &f.active.routes {
                // Deploys are checked for conflicts before they are stored; a conflict here
                // means the store was edited by hand, and the first route keeps its place.
                if let Err(e) = reg.routes.insert(route.clone(), active.clone()) {
                    tracing::error!(function = %f.name, "route not served: {e}");
                }
            }
            reg.functions.insert(f.name.clone(), active);
        }
        reg
    }

    pub fn function(&self, name: &FunctionName) -> Option<&Arc<ActiveFunction>> {
        self.functions.get(name)
    }

    /// Memory set aside by reserved concurrency, in MiB.
    pub fn reserved_mb(&self) -> u64 {
        self.functions
            .values()
            .map(|f| {
                u64::from(f.spec.limits.reserved_concurrency)
                    * (f.spec.limits.memory_bytes / (1024 * 1024))
            })
            .sum()
    }

    pub fn functions(&self) -> impl Iterator<Item = &Arc<ActiveFunction>> {
        self.functions.values()
    }

    pub fn routes(&self) -> &RouteTable<Arc<ActiveFunction>> {
        &self.routes
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}
