//! Tasks: long operations with a state and a progress, kept in SQLite and
//! waitable (a condition variable is notified on every change).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hostd_api::{ErrorInfo, Page, Task, TaskState};
use rusqlite::{params, OptionalExtension, Row};

use crate::error::{CoreError, ErrorKind, Result};
use crate::events::clamp_limit;
use crate::fsutil::now_ms;
use crate::store::Store;

/// Tasks kept; older ones are pruned now and then.
const KEEP: i64 = 20_000;

/// The task table plus a condition variable for waiters.
#[derive(Default)]
pub struct Tasks {
    /// Bumped on every change.
    generation: Mutex<u64>,
    changed: Condvar,
}

fn parse_state(s: &str) -> TaskState {
    match s {
        "queued" => TaskState::Queued,
        "running" => TaskState::Running,
        "success" => TaskState::Success,
        _ => TaskState::Error,
    }
}

const COLUMNS: &str =
    "id, kind, target, user, state, progress, error_code, error_message, started_ms, finished_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    let code: Option<String> = r.get(6)?;
    let message: Option<String> = r.get(7)?;
    Ok(Task {
        id: r.get::<_, i64>(0)? as u64,
        kind: r.get(1)?,
        target: r.get(2)?,
        user: r.get(3)?,
        state: parse_state(&r.get::<_, String>(4)?),
        progress: r.get::<_, i64>(5)?.clamp(0, 100) as u8,
        error: code.map(|code| ErrorInfo {
            code,
            message: message.unwrap_or_default(),
        }),
        started_ms: r.get::<_, i64>(8)? as u64,
        finished_ms: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
    })
}

pub fn is_done(task: &Task) -> bool {
    matches!(task.state, TaskState::Success | TaskState::Error)
}

impl Tasks {
    fn notify(&self) {
        let mut g = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *g = g.wrapping_add(1);
        self.changed.notify_all();
    }

    /// A new running task.
    pub fn create(
        &self,
        store: &Store,
        kind: &str,
        target: Option<&str>,
        user: &str,
    ) -> Result<Task> {
        let id = store.with(|c| {
            c.execute(
                "INSERT INTO tasks (kind, target, user, state, progress, started_ms)
                 VALUES (?1, ?2, ?3, 'running', 0, ?4)",
                params![kind, target, user, now_ms() as i64],
            )?;
            let id = c.last_insert_rowid();
            if id % 1000 == 0 {
                c.execute("DELETE FROM tasks WHERE id <= ?1", [id - KEEP])?;
            }
            Ok(id)
        })?;
        self.notify();
        get(store, id as u64)
    }

    /// Sets the progress (0–100) of a running task.
    pub fn progress(&self, store: &Store, id: u64, percent: u8) -> Result<()> {
        store.with(|c| {
            c.execute(
                "UPDATE tasks SET progress = ?2 WHERE id = ?1 AND state = 'running'",
                params![id as i64, percent.min(100) as i64],
            )
        })?;
        self.notify();
        Ok(())
    }

    /// Ends a task: success (progress 100) or error.
    pub fn finish(&self, store: &Store, id: u64, result: &Result<()>) -> Result<()> {
        let now = now_ms() as i64;
        store.with(|c| match result {
            Ok(()) => c.execute(
                "UPDATE tasks SET state = 'success', progress = 100, finished_ms = ?2
                 WHERE id = ?1",
                params![id as i64, now],
            ),
            Err(e) => c.execute(
                "UPDATE tasks SET state = 'error', error_code = ?2, error_message = ?3,
                 finished_ms = ?4 WHERE id = ?1",
                params![id as i64, e.kind.code(), e.message, now],
            ),
        })?;
        self.notify();
        Ok(())
    }

