//! The default store under the faults users meet: a damaged database, a
//! memory limit, a read-only mount, the store's folder removed under a
//! live program, a power cut, a shared folder's umask. Each costs results
//! at most, never the program.
//!
//! Programs that could be killed by a fault run as child processes: this
//! test binary again, selecting the ignored `child_process` entry point
//! with `ROUTINE_CHILD`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{files_under, ReadOnly};
use routine::store::{put_whole, set_aside_databases, DatabaseStore, Reason, Slot, Store};
use routine::{Engine, Key};

/// A small result: a store of `CALLS` of them is damaged and used again.
#[routine::task(name = "numbered", version = "1.0.0")]
async fn numbered(i: u32) -> Vec<u32> {
    expected(i)
}

fn expected(i: u32) -> Vec<u32> {
    (0..i % 64).map(|j| i ^ j).collect()
}

const CALLS: u32 = 2_000;

#[test]
#[ignore = "entry point of the child processes started by the other tests"]
fn child_process() {
    let mode = std::env::var("ROUTINE_CHILD").expect("run by the parent tests only");
    let dir = PathBuf::from(std::env::var("ROUTINE_DIR").unwrap());
    // Warnings to stderr, where the parent reads them.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::local(&dir).unwrap();
    runtime.block_on(engine.scope(async {
        for i in 0..CALLS {
            assert_eq!(numbered(i).await, expected(i), "call {i}");
        }
    }));
    if mode == "modes" {
        // While the store is open: its database's WAL files exist now.
        for path in files_under(&dir) {
            let mode = mode_of(&path);
            println!("\nCHILD mode {:o} {}", mode, path.display());
        }
    }
    let stats = engine.stats();
    println!(
        "\nCHILD hits={} misses={} store_errors={}",
        stats.hits, stats.misses, stats.store_errors
    );
}

/// This test binary as a child making the `CALLS` calls on the store
/// `dir`, run to its end (at most a minute: a hang fails the test).
fn run_child(mode: &str, dir: &Path, shell_prefix: Option<&str>) -> Output {
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--ignored",
        "--exact",
        "child_process",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut command = match shell_prefix {
        // `sh -c 'PREFIX; exec "$0" "$@"' exe args...`
        Some(prefix) => {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("{prefix}; exec \"$0\" \"$@\""))
                .arg(&exe)
                .args(args);
            command
        }
        None => {
            let mut command = Command::new(&exe);
            command.args(args);
            command
        }
    };
    let child = command
        .env("ROUTINE_CHILD", mode)
        .env("ROUTINE_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Read while it runs (a full pipe would stall it), on a thread of its
    // own so that a hang can be told from a slow exit.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().unwrap()));
    match finished.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the child hung on the store {}", dir.display());
        }
    }
}

/// The child's report line, after checking that it exited by itself, with
/// success: no signal, no refusal to start, every value right.
fn report(output: &Output, case: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{case}: the program failed ({:?}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
        .lines()
        .filter(|l| l.starts_with("CHILD hits="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A store holding the `CALLS` results, closed (its WAL checkpointed).
fn filled_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::local(dir.path()).unwrap();
    runtime.block_on(engine.scope(async {
        for i in 0..CALLS {
            numbered(i).await;
        }
    }));
    drop(engine);
    dir
}

fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for item in fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            copy_folder(&item.path(), &target);
        } else {
            fs::copy(item.path(), &target).unwrap();
        }
    }
}

#[cfg(unix)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A small deterministic generator (xorshift64*), for damage that is the
/// same in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as usize % n.max(1)
    }
}

const PAGE: usize = 4096;

fn flip_bits(bytes: &mut [u8], count: usize, rng: &mut Rng) {
    for _ in 0..count {
        let at = rng.below(bytes.len());
        bytes[at] ^= 1 << rng.below(8);
    }
}

/// A change to the files of a database folder.
type Damage = Box<dyn Fn(&Path)>;

