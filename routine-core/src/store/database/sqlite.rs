//! One open SQLite database of a store: its connections, its schema, and
//! the statements the store runs. Nothing here decides what a failure
//! means; [`is_damage`] only tells damage apart for the store to act on.
//!
//! ```text
//! tasks    id INTEGER PRIMARY KEY, name, version    UNIQUE (name, version)
//! entries  task, key, created, entry                PRIMARY KEY (task, key), WITHOUT ROWID
//! uses     task, key, used                          PRIMARY KEY (task, key), WITHOUT ROWID
//! records  kind, id, record                         PRIMARY KEY (kind, id), WITHOUT ROWID
//! removals task, key, at, cause                     PRIMARY KEY (task, key), WITHOUT ROWID
//! ```
//!
//! `records` and `removals` explain results (`why`): what code and which
//! process computed them, and why one is gone. They came after schema 1 and are made by any
//! writer that finds them missing, so the schema's version stays 1 and an
//! older build reads the database as before; a database without them
//! explains less.
//!
//! Entries are kept in one B-tree ordered by task and key: a hit is one
//! search, a write changes one page (an index beside the table would be a
//! second page written at every commit), and a task's results are listed
//! by one range of it.
//!
//! The database runs in WAL mode, never maps the file into memory (a
//! damaged page is then an error SQLite reports, not a fault), checks cells
//! as it reads them (`cell_size_check`), and is opened in defensive mode.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use super::super::{from_unix_nanos, is_read_only, unix_nanos, Durability, Tally, VersionsPage};
use super::checkpoint::Checkpointer;
use crate::key::Key;

/// The database's file, in the store's database folder.
pub(crate) const FILE: &str = "results.sqlite3";

/// `PRAGMA application_id`: "RTNE". A database with another one is not
/// routine's.
const APPLICATION_ID: i32 = 0x5254_4e45;

/// `PRAGMA user_version`: the schema this build writes.
const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS tasks (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, UNIQUE (name, version));
    CREATE TABLE IF NOT EXISTS entries (
        task INTEGER NOT NULL, key BLOB NOT NULL, created INTEGER NOT NULL, entry BLOB NOT NULL,
        PRIMARY KEY (task, key)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS uses (
        task INTEGER NOT NULL, key BLOB NOT NULL, used INTEGER NOT NULL,
        PRIMARY KEY (task, key)) WITHOUT ROWID;
";

/// The tables that explain results (see the module's docs).
const EXPLAINING: &str = "
    CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL, id BLOB NOT NULL, record BLOB NOT NULL,
        PRIMARY KEY (kind, id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS removals (
        task INTEGER NOT NULL, key BLOB NOT NULL, at INTEGER NOT NULL, cause TEXT NOT NULL,
        PRIMARY KEY (task, key)) WITHOUT ROWID;
";

/// What each task version holds, kept by triggers as entries are written
/// and removed, so that the web view's pages and `/metrics` need not read
/// every entry: `tallies` counts results and bytes and keeps the newest
/// write per task (a task of run records has one version per run: the
/// runs page pages through them by `newest`). Made, and counted once, the
/// first time they are asked for (the web view, `/metrics`): a store
/// nobody looks at that way pays nothing for them on its writes. Triggers
/// keep them whichever build writes: an older build's writes are counted
/// too. `INSERT OR REPLACE` does not fire delete triggers, hence the
/// subtraction before an insert that replaces.
const TALLIES: &str = "
    CREATE TABLE tallies (
        task INTEGER PRIMARY KEY, results INTEGER NOT NULL, bytes INTEGER NOT NULL,
        newest INTEGER NOT NULL);
    CREATE TRIGGER tally_replaced BEFORE INSERT ON entries
    WHEN EXISTS (SELECT 1 FROM entries WHERE task = NEW.task AND key = NEW.key)
    BEGIN
        UPDATE tallies SET results = results - 1,
            bytes = bytes - (SELECT length(entry) FROM entries WHERE task = NEW.task AND key = NEW.key)
        WHERE task = NEW.task;
    END;
    CREATE TRIGGER tally_inserted AFTER INSERT ON entries
    BEGIN
        INSERT INTO tallies (task, results, bytes, newest)
        VALUES (NEW.task, 1, length(NEW.entry), NEW.created)
        ON CONFLICT (task) DO UPDATE SET results = results + 1,
            bytes = bytes + excluded.bytes, newest = max(newest, excluded.newest);
    END;
    CREATE TRIGGER tally_deleted AFTER DELETE ON entries
    BEGIN
        UPDATE tallies SET results = results - 1, bytes = bytes - length(OLD.entry)
        WHERE task = OLD.task;
    END;
    INSERT INTO tallies (task, results, bytes, newest)
        SELECT task, count(*), sum(length(entry)), max(created) FROM entries GROUP BY task;
";

/// Whether `error` is a query of an explaining table an older build's
/// database (read only here) lacks: nothing to explain, not damage.
fn is_missing_table(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(_, Some(message)) if message.starts_with("no such table"))
}

/// How long a writer waits for another process's commit before giving up
/// (the write is then a store error, not a stopped program).
const BUSY_FOR: Duration = Duration::from_secs(10);

/// Which file a database was opened from: a file put in its place (the
/// folder removed and made again, or the database set aside) has another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    device: u64,
    inode: u64,
}

