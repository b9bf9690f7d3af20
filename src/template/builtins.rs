//! The operator's built-in templates: the files of the templates folder (shipped in the
//! image, or a mounted ConfigMap), loaded at start and reloaded when they change.
//!
//! Files are named by their path inside the folder (`layouts/base.html`). Hidden entries
//! (names starting with `.`) are skipped: a mounted ConfigMap keeps its real files in
//! `..data`/`..2024_...` folders behind symlinks, and reading those as well would list every
//! template twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// One built-in file may be at most this large (the limit of an EmailTemplate's body).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// All built-in files together: they are held in memory for the life of the process.
pub const MAX_TOTAL_BYTES: u64 = 16 * 1024 * 1024;
/// How many files the folder may hold.
pub const MAX_FILES: usize = 1000;
/// Sub-folder depth; also stops symlink cycles.
const MAX_DEPTH: usize = 8;
/// Changes arriving within this time are handled by one reload (a ConfigMap update or an
/// editor's save touches several files).
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The built-in templates, by path inside the folder (always with `/` separators).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Builtins {
    files: BTreeMap<String, String>,
}

/// Why the templates folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a folder")]
    NotAFolder(String),
    #[error("{path} is {size} bytes; a built-in template may be at most {MAX_FILE_BYTES} bytes")]
    FileTooLarge { path: String, size: u64 },
    #[error(
        "{dir} holds more than {MAX_TOTAL_BYTES} bytes or {MAX_FILES} files of templates; keep only templates there"
    )]
    FolderTooLarge { dir: String },
}

impl Builtins {
    /// Built-ins from (path, source) pairs, e.g. for tests or tools.
    pub fn from_files<P: Into<String>, S: Into<String>>(
        files: impl IntoIterator<Item = (P, S)>,
    ) -> Self {
        Self {
            files: files
                .into_iter()
                .map(|(p, s)| (p.into(), s.into()))
                .collect(),
        }
    }

    /// Reads every file under `dir` (recursively). Files that are not UTF-8 text (images,
    /// say) are skipped with a log line; anything unreadable or too large is an error.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::NotAFolder(dir.display().to_string()));
        }
        let mut loader = Loader {
            root: dir,
            files: BTreeMap::new(),
            total: 0,
        };
        loader.visit(dir, "", 0)?;
        Ok(Self {
            files: loader.files,
        })
    }

    /// The source of a built-in by its path, e.g. `layouts/base.html`.
    pub fn get(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(String::as_str)
    }

    /// Every built-in path, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }
}

struct Loader<'a> {
    root: &'a Path,
    files: BTreeMap<String, String>,
    total: u64,
}

impl Loader<'_> {
    fn visit(&mut self, dir: &Path, prefix: &str, depth: usize) -> Result<(), LoadError> {
        let read_err = |path: &Path, source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        let mut entries: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let entry = entry.map_err(|e| read_err(dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %entry.path().display(), "skipping a built-in template whose name is not UTF-8");
                continue;
            };
            if !name.starts_with('.') {
                entries.push((name, entry.path()));
            }
        }
        entries.sort();
        for (name, path) in entries {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // `metadata` follows symlinks: a mounted ConfigMap's files are symlinks.
            let meta = std::fs::metadata(&path).map_err(|e| read_err(&path, e))?;
            if meta.is_dir() {
                if depth + 1 >= MAX_DEPTH {
                    tracing::warn!(path = %path.display(), "skipping a templates sub-folder nested too deep");
                    continue;
                }
                self.visit(&path, &key, depth + 1)?;
                continue;
            }
            if meta.len() > MAX_FILE_BYTES {
                return Err(LoadError::FileTooLarge {
                    path: path.display().to_string(),
                    size: meta.len(),
                });
            }
            self.total += meta.len();
            if self.total > MAX_TOTAL_BYTES || self.files.len() >= MAX_FILES {
                return Err(LoadError::FolderTooLarge {
                    dir: self.root.display().to_string(),
                });
            }
            let bytes = std::fs::read(&path).map_err(|e| read_err(&path, e))?;
            match String::from_utf8(bytes) {
                Ok(text) => {
                    self.files.insert(key, text);
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "skipping a file in the templates folder that is not UTF-8 text")
                }
            }
        }
        Ok(())
    }
}

