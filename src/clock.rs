//! The gateway's clock: the time read once per poll of a connection's
//! task, as nginx reads it once per turn of its event loop.
//!
//! A proxied request asks the time in several places: the read that
//! brought it (idle and header deadlines), its start and the access
//! record, the upstream's deadline, the pool's idle stamp, the token's
//! expiry check and the response's `Date`. Each read of the system clock
//! costs about 24 ns on the machines measured (a vDSO `clock_gettime`);
//! seven a request were about 1% of the hop's CPU. While a task runs
//! under [`per_poll`], the first [`now`] of each poll reads the clock and
//! the others in that poll reuse it: time stands still for one poll, a few
//! microseconds (the longest, a token verified afresh, about 40). Outside
//! `per_poll` (other tasks, other threads, tests) every call reads the
//! clock. [`fresh`] always reads it, for what measures a span within one
//! poll (a request's duration).
//!
//! Wall-clock time ([`since_epoch`]) is the monotonic reading plus an
//! offset taken from the system clock at most once a second per thread,
//! as nginx caches its time: a step of the system clock is seen within a
//! second.
//!
//! Pure: no sockets, no runtime; a thread-local cell.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a wall-clock offset is used before the system clock is read
/// again.
const WALL_REFRESH: Duration = Duration::from_secs(1);

thread_local! {
    /// Inside a poll under [`per_poll`].
    static POLLING: Cell<bool> = const { Cell::new(false) };
    /// The time read in this poll, if any was.
    static READ: Cell<Option<Instant>> = const { Cell::new(None) };
    /// A monotonic reading and the time since the Unix epoch at that
    /// moment.
    static WALL: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// The time: read in this poll already, or read now.
pub fn now() -> Instant {
    READ.get().unwrap_or_else(fresh)
}

/// The time, read now; the rest of the poll then uses it.
pub fn fresh() -> Instant {
    let read = Instant::now();
    if POLLING.get() {
        READ.set(Some(read));
    }
    read
}

/// The time since the Unix epoch, at [`now`].
pub fn since_epoch() -> Duration {
    let at = now();
    if let Some((then, wall)) = WALL.get()
        && let Some(since) = at.checked_duration_since(then)
        && since < WALL_REFRESH
    {
        return wall + since;
    }
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    WALL.set(Some((at, wall)));
    wall
}

/// Runs `future` with the clock read at most once per poll (but for
/// [`fresh`]). The future is boxed once: an `async fn` around it would
/// hold it twice in its state (as the argument and pinned), doubling a
/// connection's task.
pub fn per_poll<F: Future>(future: F) -> PerPoll<F> {
    PerPoll(Box::pin(future))
}

/// A future run by [`per_poll`].
pub struct PerPoll<F>(Pin<Box<F>>);

impl<F: Future> Future for PerPoll<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> std::task::Poll<F::Output> {
        let _turn = Turn::start();
        self.0.as_mut().poll(cx)
    }
}

/// One poll under [`per_poll`]; its end (or a panic) forgets the reading.
struct Turn {
    /// Within another `per_poll` poll, which owns the reading.
    nested: bool,
}

impl Turn {
    fn start() -> Turn {
        Turn {
            nested: POLLING.replace(true),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.nested {
            POLLING.set(false);
            READ.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn pause() {
        std::thread::sleep(Duration::from_millis(2));
    }

    #[test]
    fn outside_a_poll_every_call_reads_the_clock() {
        let first = now();
        pause();
        assert!(now() > first);
    }

    #[test]
    fn within_a_poll_time_stands_still_and_moves_on_at_the_next() {
        let mut seen = Vec::new();
        let mut polls = 0;
        {
            let future = per_poll(std::future::poll_fn(|cx| {
                let first = now();
                pause();
                seen.push((first, now(), since_epoch()));
                pause();
                // A fresh reading is used by the rest of the poll.
                let fresh = fresh();
                assert!(fresh > first);
                assert_eq!(now(), fresh);
                polls += 1;
                if polls < 2 {
                    cx.waker().wake_by_ref();
                    return std::task::Poll::Pending;
                }
                std::task::Poll::Ready(())
            }));
            let mut future = std::pin::pin!(future);
            let mut cx = Context::from_waker(Waker::noop());
            while future.as_mut().poll(&mut cx).is_pending() {}
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, seen[0].1);
        assert!(seen[1].0 > seen[0].1, "the next poll reads the clock again");
        // Wall-clock time follows the monotonic reading.
        assert_eq!(seen[1].2 - seen[0].2, seen[1].0.duration_since(seen[0].0));
        // The poll's end forgets its reading.
        let after = now();
        pause();
        assert!(now() > after);
    }

    #[test]
    fn wall_clock_time_is_the_system_clocks() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ours = since_epoch();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // Within the second the offset is kept, and the slew of the
        // system clock over it.
        assert!(
            ours + Duration::from_millis(5) >= before,
            "{ours:?} {before:?}"
        );
        assert!(
            ours <= after + Duration::from_millis(5),
            "{ours:?} {after:?}"
        );
    }
}