impl FileId {
    /// The identity of the file at `path`, if there is one.
    pub(crate) fn of(path: &Path) -> io::Result<Option<FileId>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(FileId::from_metadata(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    #[cfg(unix)]
    fn from_metadata(meta: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            device: meta.dev(),
            inode: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn from_metadata(_: &fs::Metadata) -> FileId {
        FileId {
            device: 0,
            inode: 0,
        }
    }
}

/// What this process may do with a store's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and write.
    Writable,
    /// Read only: the file or its folder cannot be written (a read-only
    /// mount, a published store); why.
    ReadOnly(String),
    /// There is no database to read, and none can be made (why): results
    /// are read from files only.
    Absent(String),
}

/// Why a database could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The file is damaged, or not routine's database: to be set aside.
    Damaged {
        identity: Option<FileId>,
        reason: String,
    },
    /// A newer routine's schema: left alone.
    Newer(i32),
    /// The file system said no.
    Io(&'static str, PathBuf, io::Error),
    /// SQLite said no, for a reason other than damage.
    Sqlite(rusqlite::Error),
}

/// Whether `error` says another connection holds the database for now.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(failure, _)
            if matches!(failure.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Whether SQLite's error says the database's file is damaged, or is not
/// (or no longer) routine's database: anything SQLite reports of the file
/// itself, as opposed to what the system refused (permissions, space,
/// memory, locks held by others, I/O) or a limit of a call. The statements
/// are the store's own, so a schema or a row they do not fit is damage.
pub(crate) fn is_damage(error: &rusqlite::Error) -> bool {
    let rusqlite::Error::SqliteFailure(failure, _) = error else {
        return false;
    };
    !matches!(
        failure.code,
        ErrorCode::PermissionDenied
            | ErrorCode::OperationAborted
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::OperationInterrupted
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::SchemaChanged
            | ErrorCode::TooBig
            | ErrorCode::ApiMisuse
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::AuthorizationForStatementDenied
            | ErrorCode::ParameterOutOfRange
            | ErrorCode::NotFound
    )
}

/// One change a write makes.
pub(crate) enum Change {
    /// An entry created at `created`, replacing any entry and recorded use
    /// of its slot.
    Put {
        name: String,
        version: String,
        key: Key,
        created: SystemTime,
        entry: Vec<u8>,
    },
    /// The slot's entry and recorded use removed; its outcome says whether
    /// the entry was there.
    Remove {
        name: String,
        version: String,
        key: Key,
    },
}

/// A recorded use: the entry's task id and key, and the time.
pub(crate) type Use = (i64, Key, SystemTime);

/// An entry read back: its bytes, its creation time and last recorded use,
/// and its task's id (to record a use by).
pub(crate) struct Row {
    pub(crate) task: i64,
    pub(crate) created: SystemTime,
    pub(crate) used: Option<SystemTime>,
    pub(crate) entry: Vec<u8>,
}

/// One entry of a listing: key, size, creation time and last recorded use.
pub(crate) struct Listed {
    pub(crate) key: Key,
    pub(crate) size: u64,
    pub(crate) created: SystemTime,
    pub(crate) used: Option<SystemTime>,
}

/// A time as the database keeps it: nanoseconds since the Unix epoch.
fn to_column(at: SystemTime) -> i64 {
    i64::try_from(unix_nanos(at)).unwrap_or(i64::MAX)
}

/// The time a column holds (the epoch for a negative one: a damaged
/// database is read, not trusted).
fn from_column(nanos: i64) -> SystemTime {
    from_unix_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// A row of `name, version, results, bytes, newest`.
fn tally_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Tally> {
    Ok(Tally {
        name: Arc::from(row.get::<_, String>(0)?),
        version: Arc::from(row.get::<_, String>(1)?),
        results: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
        bytes: u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        newest: from_column(row.get(4)?),
    })
}

/// Task ids by name, then version: looked up with borrowed names.
type TaskIds = HashMap<Box<str>, HashMap<Box<str>, i64>>;

/// A database and this process's connections to it.
pub(crate) struct Database {
    pub(crate) access: Access,
    /// The file the connections were opened on.
    pub(crate) identity: Option<FileId>,
    path: PathBuf,
    /// Reads (hits, listings), when they have a connection of their own:
    /// with durable commits, so that a commit's sync never delays them.
    /// Else they share the writer's, whose page cache a commit keeps
    /// (another connection's commit empties a reader's cache).
    reader: Option<Mutex<Connection>>,
    /// Writes, one transaction at a time.
    writer: Option<Mutex<Connection>>,
    /// Task ids seen, by name then version. Never removed: a task's row
    /// stays when its entries go.
    tasks: Mutex<TaskIds>,
    /// Checkpoints the writes of `writer`; held for its thread, which
    /// stops when it drops.
    _checkpointer: Option<Checkpointer>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Database {
    /// A store with no database this process can read.
    pub(crate) fn absent(folder: &Path, why: String) -> Database {
        Database {
            access: Access::Absent(why),
            identity: None,
            path: folder.join(FILE),
            reader: None,
            writer: None,
            tasks: Mutex::default(),
            _checkpointer: None,
        }
    }

    /// Opens (creating if need be) the database in `folder`, or reads it
    /// only where the file system allows no more.
    pub(crate) fn open(folder: &Path, durability: Durability) -> Result<Database, OpenError> {
        let path = folder.join(FILE);
        if let Err(e) = fs::create_dir_all(folder) {
            if is_read_only(&e) && !folder.is_dir() {
                return Ok(Database::absent(folder, e.to_string()));
            }
            if !folder.is_dir() {
                return Err(OpenError::Io("create", folder.to_owned(), e));
            }
        }
        // Made here, not by SQLite, so that it follows the umask as result
        // files do (SQLite makes its files 0644); its `-wal` and `-shm`
        // files take its permissions.
        let made = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        match made {
            Ok(_) => {}
            Err(e) if is_read_only(&e) => match path.is_file() {
                true => return Database::open_read_only(path, e.to_string()),
                false => return Ok(Database::absent(folder, e.to_string())),
            },
            Err(e) => return Err(OpenError::Io("create", path, e)),
        }
        let identity = FileId::of(&path).map_err(|e| OpenError::Io("stat", path.clone(), e))?;
        let damaged = OpenError::from_sqlite(identity);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE;
        let mut writer = connect(&path, flags, durability).map_err(&damaged)?;
        if writer
            .is_readonly(rusqlite::MAIN_DB)
            .map_err(OpenError::Sqlite)?
        {
            drop(writer);
            return Database::open_read_only(path, "its file cannot be written".into());
        }
        prepare_schema(&mut writer).map_err(|e| match e {
            SchemaError::Sqlite(e) => damaged(e),
            SchemaError::Foreign(reason) => OpenError::Damaged { identity, reason },
            SchemaError::Newer(version) => OpenError::Newer(version),
        })?;
        let reader = match durability {
            Durability::Fsync => Some(connect(&path, flags, durability).map_err(&damaged)?),
            Durability::Process => None,
        };
        // The hook replaces SQLite's own automatic checkpoints.
        let checkpointer = Checkpointer::new(path.clone());
        writer
            .wal_hook(Some(checkpointer.hook()))
            .map_err(&damaged)?;
        Ok(Database {
            access: Access::Writable,
            identity,
            path,
            reader: reader.map(Mutex::new),
            writer: Some(Mutex::new(writer)),
            tasks: Mutex::default(),
            _checkpointer: Some(checkpointer),
        })
    }

    /// Opens a database this process cannot write: through SQLite's shared
    /// memory when another process has the database open, else as an
    /// immutable file (a read-only mount, where no `-shm` can be made).
    fn open_read_only(path: PathBuf, why: String) -> Result<Database, OpenError> {
        let identity = FileId::of(&path).map_err(|e| OpenError::Io("stat", path.clone(), e))?;
        let check = |conn: &Connection| -> rusqlite::Result<()> {
            let (application, version) = schema_marks(conn)?;
            if application != APPLICATION_ID && application != 0 {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
                    Some("not routine's database".into()),
                ));
            }
            if version > SCHEMA_VERSION {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(format!("schema {version} is newer than this build's")),
                ));
            }
            Ok(())
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = match connect(&path, flags, Durability::Process) {
            Ok(conn) if check(&conn).is_ok() => conn,
            _ => {
                let uri = format!("file:{}?immutable=1", uri_path(&path));
                let damaged = OpenError::from_sqlite(identity);
                let uri = Path::new(&uri);
                let conn = connect(uri, flags | OpenFlags::SQLITE_OPEN_URI, Durability::Process)
                    .map_err(&damaged)?;
                check(&conn).map_err(damaged)?;
                conn
            }
        };
        Ok(Database {
            access: Access::ReadOnly(why),
            identity,
            path,
            reader: Some(Mutex::new(conn)),
            writer: None,
            tasks: Mutex::default(),
            _checkpointer: None,
        })
    }

    /// Whether the file at the database's path is no longer the one it was
    /// opened from: removed, or replaced.
    pub(crate) fn moved(&self) -> bool {
        match FileId::of(&self.path) {
            Ok(found) => found != self.identity,
            // Cannot tell: keep using it.
            Err(_) => false,
        }
    }

    /// The id of a task, if the database has one for it.
    fn task_id(
        &self,
        conn: &Connection,
        name: &str,
        version: &str,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = lock(&self.tasks).get(name).and_then(|v| v.get(version)) {
            return Ok(Some(*id));
        }
        let id = conn
            .prepare_cached("SELECT id FROM tasks WHERE name = ?1 AND version = ?2")?
            .query_row(params![name, version], |row| row.get::<_, i64>(0))
            .optional()?;
        if let Some(id) = id {
            self.remember_task(name, version, id);
        }
        Ok(id)
    }

    fn remember_task(&self, name: &str, version: &str, id: i64) {
        lock(&self.tasks)
            .entry(name.into())
            .or_default()
            .insert(version.into(), id);
    }

    /// The id of a task, made if the database has none (in the write
    /// transaction `conn` is in).
    fn task_id_made(&self, conn: &Connection, name: &str, version: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.task_id(conn, name, version)? {
            return Ok(id);
        }
        conn.prepare_cached("INSERT INTO tasks (name, version) VALUES (?1, ?2)")?
            .execute(params![name, version])?;
        let id = conn.last_insert_rowid();
        self.remember_task(name, version, id);
        Ok(id)
    }

    /// The entry of a slot, if the database holds it.
    pub(crate) fn get(
        &self,
        name: &str,
        version: &str,
        key: &Key,
    ) -> rusqlite::Result<Option<Row>> {
        let Some(reader) = self.reader.as_ref().or(self.writer.as_ref()) else {
            return Ok(None);
        };
        let conn = lock(reader);
        let Some(task) = self.task_id(&conn, name, version)? else {
            return Ok(None);
        };
        // The last use with the entry: one read transaction, not two.
        let mut statement = conn.prepare_cached(
            "SELECT created, entry,
                    (SELECT used FROM uses WHERE uses.task = entries.task AND uses.key = entries.key)
             FROM entries WHERE task = ?1 AND key = ?2",
        )?;
        let row = statement
            .query_row(params![task, key.as_bytes().as_slice()], |row| {
                // Values damage changed into other types are no entry.
                let created = row.get_ref(0)?.as_i64().ok();
                let entry = row.get_ref(1)?.as_blob().ok();
                let used = row.get_ref(2)?.as_i64().ok().map(from_column);
                Ok(created.zip(entry).map(|(created, entry)| Row {
                    task,
                    created: from_column(created),
                    used,
                    entry: entry.to_vec(),
                }))
            })
            .optional()?;
        Ok(row.flatten())
    }

    /// The entries of task `name` (every task for `None`) at `version`
    /// (every version for `None`), sorted by task. The tasks are looked up
    /// by name and version: a store of many runs holds as many task
    /// versions, and listing one run's records reads only its own.
    pub(crate) fn list(
        &self,
        name: Option<&str>,
        version: Option<&str>,
        mut each: impl FnMut(&str, &str, Listed),
    ) -> rusqlite::Result<()> {
        let Some(reader) = self.reader.as_ref().or(self.writer.as_ref()) else {
            return Ok(());
        };
        let conn = lock(reader);
        // One read transaction: the listing is one consistent state.
        conn.execute_batch("BEGIN")?;
        let listed = (|| {
            let row_of = |row: &rusqlite::Row<'_>| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            };
            let tasks: Vec<(i64, String, String)> = match (name, version) {
                (Some(name), Some(version)) => conn
                    .prepare_cached(
                        "SELECT id, name, version FROM tasks WHERE name = ?1 AND version = ?2",
                    )?
                    .query_map(params![name, version], row_of)?
                    .collect::<rusqlite::Result<_>>()?,
                (Some(name), None) => conn
                    .prepare_cached(
                        "SELECT id, name, version FROM tasks WHERE name = ?1 ORDER BY version",
                    )?
                    .query_map(params![name], row_of)?
                    .collect::<rusqlite::Result<_>>()?,
                (None, _) => conn
                    .prepare_cached("SELECT id, name, version FROM tasks ORDER BY name, version")?
                    .query_map([], row_of)?
                    .filter_map(Result::ok)
                    .filter(|(_, _, v)| version.is_none_or(|version| version == v))
                    .collect(),
            };
            let mut statement = conn.prepare_cached(
                "SELECT key, length(entry), created,
                        (SELECT used FROM uses WHERE uses.task = entries.task AND uses.key = entries.key)
                 FROM entries WHERE task = ?1",
            )?;
            for (task, name, version) in tasks {
                let mut rows = statement.query([task])?;
                while let Some(row) = rows.next()? {
                    let key =
                        row.get_ref(0)?.as_blob().ok().and_then(|bytes| {
                            <[u8; 32]>::try_from(bytes).ok().map(Key::from_bytes)
                        });
                    let (Some(key), Ok(size), Ok(created)) =
                        (key, row.get_ref(1)?.as_i64(), row.get_ref(2)?.as_i64())
                    else {
                        continue;
                    };
                    let used = row.get_ref(3)?.as_i64().ok().map(from_column);
                    each(
                        &name,
                        &version,
                        Listed {
                            key,
                            size: size.max(0) as u64,
                            created: from_column(created),
                            used,
                        },
                    );
                }
            }
            Ok(())
        })();
        let ended = conn.execute_batch("COMMIT");
        listed.and(ended)
    }

    /// Makes the changes of several writers and records `uses`, in one
    /// transaction: for each writer, whether each of its changes changed
    /// something. `None` when the database cannot be written.
    pub(crate) fn commit(
        &self,
        writers: &[Vec<Change>],
        uses: &[Use],
    ) -> Option<rusqlite::Result<Vec<Vec<bool>>>> {
        let writer = self.writer.as_ref()?;
        let mut conn = lock(writer);
        Some((|| {
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut record = txn.prepare_cached(
                    "INSERT INTO uses (task, key, used) VALUES (?1, ?2, ?3)
                     ON CONFLICT (task, key) DO UPDATE SET used = max(used, excluded.used)",
                )?;
                for (task, key, at) in uses {
                    record.execute(params![task, key.as_bytes().as_slice(), to_column(*at)])?;
                }
            }
            let mut outcomes = Vec::with_capacity(writers.len());
            for changes in writers {
                let mut changed = Vec::with_capacity(changes.len());
                for change in changes {
                    changed.push(self.apply(&txn, change)?);
                }
                outcomes.push(changed);
            }
            txn.commit()?;
            Ok(outcomes)
        })())
    }

    /// Keeps a record; `None` when the database cannot be written.
    pub(crate) fn put_record(
        &self,
        kind: &str,
        id: &[u8],
        record: &[u8],
    ) -> Option<rusqlite::Result<()>> {
        let conn = lock(self.writer.as_ref()?);
        Some(
            conn.prepare_cached(
                "INSERT OR IGNORE INTO records (kind, id, record) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut insert| insert.execute(params![kind, id, record]))
            .map(drop),
        )
    }

    /// The record of a kind and ID.
    pub(crate) fn get_record(&self, kind: &str, id: &[u8]) -> rusqlite::Result<Option<Vec<u8>>> {
        let Some(reader) = self.reader.as_ref().or(self.writer.as_ref()) else {
            return Ok(None);
        };
        let conn = lock(reader);
        let found = conn
            .prepare_cached("SELECT record FROM records WHERE kind = ?1 AND id = ?2")
            .and_then(|mut select| {
                select
                    .query_row(params![kind, id], |row| row.get::<_, Vec<u8>>(0))
                    .optional()
            });
        match found {
            Err(e) if is_missing_table(&e) => Ok(None),
            found => found,
        }
    }

    /// Each task version's tally, sorted by task; `None` for a database
    /// without tallies that cannot be written (the caller lists instead).
    pub(crate) fn tallies(&self) -> rusqlite::Result<Option<Vec<Tally>>> {
        self.reading_tallies(|conn| {
            conn.prepare_cached(
                "SELECT name, version, results, bytes, newest FROM tallies
                 JOIN tasks ON tasks.id = tallies.task
                 WHERE results > 0 AND substr(name, 1, 8) <> 'routine.' ORDER BY name, version",
            )?
            .query_map([], tally_of_row)?
            .collect()
        })
    }

    /// The versions of task `name` written at or after `since`, newest
    /// first, `take` after `skip`; `None` as for [`Database::tallies`].
    pub(crate) fn newest_versions(
        &self,
        name: &str,
        since: Option<SystemTime>,
        skip: usize,
        take: usize,
    ) -> rusqlite::Result<Option<VersionsPage>> {
        let since = since.map_or(i64::MIN, to_column);
        self.reading_tallies(|conn| {
            // One read transaction: the page and the total agree.
            conn.execute_batch("BEGIN")?;
            let page = (|| {
                let versions = conn
                    .prepare_cached(
                        "SELECT name, version, results, bytes, newest FROM tallies
                         JOIN tasks ON tasks.id = tallies.task
                         WHERE name = ?1 AND results > 0 AND newest >= ?2
                         ORDER BY newest DESC, version LIMIT ?3 OFFSET ?4",
                    )?
                    .query_map(params![name, since, take as i64, skip as i64], tally_of_row)?
                    .collect::<rusqlite::Result<Vec<Tally>>>()?;
                let total: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM tallies JOIN tasks ON tasks.id = tallies.task
                         WHERE name = ?1 AND results > 0 AND newest >= ?2",
                    )?
                    .query_row(params![name, since], |row| row.get(0))?;
                Ok(VersionsPage {
                    versions,
                    total: usize::try_from(total).unwrap_or(0),
                })
            })();
            let ended = conn.execute_batch("COMMIT");
            page.and_then(|page| ended.map(|()| page))
        })
    }

    /// `read` on the reading connection; when the tallies are not made
    /// yet, makes them (if this database can be written) and reads again.
    /// `None` when they are not there and cannot be made.
    fn reading_tallies<T>(
        &self,
        read: impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Option<T>> {
        let Some(reader) = self.reader.as_ref().or(self.writer.as_ref()) else {
            return Ok(None);
        };
        // The reader may be the writer, which making the tallies locks.
        let found = read(&lock(reader));
        match found {
            Err(e) if is_missing_table(&e) => {
                let Some(writer) = &self.writer else {
                    return Ok(None);
                };
                add_tallies(&mut lock(writer))?;
                read(&lock(reader)).map(Some)
            }
            found => found.map(Some),
        }
    }

    /// Notes the removal of entries, by slot, at `at`, with `cause` (JSON);
    /// `None` when the database cannot be written.
    pub(crate) fn note_removals(
        &self,
        slots: &[(&str, &str, &Key)],
        at: SystemTime,
        cause: &str,
    ) -> Option<rusqlite::Result<()>> {
        let mut conn = lock(self.writer.as_ref()?);
        Some((|| {
            let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (name, version, key) in slots {
                let task = self.task_id_made(&txn, name, version)?;
                txn.prepare_cached(
                    "INSERT OR REPLACE INTO removals (task, key, at, cause) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![task, key.as_bytes().as_slice(), to_column(at), cause])?;
            }
            txn.commit()
        })())
    }

    /// The removal noted of a slot's entry: when, and its cause (JSON).
    pub(crate) fn removal(
        &self,
        name: &str,
        version: &str,
        key: &Key,
    ) -> rusqlite::Result<Option<(SystemTime, String)>> {
        let Some(reader) = self.reader.as_ref().or(self.writer.as_ref()) else {
            return Ok(None);
        };
        let conn = lock(reader);
        let Some(task) = self.task_id(&conn, name, version)? else {
            return Ok(None);
        };
        let found = conn
            .prepare_cached("SELECT at, cause FROM removals WHERE task = ?1 AND key = ?2")
            .and_then(|mut select| {
                select
                    .query_row(params![task, key.as_bytes().as_slice()], |row| {
                        Ok((from_column(row.get(0)?), row.get::<_, String>(1)?))
                    })
                    .optional()
            });
        match found {
            Err(e) if is_missing_table(&e) => Ok(None),
            found => found,
        }
    }

    fn apply(&self, txn: &Connection, change: &Change) -> rusqlite::Result<bool> {
        let (task, key) = match change {
            Change::Put {
                name,
                version,
                key,
                created,
                entry,
            } => {
                let task = self.task_id_made(txn, name, version)?;
                let key = key.as_bytes().as_slice();
                txn.prepare_cached(
                    "INSERT OR REPLACE INTO entries (task, key, created, entry)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![task, key, to_column(*created), entry])?;
                (task, key)
            }
            Change::Remove { name, version, key } => {
                let Some(task) = self.task_id(txn, name, version)? else {
                    return Ok(false);
                };
                let key = key.as_bytes().as_slice();
                let removed = txn
                    .prepare_cached("DELETE FROM entries WHERE task = ?1 AND key = ?2")?
                    .execute(params![task, key])?;
                if removed == 0 {
                    return Ok(false);
                }
                (task, key)
            }
        };
        txn.prepare_cached("DELETE FROM uses WHERE task = ?1 AND key = ?2")?
            .execute(params![task, key])?;
        Ok(true)
    }
}

/// A connection to `path` set up as every connection of a store is.
fn connect(path: &Path, flags: OpenFlags, durability: Durability) -> rusqlite::Result<Connection> {
    let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let mut conn = Connection::open_with_flags(path, flags)?;
    configure(&mut conn, durability)?;
    Ok(conn)
}

impl OpenError {
    /// What SQLite's error at opening the file `identity` means.
    fn from_sqlite(identity: Option<FileId>) -> impl Fn(rusqlite::Error) -> OpenError {
        move |e| match is_damage(&e) {
            true => OpenError::Damaged {
                identity,
                reason: e.to_string(),
            },
            false => OpenError::Sqlite(e),
        }
    }
}

fn configure(conn: &mut Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.busy_handler(Some(wait_for_other_writer))?;
    // Never map the file: a damaged or truncated file must be an error
    // SQLite reports, not a fault of the process (nor address space a
    // memory limit refuses).
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "cell_size_check", true)?;
    conn.pragma_update(None, "trusted_schema", false)?;
    // NORMAL in WAL mode: a commit is not synced, the WAL is synced before
    // each checkpoint; a power cut loses the commits since, and never
    // leaves the database inconsistent. FULL syncs every commit.
    let synchronous = match durability {
        Durability::Process => "NORMAL",
        Durability::Fsync => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // The WAL is truncated to this when it starts over, not kept at its
    // largest size (see `checkpoint` for how large it grows).
    conn.pragma_update(None, "journal_size_limit", 2 << 20)?;
    // Pages kept in memory, up to 8 MiB a connection (SQLite's default is
    // 2 MiB): the upper levels of a large store's tree stay cached.
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(())
}

/// The busy handler: waits for another process's commit in short sleeps
/// (SQLite's own starts at a millisecond, longer than most commits), for
/// up to [`BUSY_FOR`].
fn wait_for_other_writer(attempt: i32) -> bool {
    let attempt = attempt.max(0) as u64;
    if waited_before(attempt) >= BUSY_FOR {
        return false;
    }
    std::thread::sleep(Duration::from_micros((50 * (attempt + 1)).min(2000)));
    true
}

/// How long the busy handler has slept before its attempt `attempt`:
/// 50 us, 100 us, ... growing to 2 ms a sleep (about 41 ms over the first
/// 40 attempts), then 2 ms each.
fn waited_before(attempt: u64) -> Duration {
    let growing = attempt.min(40);
    Duration::from_micros(25 * growing * (growing + 1))
        + Duration::from_millis(2 * attempt.saturating_sub(40))
}

fn schema_marks(conn: &Connection) -> rusqlite::Result<(i32, i32)> {
    let application = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok((application, version))
}

enum SchemaError {
    Sqlite(rusqlite::Error),
    Foreign(String),
    Newer(i32),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> SchemaError {
        SchemaError::Sqlite(e)
    }
}

/// Puts the database in WAL mode and makes its tables, unless another
/// process did; refuses a database that is not routine's, or is newer.
fn prepare_schema(conn: &mut Connection) -> Result<(), SchemaError> {
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SchemaError::Foreign(format!(
            "its journal cannot be put in WAL mode (it is in {mode} mode)"
        )));
    }
    let (application, version) = schema_marks(conn)?;
    if application == APPLICATION_ID && version == SCHEMA_VERSION {
        let has_explaining: bool = conn.query_row(
            "SELECT count(*) = 2 FROM sqlite_schema WHERE name IN ('records', 'removals')",
            [],
            |row| row.get(0),
        )?;
        if !has_explaining {
            conn.execute_batch(EXPLAINING)?;
        }
        return Ok(());
    }
    let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (application, version) = schema_marks(&txn)?;
    let empty: bool = txn.query_row("SELECT count(*) = 0 FROM sqlite_schema", [], |row| {
        row.get(0)
    })?;
    match (application, version) {
        (APPLICATION_ID, SCHEMA_VERSION) => return Ok(()),
        (APPLICATION_ID, newer) if newer > SCHEMA_VERSION => return Err(SchemaError::Newer(newer)),
        (0, 0) if empty => {}
        (application, _) => {
            return Err(SchemaError::Foreign(format!(
                "it is not routine's database (application id {application:#x}, schema {version})"
            )))
        }
    }
    txn.execute_batch(SCHEMA)?;
    txn.execute_batch(EXPLAINING)?;
    txn.pragma_update(None, "application_id", APPLICATION_ID)?;
    txn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    txn.commit()?;
    Ok(())
}

/// Adds the tallies to a database that has none, counting what it holds
/// once (one pass over its entries), unless another process did.
fn add_tallies(conn: &mut Connection) -> rusqlite::Result<()> {
    let has = |conn: &Connection| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'tallies'",
            [],
            |row| row.get(0),
        )
    };
    if has(conn)? {
        return Ok(());
    }
    let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if !has(&txn)? {
        txn.execute_batch(TALLIES)?;
    }
    txn.commit()?;
    Ok(())
}

/// `path` as the path of a `file:` URI: characters a URI gives a meaning
/// percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                out.push(*byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_path_escapes_what_a_uri_reads() {
        assert_eq!(uri_path(Path::new("/a b/c?d#e%f")), "/a%20b/c%3Fd%23e%25f");
    }

    #[test]
    fn the_busy_handler_waits_in_short_sleeps_then_gives_up() {
        assert_eq!(waited_before(1), Duration::from_micros(50));
        assert_eq!(waited_before(2), Duration::from_micros(150));
        assert!(waited_before(40) < Duration::from_millis(50));
        assert!(!wait_for_other_writer(10_000));
    }
}
