//! The models this server has loaded, the one way a name becomes a loaded model, and
//! the limits on what stays loaded.
//!
//! Requests name models freely ("all-MiniLM-L6-v2", "sentence-transformers/…",
//! "…@main", a folder under MODEL_DIRS). A name is first checked (anything that could
//! reach outside MODEL_DIRS is refused before the file system is touched; revisions
//! must be a ref name or a commit hash), then resolved to its snapshot folder, and the
//! folder is the key: names that resolve to the same snapshot share one copy. Loads of
//! the same name or snapshot coalesce (ten requests for a new model load it once), and
//! a failed load leaves nothing behind, so distinct bad names cost no memory.
//!
//! Residency: at most MAX_LOADED_MODELS models and MODEL_MEMORY_BUDGET bytes of
//! weights stay loaded; to make room, the least recently used idle models are unloaded
//! (never one with a request in flight, never the default model). A load that cannot
//! fit is refused with 503 and unloads nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use embgen_engine::{LoadOptions, Model, Quantize};
use embgen_hub::{HubOptions, Resolved, Source};
use rayon::ThreadPool;

use super::batcher::{Batcher, Limits};
use crate::error::{strip_paths, ApiError};
use crate::metrics;

pub struct LoadedModel {
    /// The name it was first loaded under: the full Hub id (with `@revision` when
    /// pinned), or the folder's path below its MODEL_DIRS entry.
    pub name: String,
    /// The snapshot folder: the registry's key.
    key: String,
    pub model: Arc<Model>,
    pub source: Resolved,
    pub load_time: Duration,
    pub loaded_at: SystemTime,
    /// Merges concurrent requests for this model into engine batches.
    pub batcher: Batcher,
    /// Bytes the weights hold, counted against MODEL_MEMORY_BUDGET.
    pub memory: usize,
    /// Requests holding a [`Lease`] on it: a model in use is never unloaded to make room.
    in_flight: AtomicUsize,
    /// When a request last asked for it (ms since the registry started): least
    /// recently used idle models make room first.
    last_used: AtomicU64,
}

