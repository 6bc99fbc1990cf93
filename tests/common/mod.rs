//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use routine::Engine;

/// A fresh file-store engine in its own temporary directory.
pub fn local_engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::local(dir.path()).unwrap();
    (dir, engine)
}

/// Collects what `tracing` prints, for tests that check warnings and spans.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Installs a subscriber printing into this buffer for the current thread
    /// until the guard drops.
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A folder made read-only for the test's life: a read-only bind mount
/// when run as root (who ignores permissions), else its permissions.
pub struct ReadOnly {
    mounted: Option<PathBuf>,
    /// The folder, read-only.
    pub path: PathBuf,
}

impl ReadOnly {
    pub fn of(dir: &Path) -> ReadOnly {
        #[cfg(unix)]
        let root = running_as_root();
        #[cfg(not(unix))]
        let root = false;
        if root {
            let target = dir.with_extension("read-only");
            fs::create_dir_all(&target).unwrap();
            let mount = |args: &[&str]| {
                let status = Command::new("mount").args(args).status().unwrap();
                assert!(
                    status.success(),
                    "mount {args:?} failed: run the tests as root with mount(8), or as a user"
                );
            };
            mount(&["--bind", dir.to_str().unwrap(), target.to_str().unwrap()]);
            mount(&["-o", "remount,bind,ro", target.to_str().unwrap()]);
            return ReadOnly {
                mounted: Some(target.clone()),
                path: target,
            };
        }
        for path in files_under(dir) {
            let mut permissions = fs::metadata(&path).unwrap().permissions();
            permissions.set_readonly(true);
            fs::set_permissions(&path, permissions).unwrap();
        }
        ReadOnly {
            mounted: None,
            path: dir.to_owned(),
        }
    }
}

#[cfg(unix)]
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process just made is this process's user.
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid() == 0
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        match &self.mounted {
            Some(target) => {
                let _ = Command::new("umount").arg(target).status();
                let _ = fs::remove_dir(target);
            }
            // Writable again, so that the test's folder can be removed.
            None => {
                for path in files_under(&self.path) {
                    if let Ok(meta) = fs::metadata(&path) {
                        let mut permissions = meta.permissions();
                        #[allow(clippy::permissions_set_readonly_false)]
                        permissions.set_readonly(false);
                        let _ = fs::set_permissions(&path, permissions);
                    }
                }
            }
        }
    }
}

/// `dir` and every file and folder under it.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_owned()];
    for item in fs::read_dir(dir).unwrap().flatten() {
        match item.file_type().unwrap().is_dir() {
            true => out.extend(files_under(&item.path())),
            false => out.push(item.path()),
        }
    }
    out
}

/// The examples' binaries, built with this test's features (`distributed`,
/// `ui`), so that every test of one run uses the same build (a no-op when
/// they are fresh).
pub fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "--example",
                "train",
                "--example",
                "quotes",
            ])
            .args(["--example", "data_parallel"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        let features: Vec<&str> = [
            cfg!(feature = "distributed").then_some("distributed"),
            cfg!(feature = "ui").then_some("ui"),
            cfg!(feature = "telemetry").then_some("telemetry"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        let status = build
            .status()
            .expect("cannot run cargo to build the examples");
        assert!(status.success(), "building the examples failed");
        // target/debug/deps/<test>-<hash> -> target/debug/examples
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().join("examples")
    });
    dir.join(name)
}