/// The folder to load: the one given, else `templates` in the working directory when it
/// exists (the image ships it there), else none.
pub fn folder(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from("templates");
        default.is_dir().then_some(default)
    })
}

/// The current built-ins, shared by every reconcile and swapped whole on a reload, so a
/// render always sees one consistent set.
#[derive(Clone, Debug, Default)]
pub struct SharedBuiltins(Arc<RwLock<Arc<Builtins>>>);

impl SharedBuiltins {
    pub fn new(builtins: Builtins) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(builtins))))
    }

    /// A snapshot; later reloads do not change it.
    pub fn current(&self) -> Arc<Builtins> {
        // The lock only guards a pointer swap; a poisoned lock still holds a whole value.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Installs a new set; returns whether it differs from the previous one.
    pub fn replace(&self, builtins: Builtins) -> bool {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        if **slot == builtins {
            return false;
        }
        *slot = Arc::new(builtins);
        true
    }
}

/// Reloads `dir` into `shared` whenever something under it changes, and calls `on_reload`
/// after a reload that changed the set. A folder that fails to load keeps the previous
/// set (logged), so a half-written update never takes templates away. Runs until the
/// task is dropped.
pub async fn watch(dir: PathBuf, shared: SharedBuiltins, on_reload: impl Fn() + Send + 'static) {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let handler = move |event: notify::Result<notify::Event>| match event {
        // Our own reads show up as Access events; reacting to them would reload forever.
        Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
        Ok(_) => {
            let _ = tx.send(());
        }
        Err(err) => tracing::warn!(error = %err, "watching the templates folder"),
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the templates folder; built-in templates will not be reloaded on change");
            return;
        }
    };
    if let Err(err) = watcher.watch(&dir, RecursiveMode::Recursive) {
        tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the templates folder; built-in templates will not be reloaded on change");
        return;
    }
    while rx.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        let loaded = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || Builtins::load(&dir)).await
        };
        match loaded {
            Ok(Ok(builtins)) => {
                let count = builtins.len();
                if shared.replace(builtins) {
                    tracing::info!(dir = %dir.display(), templates = count, "reloaded the built-in templates");
                    on_reload();
                }
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "reloading the built-in templates failed; keeping the previous ones")
            }
            Err(err) => tracing::warn!(error = %err, "reloading the built-in templates failed"),
        }
    }
    drop(watcher);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_their_path_and_hidden_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("layouts")).unwrap();
        std::fs::create_dir_all(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("layouts/base.html"), "<p>{{ x }}</p>").unwrap();
        std::fs::write(dir.path().join("..data/base.html"), "hidden").unwrap();
        std::fs::write(dir.path().join("logo.png"), [0xff, 0xfe, 0x00]).unwrap();
        let b = Builtins::load(dir.path()).unwrap();
        assert_eq!(b.names().collect::<Vec<_>>(), ["layouts/base.html"]);
        assert_eq!(b.get("layouts/base.html"), Some("<p>{{ x }}</p>"));
    }

    #[test]
    fn an_oversized_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(MAX_FILE_BYTES as usize + 1);
        std::fs::write(dir.path().join("big.html"), big).unwrap();
        let err = Builtins::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("big.html"), "{err}");
    }

    #[test]
    fn the_shipped_templates_folder_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let b = Builtins::load(&dir).unwrap();
        assert!(b.get("layouts/base.html").is_some());
        assert!(b.get("layouts/base.txt").is_some());
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "one").unwrap();
        let shared = SharedBuiltins::new(Builtins::load(dir.path()).unwrap());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(watch(dir.path().to_path_buf(), shared.clone(), move || {
            let _ = tx.send(());
        }));
        // Give the watcher a moment to register before changing the file.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(dir.path().join("a.txt"), "two").unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a reload within 10s");
        assert_eq!(shared.current().get("a.txt"), Some("two"));
        task.abort();
    }
}
