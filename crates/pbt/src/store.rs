//! The run's state in an embedded SQLite database (`state.sqlite` in the run folder).
//!
//! Tables: `meta` (config, generation counter, finished flag), `members` (current state of
//! each member), `intervals` (every completed or failed interval with its score and
//! hyperparameters), `policy` (every exploit/explore decision: lineage and policy log).
//! Hyperparameters are stored as JSON text, so the history can be queried with SQLite's JSON
//! functions, e.g. `SELECT member, json_extract(hparams, '$.lr') FROM intervals`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{PbtError, Result};
use crate::report::{IntervalEntry, MemberSummary, PolicyEntry, RunReport, best_member, schedule};
use crate::value::Hyperparams;

/// File name of the database inside a run folder.
pub const DB_FILE: &str = "state.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    units INTEGER NOT NULL,
    intervals INTEGER NOT NULL,
    hparams TEXT NOT NULL,
    checkpoint TEXT,
    score REAL,
    start_score REAL,
    failed INTEGER NOT NULL,
    error TEXT,
    parent INTEGER
);
CREATE TABLE IF NOT EXISTS intervals (
    seq INTEGER PRIMARY KEY,
    member INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    step_start INTEGER NOT NULL,
    step_end INTEGER NOT NULL,
    hparams TEXT NOT NULL,
    score REAL,
    start_score REAL,
    error TEXT,
    checkpoint TEXT,
    UNIQUE (member, generation)
);
CREATE TABLE IF NOT EXISTS policy (
    seq INTEGER PRIMARY KEY,
    member INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    step INTEGER NOT NULL,
    source INTEGER NOT NULL,
    source_score REAL,
    old_score REAL,
    old_hparams TEXT NOT NULL,
    new_hparams TEXT NOT NULL
);
";

/// One database write, applied with others in a single transaction.
#[derive(Clone, Debug)]
pub enum Write {
    /// Insert or replace a member's current state.
    Member(MemberSummary),
    /// Append an interval (its `seq` must be new).
    Interval(IntervalEntry),
    /// Append a decision (its `seq` must be new).
    Policy(PolicyEntry),
    /// Set a meta key.
    Meta(String, String),
}

/// Handle on a run's database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    next_seq: u64,
}

