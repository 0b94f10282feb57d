//! A token key's signing threads. Token calls may hang (a network HSM behind a silent
//! partition), so they never run on the async runtime's workers; they run on a small pool of
//! threads of their own, as many as the key has sessions. The runtime's shared blocking
//! pool would do, but it grows to dozens of threads under load and wakes the one idle the
//! longest: with as many threads as calls can be in flight, each call lands on a thread that
//! signed a moment ago, which saves a tenth of the daemon's CPU per certificate.
//!
//! The pool is the blocking pool of a runtime of its own, never driven (nothing async runs
//! on it), so that dropping it from any context is allowed and waits for nothing: a thread
//! stuck in a hung call ends when the call returns.

use std::time::Duration;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// How long an idle signing thread waits for the next call before it exits.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The threads that make one key's token calls.
pub(crate) struct Lane {
    runtime: Option<Runtime>,
}

impl Lane {
    /// A lane of at most `threads` threads (at least one), named after the CA `name`.
    pub(crate) fn new(name: &str, threads: usize) -> std::io::Result<Lane> {
        let runtime = Builder::new_current_thread()
            .max_blocking_threads(threads.max(1))
            .thread_keep_alive(KEEP_ALIVE)
            .thread_name(format!("kpki-sign-{name}"))
            .build()?;
        Ok(Lane {
            runtime: Some(runtime),
        })
    }

    /// Runs `call` on one of the lane's threads; more calls than threads wait their turn.
    pub(crate) fn run<F, R>(&self, call: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn_blocking(call),
            // Only while dropping; nothing can call it then.
            None => tokio::task::spawn_blocking(call),
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_run_on_at_most_the_lanes_threads() {
        let lane = Lane::new("test", 2).unwrap();
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let mut calls = Vec::new();
        for _ in 0..32 {
            let seen = Arc::clone(&seen);
            calls.push(lane.run(move || {
                std::thread::sleep(Duration::from_millis(2));
                let name = std::thread::current().name().map(str::to_string);
                seen.lock()
                    .unwrap()
                    .insert((std::thread::current().id(), name));
            }));
        }
        for c in calls {
            c.await.unwrap();
        }
        let seen = seen.lock().unwrap();
        assert!(
            (1..=2).contains(&seen.len()),
            "{} threads ran the calls",
            seen.len()
        );
        for (_, name) in seen.iter() {
            assert_eq!(name.as_deref(), Some("kpki-sign-test"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lane_dropped_by_its_own_last_call_or_while_a_call_hangs_waits_for_nothing() {
        // The last owner of the lane is its own call (a CA replaced by a reload while a
        // request was being signed).
        let lane = Arc::new(Lane::new("own", 1).unwrap());
        let owner = Arc::clone(&lane);
        let handle = lane.run(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(owner);
            7
        });
        drop(lane);
        assert_eq!(handle.await.unwrap(), 7);

        // Dropped on a runtime worker while a call is stuck: returns at once.
        let lane = Lane::new("stuck", 1).unwrap();
        let (release, stuck) = std::sync::mpsc::channel::<()>();
        let handle = lane.run(move || stuck.recv().is_ok());
        let started = std::time::Instant::now();
        drop(lane);
        assert!(started.elapsed() < Duration::from_secs(1));
        release.send(()).unwrap();
        assert!(handle.await.unwrap());
    }
}