impl LoadedModel {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request's hold on a model, from lookup until its outputs are back.
pub struct Lease(Arc<LoadedModel>);

impl std::ops::Deref for Lease {
    type Target = Arc<LoadedModel>;
    fn deref(&self) -> &Arc<LoadedModel> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a requested name points at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `key` is the id, with `@revision` when one was asked for.
    Hub {
        key: String,
        id: String,
        revision: Option<String>,
    },
    Local {
        key: String,
        dir: PathBuf,
    },
}

impl Target {
    fn key(&self) -> &str {
        match self {
            Target::Hub { key, .. } | Target::Local { key, .. } => key,
        }
    }
}

/// A revision as it may follow `@`: a commit hash, or a ref name (a branch or tag,
/// `refs/pr/1`): `/`-separated parts of letters, digits, `.`, `_` and `-`, none empty
/// and none starting with `.`. So `./main`, `.//main` and `COMMIT/` are refused, and
/// one snapshot cannot be loaded twice under spellings of the same ref.
fn valid_revision(r: &str) -> bool {
    r.len() <= 128
        && r.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('.')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// How many name → snapshot lookups are remembered; a cache, cleared when full, so
/// that distinct names cannot grow it without bound.
const MAX_ALIASES: usize = 1024;

/// Limits on what stays loaded.
#[derive(Debug, Clone, Copy)]
pub struct Residency {
    pub max_models: usize,
    /// Bytes of weights; `usize::MAX` for no budget.
    pub memory_budget: usize,
}

pub struct Registry {
    /// Loaded models by snapshot folder.
    models: RwLock<BTreeMap<String, Arc<LoadedModel>>>,
    /// Target keys (canonical names) already resolved to a loaded snapshot.
    aliases: Mutex<HashMap<String, String>>,
    /// One gate per name or snapshot being resolved or loaded, so that concurrent
    /// requests wait for one load; removed by the last one through.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hub: HubOptions,
    model_dirs: Vec<PathBuf>,
    pool: Arc<ThreadPool>,
    max_sequence_length: Option<usize>,
    limits: Limits,
    residency: Residency,
    /// ALLOWED_MODELS: globs over canonical names; empty allows any.
    allowed: Vec<String>,
    /// QUANTIZE: the precision models load in unless `/model/load` asks otherwise.
    quantize: Quantize,
    started: Instant,
    pub default_model: String,
}

fn bad_name(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_model_name", message)
}

/// `*` matches any run of characters, `?` one; everything else itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Removes a gate when its last user is done with it.
struct GateGuard<'a> {
    loading: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    key: String,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // The map's copy and ours: no one else waits.
        if Arc::strong_count(&self.gate) <= 2 {
            map.remove(&self.key);
        }
    }
}

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hub: HubOptions,
        model_dirs: Vec<PathBuf>,
        pool: Arc<ThreadPool>,
        max_sequence_length: Option<usize>,
        limits: Limits,
        residency: Residency,
        allowed: Vec<String>,
        quantize: Quantize,
        default_model: String,
    ) -> Self {
        Registry {
            models: RwLock::default(),
            aliases: Mutex::default(),
            loading: Mutex::default(),
            hub,
            model_dirs,
            pool,
            max_sequence_length,
            limits,
            residency,
            allowed,
            quantize,
            started: Instant::now(),
            default_model,
        }
    }

    pub fn residency(&self) -> Residency {
        self.residency
    }

    /// Reduces a requested name to what it points at, refusing anything outside the
    /// Hub and MODEL_DIRS.
    fn target(&self, name: &str) -> Result<Target, ApiError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
            return Err(bad_name(
                "model_name must be a Hub id (ORG/NAME) or a model folder name",
            ));
        }
        let path = Path::new(name);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad_name("model_name may not contain '..'"));
        }
        if path.is_absolute() {
            let under = self.model_dirs.iter().find(|d| path.starts_with(d));
            let Some(root) = under else {
                return Err(bad_name(
                    "absolute paths are only allowed inside the folders listed in MODEL_DIRS",
                ));
            };
            return self.local(root, path).ok_or_else(|| not_found(name));
        }
        // A folder under MODEL_DIRS wins over a Hub id of the same spelling.
        for root in &self.model_dirs {
            if let Some(t) = self.local(root, &root.join(path)) {
                return Ok(t);
            }
        }
        // ORG/NAME@REVISION pins a branch, tag or commit.
        let (id, revision) = match name.split_once('@') {
            Some((id, rev)) if valid_revision(rev) => (id, Some(rev.to_string())),
            Some(_) => {
                return Err(bad_name(
                    "the revision after '@' must be a branch, tag or commit hash",
                ))
            }
            None => (name, None),
        };
        if embgen_hub::is_valid_id(id) {
            let id = embgen_hub::full_id(id);
            let key = match &revision {
                Some(r) => format!("{id}@{r}"),
                None => id.clone(),
            };
            return Ok(Target::Hub { key, id, revision });
        }
        Err(bad_name(format!(
            "{name:?} is neither a Hub id (ORG/NAME) nor a folder under MODEL_DIRS"
        )))
    }

    /// `candidate` as a local model if it is a folder that, symlinks resolved, still
    /// lies inside `root`.
    fn local(&self, root: &Path, candidate: &Path) -> Option<Target> {
        let dir = candidate.canonicalize().ok()?;
        if !dir.is_dir() || !dir.starts_with(root) || dir == root {
            return None;
        }
        let key = dir.strip_prefix(root).ok()?.display().to_string();
        Some(Target::Local { key, dir })
    }

    /// 403 unless ALLOWED_MODELS admits the name (by its canonical spelling).
    fn check_allowed(&self, target: &Target) -> Result<(), ApiError> {
        let key = target.key();
        let bare = key.split('@').next().unwrap_or(key);
        if self.allowed.is_empty()
            || self
                .allowed
                .iter()
                .any(|p| glob_match(p, key) || glob_match(p, bare))
        {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                format!("model {key:?} is not one this server serves (ALLOWED_MODELS)"),
            ))
        }
    }

    /// Whether ALLOWED_MODELS admits a name (for checking settings at start-up).
    pub fn allows(&self, name: &str) -> Result<(), ApiError> {
        let target = self.target(name)?;
        self.check_allowed(&target)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A loaded model by name, without loading it or counting as a use.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        let target = self.target(name).ok()?;
        let snapshot = self
            .aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(target.key())
            .cloned()?;
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&snapshot)
            .cloned()
    }

    /// A lease on the loaded snapshot `snapshot`, marked as used now.
    fn lease(&self, snapshot: &str) -> Option<Lease> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let m = models.get(snapshot)?;
        // Counted under the lock, so that eviction (which takes it for writing) sees it.
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        m.last_used.store(self.now_ms(), Ordering::Relaxed);
        Some(Lease(m.clone()))
    }

    fn remember(&self, key: &str, snapshot: &str) {
        let mut aliases = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        if aliases.len() >= MAX_ALIASES {
            aliases.clear();
        }
        aliases.insert(key.to_string(), snapshot.to_string());
    }

    pub fn list(&self) -> Vec<Arc<LoadedModel>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Bytes of weights loaded now.
    pub fn memory_used(&self) -> usize {
        self.list().iter().map(|m| m.memory).sum()
    }

    /// Models that can be loaded without a download: the Hub cache's, and the folders
    /// under MODEL_DIRS (those ALLOWED_MODELS admits).
    pub fn available(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.hub.cache_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_prefix("models--") {
                    if e.path().join("snapshots").is_dir() {
                        out.push(id.replacen("--", "/", 1));
                    }
                }
            }
        }
        for root in &self.model_dirs {
            if let Ok(entries) = std::fs::read_dir(root) {
                for e in entries.flatten() {
                    if e.path().join("config.json").is_file() {
                        out.push(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        out.retain(|n| self.allows(n).is_ok());
        out.sort();
        out.dedup();
        out
    }

    /// The gate for `key`, and the guard that removes it when its last user is done.
    async fn gate(&self, key: &str) -> (GateGuard<'_>, tokio::sync::OwnedMutexGuard<()>) {
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let held = gate.clone().lock_owned().await;
        (
            GateGuard {
                loading: &self.loading,
                key: key.to_string(),
                gate,
            },
            held,
        )
    }

    /// The model, loaded first if needed, leased for one request. Returns whether
    /// this call loaded it.
    pub async fn get_or_load(&self, name: &str) -> Result<(Lease, bool), ApiError> {
        self.get_or_load_as(name, None).await
    }

    /// As [`Self::get_or_load`]; with `quantize`, a copy loaded in another precision
    /// is replaced by one in this precision (requests using the old copy finish on
    /// it). A model is loaded in one precision at a time.
    pub async fn get_or_load_as(
        &self,
        name: &str,
        quantize: Option<Quantize>,
    ) -> Result<(Lease, bool), ApiError> {
        let wanted = |l: &Lease| quantize.is_none_or(|q| l.model.info().quantize == q.name());
        let target = self.target(name)?;
        self.check_allowed(&target)?;
        let key = target.key().to_string();
        let known = |this: &Self| -> Option<Lease> {
            let snapshot = this
                .aliases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .cloned()?;
            this.lease(&snapshot)
        };
        if let Some(l) = known(self).filter(wanted) {
            return Ok((l, false));
        }
        // One resolution (perhaps a download) per name at a time.
        let (_name_guard, _name_held) = self.gate(&key).await;
        if let Some(l) = known(self).filter(wanted) {
            return Ok((l, false));
        }
        let hub = self.hub.clone();
        let started = Instant::now();
        let source = blocking(move || resolve(target, &hub))
            .await?
            .inspect_err(|_| metrics::model_load_failed(started.elapsed()))?;
        let snapshot = source.1.dir.display().to_string();
        // One load per snapshot at a time, whatever names led to it.
        let (_snap_guard, _snap_held) = self.gate(&snapshot).await;
        if let Some(l) = self.lease(&snapshot) {
            if wanted(&l) {
                self.remember(&key, &snapshot);
                return Ok((l, false));
            }
            // Another precision: this load replaces it.
            drop(l);
            let old = self
                .models
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&snapshot);
            if let Some(old) = old {
                tracing::info!(model = %old.name, "model unloaded to load it in another precision");
                metrics::model_unloaded(&old.name, old.model.info().quantize, "requantized");
            }
        }
        let quantize = quantize.unwrap_or(self.quantize);
        let estimate = weights_size(&source.1.dir);
        self.make_room(match quantize {
            Quantize::None => estimate,
            Quantize::Bf16 => estimate / 2,
            Quantize::Int8 => estimate / 3,
        })?;
        let opts = LoadOptions {
            pool: Some(self.pool.clone()),
            max_seq_length: self.max_sequence_length,
            isa: None,
            quantize,
        };
        let folders: Vec<PathBuf> = self
            .model_dirs
            .iter()
            .cloned()
            .chain(std::iter::once(self.hub.cache_dir()))
            .collect();
        let limits = self.limits;
        let (display, resolved) = source;
        let loaded = blocking(move || load(display, resolved, opts, &folders, limits)).await??;
        let loaded = Arc::new(LoadedModel {
            key: snapshot.clone(),
            in_flight: AtomicUsize::new(0),
            last_used: AtomicU64::new(self.now_ms()),
            ..loaded
        });
        self.models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(snapshot.clone(), loaded.clone());
        self.remember(&key, &snapshot);
        metrics::models_loaded(self.list().len(), self.memory_used());
        // The estimate may have been low: settle the budget with the real size.
        if let Err(e) = self.make_room(0) {
            tracing::warn!(model = %loaded.name, error = %e.message, "loaded past the residency limits");
        }
        let lease = self.lease(&snapshot).ok_or_else(ApiError::internal)?;
        Ok((lease, true))
    }

    /// Unloads least recently used idle models until one more model of `incoming`
    /// bytes fits; 503 (unloading nothing) when it cannot.
    fn make_room(&self, incoming: usize) -> Result<(), ApiError> {
        let Residency {
            max_models,
            memory_budget,
        } = self.residency;
        let mut evicted = Vec::new();
        let result =
            {
                let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
                let default_key = self.target(&self.default_model).ok().and_then(|t| {
                    self.aliases
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(t.key())
                        .cloned()
                });
                let slots = usize::from(incoming > 0);
                let fits = |m: &BTreeMap<String, Arc<LoadedModel>>| {
                    let used: usize = m.values().map(|x| x.memory).sum();
                    m.len() + slots <= max_models && used.saturating_add(incoming) <= memory_budget
                };
                // Which idle models to unload, least recently used first, decided before
                // any is: a load that cannot fit unloads nothing.
                let mut candidates: Vec<(u64, String)> = models
                    .iter()
                    .filter(|(k, m)| m.in_flight() == 0 && Some(*k) != default_key.as_ref())
                    .map(|(k, m)| (m.last_used.load(Ordering::Relaxed), k.clone()))
                    .collect();
                candidates.sort();
                let mut plan = Vec::new();
                let mut left: BTreeMap<String, Arc<LoadedModel>> = models.clone();
                for (_, k) in &candidates {
                    if fits(&left) {
                        break;
                    }
                    left.remove(k);
                    plan.push(k.clone());
                }
                if fits(&left) {
                    for k in plan {
                        if let Some(m) = models.remove(&k) {
                            evicted.push(m);
                        }
                    }
                    Ok(())
                } else {
                    let used: usize = models.values().map(|x| x.memory).sum();
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model_capacity",
                        format!(
                        "no room for another model: {} loaded of MAX_LOADED_MODELS {max_models}, \
                         {} MB of MODEL_MEMORY_BUDGET {} MB in use, {} MB more needed, and the \
                         models that could make room are in use; retry shortly or unload one",
                        models.len(),
                        used >> 20,
                        if memory_budget == usize::MAX { 0 } else { memory_budget >> 20 },
                        incoming >> 20,
                    ),
                    ))
                }
            };
        for m in &evicted {
            tracing::info!(model = %m.name, memory_mb = m.memory >> 20, "model unloaded to make room");
            metrics::model_unloaded(&m.name, m.model.info().quantize, "evicted");
        }
        if !evicted.is_empty() {
            self.aliases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, snap| !evicted.iter().any(|m| &m.key == snap));
            metrics::models_loaded(self.list().len(), self.memory_used());
            drop(evicted);
            release_memory();
        }
        result
    }

    /// Forgets a model; its memory goes back to the system once requests using it end.
    pub fn unload(&self, name: &str) -> Result<Arc<LoadedModel>, ApiError> {
        let found = self.get(name).ok_or_else(|| not_loaded(name))?;
        let removed = self
            .models
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&found.key)
            .ok_or_else(|| not_loaded(name))?;
        self.aliases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, snap| *snap != removed.key);
        tracing::info!(model = %removed.name, "model unloaded");
        metrics::model_unloaded(&removed.name, removed.model.info().quantize, "request");
        metrics::models_loaded(self.list().len(), self.memory_used());
        Ok(removed)
    }
}