impl Store {
    /// Opens (creating if needed) the database of the run folder `dir`.
    pub fn open(dir: &Path, sync_writes: bool) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|source| PbtError::Io {
            op: "create run folder",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|source| PbtError::Database {
            path: path.clone(),
            source,
        })?;
        let sync = if sync_writes { "FULL" } else { "NORMAL" };
        let mut store = Store {
            conn,
            path,
            next_seq: 1,
        };
        store.exec(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000; {SCHEMA}"
        ))?;
        let max_seq: i64 = store
            .conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(seq) FROM intervals), 0), COALESCE((SELECT MAX(seq) FROM policy), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(|e| store.db(e))?;
        store.next_seq = max_seq as u64 + 1;
        Ok(store)
    }

    /// Opens the database of an existing run folder (an error if there is none).
    pub fn open_existing(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(PbtError::Io {
                op: "open run state (no PBT run in this folder)",
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Store::open(dir, false)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self, source: rusqlite::Error) -> PbtError {
        PbtError::Database {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, message: String) -> PbtError {
        PbtError::Corrupt {
            path: self.path.clone(),
            message,
        }
    }

    fn exec(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(|e| self.db(e))
    }

    /// A fresh sequence number for an interval or policy entry.
    pub fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// The value of a meta key.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Applies `writes` atomically: all or nothing, even if the process is killed.
    pub fn apply(&mut self, writes: &[Write]) -> Result<()> {
        let path = self.path.clone();
        let db = |source| PbtError::Database {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(db)?;
        for w in writes {
            match w {
                Write::Member(m) => tx.execute(
                    "INSERT OR REPLACE INTO members (id, step, units, intervals, hparams, checkpoint, score, start_score, failed, error, parent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        m.member as i64,
                        m.step as i64,
                        m.units as i64,
                        m.intervals as i64,
                        m.hp.to_json(),
                        m.checkpoint,
                        m.score,
                        m.start_score,
                        m.failed,
                        m.error,
                        m.parent.map(|p| p as i64)
                    ],
                ),
                Write::Interval(i) => tx.execute(
                    "INSERT INTO intervals (seq, member, generation, step_start, step_end, hparams, score, start_score, error, checkpoint)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        i.seq as i64,
                        i.member as i64,
                        i.generation as i64,
                        i.step_start as i64,
                        i.step_end as i64,
                        i.hp.to_json(),
                        i.score,
                        i.start_score,
                        i.error,
                        i.checkpoint
                    ],
                ),
                Write::Policy(p) => tx.execute(
                    "INSERT INTO policy (seq, member, generation, step, source, source_score, old_score, old_hparams, new_hparams)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        p.seq as i64,
                        p.member as i64,
                        p.generation as i64,
                        p.step as i64,
                        p.source as i64,
                        p.source_score,
                        p.old_score,
                        p.old_hp.to_json(),
                        p.new_hp.to_json()
                    ],
                ),
                Write::Meta(k, v) => tx.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![k, v],
                ),
            }
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn parse_hp(&self, text: &str, what: &str) -> Result<Hyperparams> {
        Hyperparams::from_json(text).map_err(|e| {
            self.corrupt(format!(
                "{what}: hyperparameters `{text}` are not valid JSON ({e})"
            ))
        })
    }

    /// Every member's current state, in member order.
    pub fn members(&self) -> Result<Vec<MemberSummary>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, step, units, intervals, hparams, checkpoint, score, start_score, failed, error, parent
                 FROM members ORDER BY id",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r: &Row| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, Option<f64>>(7)?,
                    r.get::<_, bool>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                ))
            })
            .map_err(|e| self.db(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    step,
                    units,
                    intervals,
                    hp,
                    checkpoint,
                    score,
                    start_score,
                    failed,
                    error,
                    parent,
                )| {
                    Ok(MemberSummary {
                        member: id as usize,
                        step: step as u64,
                        units: units as u64,
                        intervals: intervals as u64,
                        hp: self.parse_hp(&hp, &format!("member {id}"))?,
                        checkpoint,
                        score,
                        start_score,
                        failed,
                        error,
                        parent: parent.map(|p| p as usize),
                    })
                },
            )
            .collect()
    }

    /// Every recorded interval, in order (optionally only one member's).
    pub fn intervals(&self, member: Option<usize>) -> Result<Vec<IntervalEntry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, member, generation, step_start, step_end, hparams, score, start_score, error, checkpoint
                 FROM intervals WHERE ?1 IS NULL OR member = ?1 ORDER BY seq",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([member.map(|m| m as i64)], |r: &Row| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, Option<f64>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .map_err(|e| self.db(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        rows.into_iter()
            .map(
                |(seq, m, g, s0, s1, hp, score, start_score, error, checkpoint)| {
                    Ok(IntervalEntry {
                        seq: seq as u64,
                        member: m as usize,
                        generation: g as u64,
                        step_start: s0 as u64,
                        step_end: s1 as u64,
                        hp: self.parse_hp(&hp, &format!("interval {seq}"))?,
                        score,
                        start_score,
                        error,
                        checkpoint,
                    })
                },
            )
            .collect()
    }

    /// The policy log (every exploit/explore decision), in order; optionally one member's.
    pub fn policy(&self, member: Option<usize>) -> Result<Vec<PolicyEntry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, member, generation, step, source, source_score, old_score, old_hparams, new_hparams
                 FROM policy WHERE ?1 IS NULL OR member = ?1 ORDER BY seq",
            )
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([member.map(|m| m as i64)], |r: &Row| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                    r.get::<_, Option<f64>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                ))
            })
            .map_err(|e| self.db(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.db(e))?;
        rows.into_iter()
            .map(|(seq, m, g, step, src, ss, os, old, new)| {
                Ok(PolicyEntry {
                    seq: seq as u64,
                    member: m as usize,
                    generation: g as u64,
                    step: step as u64,
                    source: src as usize,
                    source_score: ss,
                    old_score: os,
                    old_hp: self.parse_hp(&old, &format!("policy {seq}"))?,
                    new_hp: self.parse_hp(&new, &format!("policy {seq}"))?,
                })
            })
            .collect()
    }

    /// The hyperparameter schedule (step -> hyperparameters) that produced `member`'s state.
    pub fn schedule(&self, member: usize) -> Result<Vec<crate::report::ScheduleEntry>> {
        Ok(schedule(
            member,
            &self.intervals(None)?,
            &self.policy(None)?,
        ))
    }

    /// The whole run as a report (members, best member and its schedule, policy log).
    pub fn report(&self) -> Result<RunReport> {
        let members = self.members()?;
        let intervals = self.intervals(None)?;
        let policy = self.policy(None)?;
        let best = best_member(&members);
        let best_schedule = best
            .map(|b| schedule(b, &intervals, &policy))
            .unwrap_or_default();
        Ok(RunReport {
            finished: self.meta("finished")?.as_deref() == Some("1"),
            members,
            best,
            best_schedule,
            policy,
            intervals_recorded: intervals.len() as u64,
        })
    }

    /// Writes [`Store::report`] as pretty JSON to `path`.
    pub fn export_json(&self, path: &Path) -> Result<()> {
        let text = self.report()?.to_json();
        std::fs::write(path, text).map_err(|source| PbtError::Io {
            op: "write JSON export",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Folds the write-ahead log into the main file (so its size is the state's size).
    pub fn checkpoint_wal(&mut self) -> Result<()> {
        self.exec("PRAGMA wal_checkpoint(TRUNCATE);")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_round_trip_and_transactions_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), false).unwrap();
        let m = MemberSummary {
            member: 3,
            step: 10,
            units: 10,
            intervals: 1,
            hp: Hyperparams::new()
                .with("lr", 0.1 + 0.2)
                .with("p", vec![0.25, 0.75]),
            checkpoint: Some("checkpoints/x".into()),
            score: Some(-1.5),
            start_score: None,
            failed: false,
            error: None,
            parent: Some(1),
        };
        let seq = s.next_seq();
        let iv = IntervalEntry {
            seq,
            member: 3,
            generation: 0,
            step_start: 0,
            step_end: 10,
            hp: m.hp.clone(),
            score: Some(-1.5),
            start_score: None,
            error: None,
            checkpoint: m.checkpoint.clone(),
        };
        s.apply(&[
            Write::Member(m.clone()),
            Write::Interval(iv.clone()),
            Write::Meta("k".into(), "v".into()),
        ])
        .unwrap();
        // A duplicate interval (same member and generation) fails, and nothing of that
        // transaction is applied.
        let mut m2 = m.clone();
        m2.step = 99;
        let mut dup = iv.clone();
        dup.seq = s.next_seq();
        assert!(s.apply(&[Write::Member(m2), Write::Interval(dup)]).is_err());
        assert_eq!(s.members().unwrap(), vec![m.clone()]);
        assert_eq!(s.intervals(None).unwrap(), vec![iv]);
        assert_eq!(s.meta("k").unwrap().as_deref(), Some("v"));
        drop(s);
        let s = Store::open(dir.path(), false).unwrap();
        assert_eq!(s.members().unwrap()[0].hp.f64("lr"), Some(0.1 + 0.2));
        assert_eq!(s.next_seq, 2);
        let err = Store::open_existing(&dir.path().join("missing"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("state.sqlite"), "{err}");
    }
}