/// The ways a database's files are damaged: each edits the copy of a
/// closed store's `.database` folder.
fn damages() -> Vec<(String, Damage)> {
    fn edit(file: &'static str, change: impl Fn(&mut Vec<u8>) + 'static) -> Damage {
        Box::new(move |folder: &Path| {
            let path = folder.join(file);
            let mut bytes = fs::read(&path).unwrap_or_default();
            change(&mut bytes);
            fs::write(&path, bytes).unwrap();
        })
    }
    let data = "results.sqlite3";
    let mut cases: Vec<(String, Damage)> = Vec::new();
    for bits in [1usize, 8, 64, 512] {
        cases.push((
            format!("{bits} bits flipped"),
            edit(data, move |b| flip_bits(b, bits, &mut Rng(bits as u64 + 7))),
        ));
    }
    cases.push((
        "a quarter of its pages hit".into(),
        edit(data, |b| {
            let mut rng = Rng(99);
            for page in (0..b.len() / PAGE).filter(|p| p % 4 == 1) {
                let at = page * PAGE + rng.below(PAGE - 16);
                b[at..at + 16].fill(0x5a);
            }
        }),
    ));
    cases.push((
        "cut to half its length".into(),
        edit(data, |b| b.truncate(b.len() / 2)),
    ));
    cases.push((
        "its first two pages zeroed".into(),
        edit(data, |b| b[..2 * PAGE].fill(0)),
    ));
    cases.push((
        "its bytes replaced".into(),
        edit(data, |b| {
            let mut rng = Rng(5);
            b.iter_mut().for_each(|x| *x = rng.below(256) as u8)
        }),
    ));
    cases.push(("emptied".into(), edit(data, Vec::clear)));
    cases.push((
        "its shared-memory file replaced with garbage".into(),
        edit("results.sqlite3-shm", |b| *b = vec![0xa5; 32 * 1024]),
    ));
    cases.push((
        "its WAL replaced with garbage".into(),
        edit("results.sqlite3-wal", |b| *b = vec![0x3c; 5 * PAGE]),
    ));
    // The random-flip loop: damage of every size at every place.
    for seed in 0..24u64 {
        cases.push((
            format!("random flips, seed {seed}"),
            edit(data, move |b| {
                let mut rng = Rng(seed * 31 + 1);
                let count = 1 + rng.below(256);
                flip_bits(b, count, &mut rng)
            }),
        ));
    }
    cases
}

/// Every damage to the database's files leaves a program that runs every
/// call with the right value: no signal, no hang, no refusal to start.
#[test]
fn a_damaged_database_costs_its_results_never_the_program() {
    let filled = filled_store();
    let mut set_aside = 0;
    for (case, damage) in damages() {
        let copy = tempfile::tempdir().unwrap();
        copy_folder(filled.path(), copy.path());
        damage(&copy.path().join(".database"));
        let output = run_child("calls", copy.path(), None);
        let line = report(&output, &case);
        assert!(line.starts_with("CHILD hits="), "{case}: {line}");
        let aside = set_aside_databases(copy.path());
        if let Some(first) = aside.first() {
            set_aside += 1;
            assert_eq!(first.reason, Reason::Damaged, "{case}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("a damaged database was set aside in")
                    && stderr.contains(&first.path.display().to_string()),
                "{case}: the warning names where it went: {stderr}"
            );
            assert!(first.path.join("WHY").is_file(), "{case}");
        }
        // Used again, the store works: what was set aside is computed
        // again, and then every call is a hit.
        let second = run_child("calls", copy.path(), None);
        let again = report(&second, &case);
        assert!(
            again.ends_with("store_errors=0"),
            "{case}: {again}\n{}",
            String::from_utf8_lossy(&second.stderr)
        );
        let third = report(&run_child("calls", copy.path(), None), &case);
        assert_eq!(
            third,
            format!("CHILD hits={CALLS} misses=0 store_errors=0"),
            "{case}"
        );
    }
    // Damage SQLite cannot miss (a replaced header, garbage) was set aside.
    assert!(set_aside >= 4, "only {set_aside} databases set aside");
}

/// A program under a 2 GiB limit of address space (as batch schedulers
/// set it) opens the default store and works.
#[test]
fn the_default_store_works_under_a_memory_limit() {
    let filled = filled_store();
    let output = run_child("calls", filled.path(), Some("ulimit -v 2097152"));
    assert_eq!(
        report(&output, "ulimit -v 2097152"),
        format!("CHILD hits={CALLS} misses=0 store_errors=0")
    );
    let fresh = tempfile::tempdir().unwrap();
    let output = run_child("calls", fresh.path(), Some("ulimit -v 2097152"));
    assert_eq!(
        report(&output, "ulimit -v 2097152, a new store"),
        format!("CHILD hits=0 misses={CALLS} store_errors=0")
    );
}