/// Runs blocking work (file system, loading) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::internal()
    })
}

/// Bytes of a snapshot's weight files: the estimate of what loading it will hold.
fn weights_size(dir: &Path) -> usize {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                total += std::fs::metadata(&p).map_or(0, |m| m.len());
            }
        }
    }
    total as usize
}

pub fn not_loaded(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_loaded",
        format!("model {name:?} is not loaded (POST /model/load to load it)"),
    )
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!("model {name:?} was not found"),
    )
}

/// The snapshot folder a target resolves to (a download for a Hub model not yet
/// cached), with the name to show for it.
fn resolve(target: Target, hub: &HubOptions) -> Result<(String, Resolved), ApiError> {
    match target {
        Target::Hub { key, id, revision } => {
            let hub = HubOptions {
                revision,
                ..hub.clone()
            };
            let mut resolved =
                embgen_hub::resolve_hub(&id, &hub).map_err(|e| hub_error(&key, e))?;
            resolved.dir = resolved.dir.canonicalize().unwrap_or(resolved.dir);
            Ok((key, resolved))
        }
        Target::Local { key, dir } => Ok((
            key.clone(),
            Resolved {
                id: key,
                dir,
                source: Source::Local,
                revision: None,
            },
        )),
    }
}

/// Loads a resolved folder; errors are cut free of local paths. Failures are counted
/// under one metrics label, so that distinct bad names add no series.
fn load(
    name: String,
    source: Resolved,
    opts: LoadOptions,
    folders: &[PathBuf],
    limits: Limits,
) -> Result<LoadedModel, ApiError> {
    let start = Instant::now();
    tracing::info!(model = %name, source = source.source.name(), "loading model");
    let model = Model::load(&source.dir, opts).map_err(|e| {
        metrics::model_load_failed(start.elapsed());
        let mut paths: Vec<&Path> = vec![source.dir.as_path()];
        paths.extend(folders.iter().map(PathBuf::as_path));
        let message = strip_paths(&e.to_string(), &paths);
        tracing::warn!(model = %name, error = %message, "model failed to load");
        // A load asked for what this machine cannot do (bf16 without AVX512_BF16)
        // is the caller's to change; anything else is the model's fault.
        let (status, code) = match e {
            embgen_engine::Error::Request(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "model_load_failed"),
        };
        ApiError::new(
            status,
            code,
            format!("model {name:?} could not be loaded: {message}"),
        )
    })?;
    let load_time = start.elapsed();
    let info = model.info();
    let memory = info.memory_bytes;
    metrics::model_loaded(&name, info.quantize, load_time, memory);
    tracing::info!(
        model = %name,
        task = info.task,
        architecture = info.architecture,
        dimensions = info.dimensions,
        max_seq_length = info.max_seq_length,
        weights = info.weights_dtype,
        memory_mb = memory / (1 << 20),
        ms = load_time.as_millis() as u64,
        "model loaded"
    );
    let model = Arc::new(model);
    Ok(LoadedModel {
        batcher: Batcher::start(model.clone(), name.clone(), limits),
        key: String::new(),
        name,
        model,
        source,
        load_time,
        loaded_at: SystemTime::now(),
        memory,
        in_flight: AtomicUsize::new(0),
        last_used: AtomicU64::new(0),
    })
}

