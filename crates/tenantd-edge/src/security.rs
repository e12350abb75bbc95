//! Security events, folded (docs/api.md): repeats of the same event (type, principal,
//! tenant asked for) within [`FOLD_WINDOW`] of the first add to the first one's `count`
//! instead of writing a new event, so a flood of refused requests cannot grow the audit
//! trail (or the log) without bound.
//!
//! The first event of a fold is written at once and logged; its repeats are counted in
//! memory and added to the stored event's `count` by [`SecurityLog::take_repeats`],
//! which the server calls every second and at shutdown. A principal that asks for many
//! different tenants gets at most [`MAX_ASKED`] folds of its own per window; further
//! tenants fold into one more, asked for `*`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after the first event its repeats fold into it.
pub const FOLD_WINDOW: Duration = Duration::from_secs(60);
/// Distinct tenants asked for that fold apart, per principal and type; the rest fold
/// together under `*`.
pub const MAX_ASKED: usize = 10;
/// Folds held at most; past it, new events fold into one overflow fold per type.
const MAX_FOLDS: usize = 100_000;

/// What a fold is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    action: &'static str,
    actor: String,
    asked: String,
}

#[derive(Debug)]
struct Fold {
    since: Instant,
    /// The stored event, once written (`None` while its write is in flight, or if it
    /// failed: then repeats are counted but have nowhere to go).
    event: Option<i64>,
    /// Repeats not yet added to the stored event.
    unwritten: u64,
}

/// Whether an event is the first of its fold (write it) or a repeat (counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    /// Write the event, then hand its id to [`SecurityLog::written`] with this token.
    First(FoldToken),
    /// Folded into an earlier event.
    Repeat,
}

/// Names the fold a first event opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldToken(FoldKey);

impl FoldToken {
    /// Whether the fold gathers the tenants past [`MAX_ASKED`] (or past the table's
    /// size), not one tenant: its event says so.
    pub fn gathers_many(&self) -> bool {
        self.0.asked == "*"
    }
}

#[derive(Default)]
struct Folds {
    open: HashMap<FoldKey, Fold>,
    /// Folds open per (type, principal): what [`MAX_ASKED`] counts.
    per_principal: HashMap<(&'static str, String), usize>,
}

/// The folds of this node.
#[derive(Default)]
pub struct SecurityLog {
    folds: Mutex<Folds>,
}

impl SecurityLog {
    /// Notes an event of `action` by `actor` asking for tenant `asked`, at `now`.
    pub fn note(&self, action: &'static str, actor: &str, asked: &str, now: Instant) -> Noted {
        let mut f = self.folds.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = FoldKey {
            action,
            actor: actor.to_string(),
            asked: asked.to_string(),
        };
        if !f.open.contains_key(&key) {
            let principal = (action, key.actor.clone());
            if f.per_principal.get(&principal).copied().unwrap_or(0) >= MAX_ASKED {
                key.asked = "*".into();
            }
            if f.open.len() >= MAX_FOLDS {
                key.actor = "*".into();
                key.asked = "*".into();
            }
        }
        if let Some(fold) = f.open.get_mut(&key) {
            if now.duration_since(fold.since) < FOLD_WINDOW {
                fold.unwritten += 1;
                return Noted::Repeat;
            }
        }
        // A new fold (or one whose window ended: its unwritten repeats are lost only if
        // no flush ran for a whole window, which the server's every-second flush rules out).
        let was_open = f
            .open
            .insert(
                key.clone(),
                Fold {
                    since: now,
                    event: None,
                    unwritten: 0,
                },
            )
            .is_some();
        if !was_open {
            *f.per_principal.entry((action, key.actor.clone())).or_default() += 1;
        }
        Noted::First(FoldToken(key))
    }

    /// The first event of a fold was stored as `event` (or could not be: `None`).
    pub fn written(&self, token: FoldToken, event: Option<i64>) {
        let mut f = self.folds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fold) = f.open.get_mut(&token.0) {
            fold.event = event;
        }
    }