/// A store on a read-only mount is read: hits return stored values,
/// misses run, and count a store error each, since nothing can be written.
#[test]
fn a_read_only_store_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let engine = Engine::local(dir.path()).unwrap();
    runtime.block_on(engine.scope(async {
        for i in 0..CALLS / 2 {
            numbered(i).await;
        }
    }));
    drop(engine);
    let read_only = ReadOnly::of(dir.path());
    let store = DatabaseStore::open(&read_only.path).unwrap();
    assert!(store.read_only().is_some());
    assert_eq!(
        store.list(None, None).unwrap().len(),
        CALLS as usize / 2,
        "its results are listed"
    );
    drop(store);
    let output = run_child("calls", &read_only.path, None);
    let half = CALLS / 2;
    assert_eq!(
        report(&output, "read-only"),
        format!("CHILD hits={half} misses={half} store_errors={half}")
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("read-only"),
        "the log says the store cannot be written: {stderr}"
    );
}

/// The store's folder removed under a live engine (`rm -rf .routine`):
/// the engine makes it again, and the next process finds what was
/// computed after.
#[tokio::test]
async fn a_removed_store_is_made_again_by_a_live_engine() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(".routine");
    let engine = Engine::local(&root).unwrap();
    engine.scope(numbered(1)).await;
    fs::remove_dir_all(&root).unwrap();
    engine.scope(numbered(2)).await;
    assert_eq!(engine.stats().store_errors, 0);
    drop(engine);

    let next = Engine::local(&root).unwrap();
    next.scope(numbered(2)).await;
    assert_eq!((next.stats().hits, next.stats().misses), (1, 0));
}

/// A database moved away under a live store (as another process sets a
/// damaged one aside) is noticed: the store opens the one now in its place.
#[test]
fn a_database_replaced_under_a_live_store_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let first = DatabaseStore::open(dir.path()).unwrap();
    let key = |n: u8| Key::of("numbered", "1.0.0", &n).unwrap();
    let keys = [key(1), key(2)];
    let slot = |key| Slot {
        name: "numbered",
        version: "1.0.0",
        key,
    };
    put_whole(&first, &slot(&keys[0]), b"one").unwrap();
    fs::rename(
        dir.path().join(".database"),
        dir.path().join(".database.moved"),
    )
    .unwrap();
    let second = DatabaseStore::open(dir.path()).unwrap();
    put_whole(&second, &slot(&keys[1]), b"two").unwrap();
    // The first store reads what the second wrote, and writes where it
    // reads.
    assert!(first.get(&slot(&keys[1])).unwrap().is_some());
    put_whole(&first, &slot(&keys[0]), b"one again").unwrap();
    assert!(second.get(&slot(&keys[0])).unwrap().is_some());
}

/// The files of a store follow the umask, so that a store in a team's
/// folder (umask 002) is the team's, as its result files are.
#[cfg(unix)]
#[test]
fn the_files_of_a_store_follow_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_child("modes", dir.path(), Some("umask 002"));
    report(&output, "umask 002");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let modes: Vec<(&str, &str)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CHILD mode "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(
        modes
            .iter()
            .any(|(_, path)| path.ends_with("results.sqlite3-wal")),
        "{modes:?}"
    );
    for (mode, path) in modes {
        let dir_like = Path::new(path).is_dir() || path == dir.path().to_str().unwrap();
        let wanted = if dir_like { "775" } else { "664" };
        // The test's own temporary folder is made 0700 by tempfile.
        if path == dir.path().to_str().unwrap() {
            continue;
        }
        assert_eq!(mode, wanted, "{path}");
    }
}

