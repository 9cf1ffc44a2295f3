//! Events: what changed, who did it, when. Kept in SQLite, listed newest
//! first in pages, optionally for one target (`vm:web1`, `user:bob`).

use hostd_api::{Event, Page, Severity};
use rusqlite::{params, Connection, Row};

use crate::error::Result;
use crate::fsutil::now_ms;
use crate::store::Store;

/// Events kept; older ones are pruned now and then.
const KEEP: i64 = 100_000;
/// The default page size, and the largest.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// An event to record.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub severity: Severity,
    pub user: Option<&'a str>,
    pub target: Option<&'a str>,
    pub message: &'a str,
}

impl<'a> NewEvent<'a> {
    pub fn info(kind: &'a str, message: &'a str) -> NewEvent<'a> {
        NewEvent {
            kind,
            severity: Severity::Info,
            user: None,
            target: None,
            message,
        }
    }
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
    pub fn user(mut self, user: Option<&'a str>) -> Self {
        self.user = user;
        self
    }
    pub fn target(mut self, target: &'a str) -> Self {
        self.target = Some(target);
        self
    }
}

pub fn severity_str(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    }
}

fn parse_severity(s: &str) -> Severity {
    match s {
        "warning" => Severity::Warning,
        "error" => Severity::Error,
        _ => Severity::Info,
    }
}

/// Records an event inside the caller's transaction (or connection).
pub fn insert(conn: &Connection, ev: &NewEvent<'_>) -> rusqlite::Result<u64> {
    conn.execute(
        "INSERT INTO events (time_ms, kind, severity, user, target, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            now_ms() as i64,
            ev.kind,
            severity_str(ev.severity),
            ev.user,
            ev.target,
            ev.message
        ],
    )?;
    let id = conn.last_insert_rowid();
    if id % 1000 == 0 {
        conn.execute("DELETE FROM events WHERE id <= ?1", [id - KEEP])?;
    }
    Ok(id as u64)
}

/// Records an event on its own.
pub fn record(store: &Store, ev: &NewEvent<'_>) -> Result<u64> {
    store.with(|c| insert(c, ev))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get::<_, i64>(0)? as u64,
        time_ms: r.get::<_, i64>(1)? as u64,
        kind: r.get(2)?,
        severity: parse_severity(&r.get::<_, String>(3)?),
        user: r.get(4)?,
        target: r.get(5)?,
        message: r.get(6)?,
    })
}

/// Clamps a page size: 0 means the default.
pub fn clamp_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// A page of events, newest first, with ids below `before`.
pub fn list(
    store: &Store,
    before: Option<u64>,
    limit: u32,
    target: Option<&str>,
) -> Result<Page<Event>> {
    let limit = clamp_limit(limit);
    let before = before
        .map(|b| b.min(i64::MAX as u64) as i64)
        .unwrap_or(i64::MAX);
    let mut items = store.with(|c| {
        let mut stmt = c.prepare(
            "SELECT id, time_ms, kind, severity, user, target, message FROM events
             WHERE id < ?1 AND (?2 IS NULL OR target = ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![before, target, limit as i64 + 1], from_row)?;
        rows.collect::<rusqlite::Result<Vec<Event>>>()
    })?;
    let next = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_go_newest_first_and_filter_by_target() {
        let store = Store::memory();
        for i in 0..25 {
            let target = if i % 2 == 0 { "vm:a" } else { "vm:b" };
            let msg = format!("event {i}");
            record(
                &store,
                &NewEvent::info("vm.test", &msg)
                    .target(target)
                    .user(Some("root")),
            )
            .unwrap();
        }
        let p1 = list(&store, None, 10, None).unwrap();
        assert_eq!(p1.items.len(), 10);
        assert_eq!(p1.items[0].message, "event 24");
        assert_eq!(p1.items[0].user.as_deref(), Some("root"));
        let p2 = list(&store, p1.next, 10, None).unwrap();
        assert_eq!(p2.items[0].message, "event 14");
        let p3 = list(&store, p2.next, 10, None).unwrap();
        assert_eq!(p3.items.len(), 5);
        assert_eq!(p3.next, None);
        let a = list(&store, None, 100, Some("vm:a")).unwrap();
        assert_eq!(a.items.len(), 13);
        assert!(a.items.iter().all(|e| e.target.as_deref() == Some("vm:a")));
        assert_eq!(a.next, None);
    }

    #[test]
    fn severity_round_trips() {
        let store = Store::memory();
        record(
            &store,
            &NewEvent::info("vm.crashed", "boom").severity(Severity::Error),
        )
        .unwrap();
        let e = &list(&store, None, 0, None).unwrap().items[0];
        assert_eq!(e.severity, Severity::Error);
        assert_eq!(e.user, None);
        assert!(e.time_ms > 0);
        assert_eq!(clamp_limit(0), DEFAULT_LIMIT);
        assert_eq!(clamp_limit(5000), MAX_LIMIT);
    }
}