    /// The repeats to add to stored events, `(event id, repeats)`, as of `now`; folds
    /// whose window has ended are closed (their last repeats included).
    pub fn take_repeats(&self, now: Instant) -> Vec<(i64, u64)> {
        let mut f = self.folds.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (key, fold) in f.open.iter_mut() {
            if let (Some(id), n) = (fold.event, fold.unwritten) {
                if n > 0 {
                    out.push((id, n));
                    fold.unwritten = 0;
                }
            }
            // A fold whose first write is still in flight stays until it lands.
            let landed = fold.event.is_some() || fold.unwritten == 0;
            if now.duration_since(fold.since) >= FOLD_WINDOW && landed {
                ended.push(key.clone());
            }
        }
        for key in ended {
            f.open.remove(&key);
            let principal = (key.action, key.actor);
            if let Some(n) = f.per_principal.get_mut(&principal) {
                *n -= 1;
                if *n == 0 {
                    f.per_principal.remove(&principal);
                }
            }
        }
        out
    }

    /// Folds open now.
    pub fn open(&self) -> usize {
        self.folds.lock().unwrap_or_else(|e| e.into_inner()).open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "security.cross_tenant_attempt";

    fn first(n: Noted) -> FoldToken {
        match n {
            Noted::First(t) => t,
            Noted::Repeat => panic!("expected a first event"),
        }
    }

    #[test]
    fn repeats_within_the_window_fold_into_the_first() {
        let log = SecurityLog::default();
        let t0 = Instant::now();
        let tok = first(log.note(A, "key_1", "beta", t0));
        assert_eq!(
            log.note(A, "key_1", "beta", t0),
            Noted::Repeat,
            "before its write lands"
        );
        log.written(tok, Some(7));
        for s in 1..300 {
            assert_eq!(
                log.note(A, "key_1", "beta", t0 + Duration::from_millis(s * 100)),
                Noted::Repeat
            );
        }
        assert_eq!(log.take_repeats(t0 + Duration::from_secs(30)), vec![(7, 300)]);
        assert_eq!(log.take_repeats(t0 + Duration::from_secs(31)), vec![], "taken once");
        // Another principal, tenant or type is an event of its own.
        assert!(matches!(log.note(A, "key_2", "beta", t0), Noted::First(_)));
        assert!(matches!(log.note(A, "key_1", "gamma", t0), Noted::First(_)));
        assert!(matches!(
            log.note("security.other", "key_1", "beta", t0),
            Noted::First(_)
        ));
        // After the window, a new event; the old fold's last repeats are flushed first.
        assert_eq!(
            log.note(A, "key_1", "beta", t0 + Duration::from_secs(59)),
            Noted::Repeat
        );
        assert_eq!(log.take_repeats(t0 + Duration::from_secs(60)), vec![(7, 1)]);
        assert!(matches!(
            log.note(A, "key_1", "beta", t0 + Duration::from_secs(61)),
            Noted::First(_)
        ));
    }

    #[test]
    fn a_principal_asking_for_many_tenants_gets_a_bounded_number_of_folds() {
        let log = SecurityLog::default();
        let t0 = Instant::now();
        let mut firsts = 0;
        for i in 0..1000 {
            if let Noted::First(t) = log.note(A, "key_1", &format!("t{i}"), t0) {
                log.written(t, Some(i));
                firsts += 1;
            }
        }
        assert_eq!(firsts, MAX_ASKED + 1, "ten tenants of their own, the rest under *");
        let folded: u64 = log.take_repeats(t0).iter().map(|(_, n)| n).sum();
        assert_eq!(folded, 1000 - firsts as u64);
        // Closed after the window, and the principal's allowance with them.
        log.take_repeats(t0 + FOLD_WINDOW);
        assert_eq!(log.open(), 0);
        assert!(matches!(
            log.note(A, "key_1", "t999", t0 + FOLD_WINDOW),
            Noted::First(_)
        ));
    }
}