/// A power cut, simulated: the files as a crash of the machine can leave
/// them, with the writes made since the last sync lost, cut short or
/// reordered. Whatever survives, the store opens (nothing set aside),
/// every result synced before is there, and every other result is there
/// whole or not at all.
#[test]
fn a_power_cut_loses_at_most_the_results_since_the_last_checkpoint() {
    const SYNCED: u32 = 300;
    // Fewer WAL pages than a checkpoint waits for: none runs meanwhile.
    const UNSYNCED: u32 = 40;
    let value = |i: u32| {
        format!("result {i}; ")
            .repeat(8 + i as usize % 16)
            .into_bytes()
    };
    let keys: Vec<Key> = (0..SYNCED + UNSYNCED)
        .map(|i| Key::of("numbered", "1.0.0", &i).unwrap())
        .collect();
    let slot = |i: u32| Slot {
        name: "numbered",
        version: "1.0.0",
        key: &keys[i as usize],
    };
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join(".database/results.sqlite3");
    let wal_path = dir.path().join(".database/results.sqlite3-wal");
    {
        // Closed, a store has checkpointed (and synced) every result.
        let store = DatabaseStore::open(dir.path()).unwrap();
        for i in 0..SYNCED {
            put_whole(&store, &slot(i), &value(i)).unwrap();
        }
    }
    let synced = fs::read(&database).unwrap();
    let wal = {
        let store = DatabaseStore::open(dir.path()).unwrap();
        for i in SYNCED..SYNCED + UNSYNCED {
            put_whole(&store, &slot(i), &value(i)).unwrap();
        }
        assert_eq!(fs::read(&database).unwrap(), synced, "a checkpoint ran");
        fs::read(&wal_path).unwrap()
    };
    let marker = fs::read(dir.path().join(".routine-store")).unwrap();

    // The database as a checkpoint of the whole WAL leaves it.
    let checkpointed = {
        let copy = tempfile::tempdir().unwrap();
        fs::create_dir(copy.path().join(".database")).unwrap();
        fs::write(copy.path().join(".routine-store"), &marker).unwrap();
        fs::write(copy.path().join(".database/results.sqlite3"), &synced).unwrap();
        fs::write(copy.path().join(".database/results.sqlite3-wal"), &wal).unwrap();
        drop(DatabaseStore::open(copy.path()).unwrap());
        fs::read(copy.path().join(".database/results.sqlite3")).unwrap()
    };
    assert_ne!(checkpointed, synced);

    const FRAME: usize = 24 + PAGE;
    let frames = (wal.len() - 32) / FRAME;
    assert!(frames > 4, "{frames} frames");
    let frame = |k: usize| 32 + k * FRAME..32 + (k + 1) * FRAME;
    let mut images: Vec<(String, Vec<u8>, Vec<u8>, bool)> = vec![
        (
            "every write reached the disk".into(),
            synced.clone(),
            wal.clone(),
            true,
        ),
        (
            "no write reached the disk".into(),
            synced.clone(),
            Vec::new(),
            false,
        ),
    ];
    for cut in [
        10,
        32,
        100,
        FRAME + 40,
        wal.len() / 3,
        wal.len() / 2,
        wal.len() - 1,
    ] {
        images.push((
            format!("cut at {cut}"),
            synced.clone(),
            wal[..cut].to_vec(),
            false,
        ));
    }
    for k in [0, 1, frames / 2, frames - 1] {
        let mut lost = wal.clone();
        lost[frame(k)].fill(0);
        images.push((format!("frame {k} lost"), synced.clone(), lost, false));
    }
    for k in [0, frames / 3, frames - 2] {
        let mut swapped = wal.clone();
        let (a, b) = (wal[frame(k)].to_vec(), wal[frame(k + 1)].to_vec());
        swapped[frame(k)].copy_from_slice(&b);
        swapped[frame(k + 1)].copy_from_slice(&a);
        images.push((
            format!("frames {k} and {} reordered", k + 1),
            synced.clone(),
            swapped,
            false,
        ));
    }
    // A checkpoint cut short: the WAL was synced before it began; some of
    // the pages it copied reached the database, others did not.
    for keep in [2, 3] {
        let mixed: Vec<u8> = checkpointed
            .chunks(PAGE)
            .enumerate()
            .flat_map(|(page, new)| {
                let old = synced.get(page * PAGE..(page + 1) * PAGE);
                match (page % keep == 0, old) {
                    (false, Some(old)) => old.to_vec(),
                    _ => new.to_vec(),
                }
            })
            .collect();
        images.push((
            format!("a checkpoint cut short ({keep})"),
            mixed,
            wal.clone(),
            true,
        ));
    }

    for (case, data, wal, all_there) in images {
        let image = tempfile::tempdir().unwrap();
        fs::create_dir(image.path().join(".database")).unwrap();
        fs::write(image.path().join(".routine-store"), &marker).unwrap();
        fs::write(image.path().join(".database/results.sqlite3"), &data).unwrap();
        if !wal.is_empty() {
            fs::write(image.path().join(".database/results.sqlite3-wal"), &wal).unwrap();
        }
        let store = DatabaseStore::open(image.path()).unwrap();
        let read = |i: u32| {
            store
                .get(&slot(i))
                .unwrap()
                .map(|found| found.into_bytes().unwrap())
        };
        for i in 0..SYNCED {
            assert_eq!(read(i), Some(value(i)), "{case}: synced result {i}");
        }
        let mut there = 0;
        for i in SYNCED..SYNCED + UNSYNCED {
            match read(i) {
                Some(bytes) => {
                    assert_eq!(bytes, value(i), "{case}: result {i}");
                    there += 1;
                }
                None => assert!(!all_there, "{case}: result {i} lost"),
            }
        }
        assert!(
            set_aside_databases(image.path()).is_empty(),
            "{case}: nothing is damaged by a power cut"
        );
        put_whole(&store, &slot(0), b"written after").unwrap();
        eprintln!("{case}: {there} of {UNSYNCED} unsynced results there");
    }
}