    /// Waits until the task is done or `timeout` passed; returns it then.
    pub fn wait(&self, store: &Store, id: u64, timeout: Duration) -> Result<Task> {
        let deadline = Instant::now() + timeout;
        loop {
            let generation = *self.generation.lock().unwrap_or_else(|e| e.into_inner());
            let task = get(store, id)?;
            let now = Instant::now();
            if is_done(&task) || now >= deadline {
                return Ok(task);
            }
            let guard = self.generation.lock().unwrap_or_else(|e| e.into_inner());
            if *guard != generation {
                continue;
            }
            let _ = self
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Marks the tasks a previous keeld left running as failed.
pub fn interrupt_leftovers(store: &Store) -> Result<usize> {
    let n = store.with(|c| {
        c.execute(
            "UPDATE tasks SET state = 'error', error_code = 'internal',
             error_message = 'Interrupted: keeld stopped while the task ran', finished_ms = ?1
             WHERE state IN ('queued', 'running')",
            [now_ms() as i64],
        )
    })?;
    Ok(n)
}

pub fn get(store: &Store, id: u64) -> Result<Task> {
    let id = i64::try_from(id).map_err(|_| CoreError::not_found(format!("No task {id}")))?;
    store
        .with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
        })?
        .ok_or_else(|| CoreError::new(ErrorKind::NotFound, format!("No task {id}")))
}

/// A page of tasks, newest first; only `user`'s when given.
pub fn list(
    store: &Store,
    before: Option<u64>,
    limit: u32,
    user: Option<&str>,
) -> Result<Page<Task>> {
    let limit = clamp_limit(limit);
    let before = before
        .map(|b| b.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX);
    let mut items = store.with(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT {COLUMNS} FROM tasks WHERE id < ?1 AND (?2 IS NULL OR user = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![before, user, limit as i64 + 1], from_row)?;
        rows.collect::<rusqlite::Result<Vec<Task>>>()
    })?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The number of running tasks (metrics).
pub fn running_count(store: &Store) -> Result<u64> {
    store
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running')",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lifecycle_success_and_error() {
        let store = Store::memory();
        let tasks = Tasks::default();
        let t = tasks
            .create(&store, "vm.create", Some("vm:a"), "root")
            .unwrap();
        assert_eq!(t.state, TaskState::Running);
        assert_eq!(t.target.as_deref(), Some("vm:a"));
        tasks.progress(&store, t.id, 40).unwrap();
        assert_eq!(get(&store, t.id).unwrap().progress, 40);
        tasks.finish(&store, t.id, &Ok(())).unwrap();
        let done = get(&store, t.id).unwrap();
        assert_eq!((done.state, done.progress), (TaskState::Success, 100));
        assert!(done.finished_ms.is_some());
        // Progress after the end changes nothing.
        tasks.progress(&store, t.id, 3).unwrap();
        assert_eq!(get(&store, t.id).unwrap().progress, 100);

        let t2 = tasks.create(&store, "vm.clone", None, "bob").unwrap();
        tasks
            .finish(&store, t2.id, &Err(CoreError::conflict("VM a is on")))
            .unwrap();
        let failed = get(&store, t2.id).unwrap();
        assert_eq!(failed.state, TaskState::Error);
        let err = failed.error.unwrap();
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            ("conflict", "VM a is on")
        );
        assert_eq!(get(&store, 999).unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(get(&store, u64::MAX).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn wait_returns_when_done_or_at_the_timeout() {
        let store = Arc::new(Store::memory());
        let tasks = Arc::new(Tasks::default());
        let t = tasks.create(&store, "x", None, "root").unwrap();
        let start = Instant::now();
        let still = tasks
            .wait(&store, t.id, Duration::from_millis(100))
            .unwrap();
        assert_eq!(still.state, TaskState::Running);
        assert!(start.elapsed() >= Duration::from_millis(100));
        let (s2, t2) = (store.clone(), tasks.clone());
        let id = t.id;
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.progress(&s2, id, 50).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            t2.finish(&s2, id, &Ok(())).unwrap();
        });
        let start = Instant::now();
        let done = tasks.wait(&store, t.id, Duration::from_secs(10)).unwrap();
        assert_eq!(done.state, TaskState::Success);
        assert!(start.elapsed() < Duration::from_secs(5));
        th.join().unwrap();
    }

    #[test]
    fn leftovers_are_interrupted_and_lists_page() {
        let store = Store::memory();
        let tasks = Tasks::default();
        for i in 0..5 {
            let user = if i % 2 == 0 { "a" } else { "b" };
            tasks.create(&store, "x", None, user).unwrap();
        }
        assert_eq!(running_count(&store).unwrap(), 5);
        assert_eq!(interrupt_leftovers(&store).unwrap(), 5);
        assert_eq!(running_count(&store).unwrap(), 0);
        let p = list(&store, None, 2, None).unwrap();
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].id, 5);
        assert!(p.items[0]
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("Interrupted"));
        let p2 = list(&store, p.next, 10, None).unwrap();
        assert_eq!(p2.items.iter().map(|t| t.id).collect::<Vec<_>>(), [3, 2, 1]);
        let a = list(&store, None, 10, Some("a")).unwrap();
        assert_eq!(a.items.len(), 3);
    }
}