fn hub_error(id: &str, e: embgen_hub::Error) -> ApiError {
    use embgen_hub::Error as E;
    match e {
        E::InvalidId(_) => bad_name(e.to_string()),
        E::NotCached { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("model {id:?} is not in the local cache, and downloads are off (HF_HUB_OFFLINE)"),
        ),
        E::Download { ref message, .. } if ["404", "401", "403"].iter().any(|c| message.contains(c)) => {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!("model {id:?} was not found on the Hugging Face Hub (a private model needs HF_TOKEN)"),
            )
        }
        E::Download { ref file, .. } => {
            tracing::warn!(model = id, error = %e, "download failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hub_unreachable",
                format!("model {id:?}: downloading {file} from the Hugging Face Hub failed; try again later"),
            )
        }
        E::Cache { ref file, .. } => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "model_load_failed",
            format!("model {id:?}: {file} in the cache is unreadable"),
        ),
    }
}

/// Returns freed heap pages to the system: glibc keeps small freed blocks otherwise,
/// and an unload should show in the process's resident memory.
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(dirs: Vec<PathBuf>) -> Registry {
        let pool = embgen_engine::thread_pool(Some(1)).unwrap();
        let limits = Limits {
            max_batch_size: 8,
            max_batch_tokens: 1024,
            max_queued_tokens: 1 << 16,
            max_queue_wait: Duration::from_secs(10),
        };
        let residency = Residency {
            max_models: 4,
            memory_budget: usize::MAX,
        };
        Registry::new(
            HubOptions::default(),
            dirs,
            pool,
            None,
            limits,
            residency,
            Vec::new(),
            Quantize::None,
            "m".into(),
        )
    }

    #[test]
    fn names_resolve_and_escapes_are_refused() {
        let root = std::env::temp_dir().join(format!("embgen-reg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("mine")).unwrap();
        let root = root.canonicalize().unwrap();
        let r = registry(vec![root.clone()]);
        assert_eq!(
            r.target("all-MiniLM-L6-v2").unwrap().key(),
            "sentence-transformers/all-MiniLM-L6-v2"
        );
        let pinned = r.target("all-MiniLM-L6-v2@v1.2").unwrap();
        assert_eq!(pinned.key(), "sentence-transformers/all-MiniLM-L6-v2@v1.2");
        assert!(matches!(pinned, Target::Hub { revision: Some(ref v), .. } if v == "v1.2"));
        assert!(r.target("a/b@refs/pr/1").is_ok());
        assert!(r
            .target("a/b@0123456789abcdef0123456789abcdef01234567")
            .is_ok());
        // Spellings of one ref that would load the same snapshot again are refused.
        for bad in [
            "a/b@../x",
            "a/b@",
            "a/b@./main",
            "a/b@.//main",
            "a/b@main/",
            "a/b@/main",
            "a/b@ma in",
            "a/b@.hidden",
        ] {
            assert!(r.target(bad).is_err(), "{bad}");
        }
        assert_eq!(
            r.target("BAAI/bge-small-en-v1.5").unwrap().key(),
            "BAAI/bge-small-en-v1.5"
        );
        assert_eq!(r.target("mine").unwrap().key(), "mine");
        assert_eq!(
            r.target(root.join("mine").to_str().unwrap()).unwrap().key(),
            "mine"
        );
        for bad in ["../etc", "mine/../../etc", "/etc", "/", "", "a\nb", "a/b/c"] {
            let e = r.target(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", e.message);
        }
        // A symlink inside MODEL_DIRS that points outside is not a local model.
        let link = root.join("escape");
        let _ = std::os::unix::fs::symlink("/usr", &link);
        assert!(matches!(r.target("escape"), Ok(Target::Hub { .. })));
        assert!(r.target(link.to_str().unwrap()).is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "sentence-transformers/*",
            "sentence-transformers/all-MiniLM-L6-v2"
        ));
        assert!(glob_match("BAAI/bge-*-en-v1.5", "BAAI/bge-small-en-v1.5"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(!glob_match("sentence-transformers/*", "evil/model"));
        assert!(glob_match("*", "anything/at-all"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn allowed_models_lock_the_server_to_a_list() {
        let mut r = registry(Vec::new());
        r.allowed = vec!["sentence-transformers/*".into(), "BAAI/bge-m3".into()];
        assert!(r.allows("all-MiniLM-L6-v2").is_ok());
        assert!(r.allows("all-MiniLM-L6-v2@main").is_ok());
        assert!(r.allows("BAAI/bge-m3").is_ok());
        let e = r.allows("BAAI/bge-small-en-v1.5").unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }
}
