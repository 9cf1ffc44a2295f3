//! The inventory's schema, as a list of migrations: migration N (1-based)
//! takes the database from `user_version` N-1 to N. Never edit a shipped
//! migration; add one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE datastores (
        name TEXT PRIMARY KEY,
        path TEXT NOT NULL UNIQUE
    );
    CREATE TABLE vms (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT NOT NULL UNIQUE,
        datastore    TEXT NOT NULL REFERENCES datastores(name),
        folder       TEXT NOT NULL,
        autostart    INTEGER NOT NULL DEFAULT 0,
        -- The last config read or written (used when NAME.toml is unreadable).
        config_json  TEXT NOT NULL,
        -- How the VMM last ended: 'poweredOff', 'stopped', 'crashed' or NULL.
        last_exit    TEXT,
        last_exit_message TEXT,
        created_ms   INTEGER NOT NULL,
        UNIQUE (datastore, folder)
    );
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE permissions (
        user   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        entity TEXT NOT NULL,
        role   TEXT NOT NULL,
        PRIMARY KEY (user, entity)
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL,
        target        TEXT,
        user          TEXT NOT NULL,
        state         TEXT NOT NULL,
        progress      INTEGER NOT NULL DEFAULT 0,
        error_code    TEXT,
        error_message TEXT,
        started_ms    INTEGER NOT NULL,
        finished_ms   INTEGER
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        time_ms  INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        severity TEXT NOT NULL,
        user     TEXT,
        target   TEXT,
        message  TEXT NOT NULL
    );
    CREATE INDEX events_target ON events(target, id);
    CREATE INDEX tasks_user ON tasks(user, id);
    "#,
    // 2: virtual networking. A switch's bridge is `keelbr<id>`; uplinks
    // are a JSON array of host NIC names; a port group's policy is
    // hostd_api::NetPolicy as JSON.
    r#"
    CREATE TABLE switches (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        name       TEXT NOT NULL UNIQUE,
        mtu        INTEGER NOT NULL,
        uplinks    TEXT NOT NULL,
        nat_subnet TEXT,
        dhcp       INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE port_groups (
        name        TEXT PRIMARY KEY,
        switch_id   INTEGER NOT NULL REFERENCES switches(id),
        vlan        INTEGER NOT NULL,
        policy_json TEXT NOT NULL
    );
    "#,
];
