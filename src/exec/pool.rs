//! The bounded blocking pool: `asyncio.to_thread` with a fixed number of threads.
//!
//! A `blocking = true` step must never park a thread the async scheduler needs,
//! so its blocking part runs on `tokio::task::spawn_blocking`. Tokio's own
//! blocking pool is effectively unbounded (512 threads), so a job that gathers a
//! thousand blocking steps would start a thousand threads. Like asyncio's default
//! executor, this pool puts a fair (FIFO) [`Semaphore`] of `size` permits in
//! front: a blocking step holds one permit for as long as its thread is busy, so
//! at most `size` run at once and the rest queue in the order they asked.
//!
//! Architecture Invariant: a permit is held until the blocking closure has
//! returned, not until its awaiting future is gone. A cancelled or dropped caller
//! therefore never lets more than `size` threads be busy; [`BlockingPool::busy`]
//! counts threads that are really occupied.
//!
//! Architecture Invariant: nothing here blocks an async worker thread; waiting
//! for a permit is an async wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A bounded pool for blocking work. Clones share the same threads and permits.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    size: usize,
    permits: Arc<Semaphore>,
    busy: AtomicUsize,
    simulated: bool,
}

/// Why a closure given to [`BlockingPool::run`] produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The closure panicked; the message is the panic's, when it was text.
    #[error("blocking work panicked: {0}")]
    Panicked(String),
    /// The runtime is shutting down and dropped the work before it ran.
    #[error("blocking work was dropped: the runtime is shutting down")]
    ShutDown,
}

/// A wait on the pool was cut short by its cancel token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// The right to occupy one of the pool's threads. Counted in
/// [`BlockingPool::busy`] from the moment it is granted until it is dropped.
#[derive(Debug)]
pub struct PoolPermit {
    _permit: OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        self.inner.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PoolPermit {
    /// Runs `f` on a blocking thread; this permit is held until `f` returns,
    /// even if the returned handle is dropped (the thread cannot be stopped, so
    /// it keeps counting against the pool).
    pub fn spawn<F, R>(self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let _permit = self;
            f()
        })
    }
}

impl BlockingPool {
    /// A pool of `size` threads (0 is taken as 1).
    pub fn new(size: usize) -> BlockingPool {
        BlockingPool::build(size, false)
    }

    /// A pool whose blocking *sleeps* wait on the tokio timer while holding a
    /// permit, instead of parking an OS thread. **A test seam.**
    ///
    /// Why: under `#[tokio::test(start_paused = true)]` tokio stops advancing the
    /// paused clock while any `spawn_blocking` task runs, so a real blocking
    /// sleep cannot be measured in virtual time. With this pool, admission
    /// (k at once, FIFO, `ceil(n / k) × d` for n sleeps of d) is exact and
    /// instant in paused-clock tests. Permits and the busy count are the same
    /// code as in [`BlockingPool::new`]; every other kind of blocking work
    /// (processes, files) still runs on real threads.
    pub fn simulated(size: usize) -> BlockingPool {
        BlockingPool::build(size, true)
    }

    fn build(size: usize, simulated: bool) -> BlockingPool {
        let size = size.max(1);
        BlockingPool {
            inner: Arc::new(Inner {
                size,
                permits: Arc::new(Semaphore::new(size)),
                busy: AtomicUsize::new(0),
                simulated,
            }),
        }
    }

    /// The default size: `min(32, available CPUs + 4)`.
    ///
    /// This is exactly the default of asyncio's executor
    /// (`ThreadPoolExecutor`'s `max_workers` since Python 3.8), so `to_thread`
    /// behaves as asyncio users expect. Blocking steps are mostly waits (a
    /// process, a disk, a sleep), not CPU work, hence more threads than CPUs;
    /// the cap keeps a big host from starting hundreds of threads.
    pub fn default_size() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus + 4).min(32)
    }

    /// How many threads it has.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// How many threads are occupied right now (permits granted and not yet
    /// released). At most [`BlockingPool::size`].
    pub fn busy(&self) -> usize {
        self.inner.busy.load(Ordering::SeqCst)
    }

    /// Whether this is a [`BlockingPool::simulated`] pool.
    pub fn is_simulated(&self) -> bool {
        self.inner.simulated
    }

    /// Waits for a free thread, first come first served. Cancel-safe: dropping
    /// the future gives up the place in the queue.
    pub async fn acquire(&self) -> PoolPermit {
        let permit =
            Arc::clone(&self.inner.permits).acquire_owned().await.expect("the pool's semaphore is never closed");
        self.inner.busy.fetch_add(1, Ordering::SeqCst);
        PoolPermit { _permit: permit, inner: Arc::clone(&self.inner) }
    }

    /// Runs `f` on one of the pool's threads once one is free and returns its
    /// value (`asyncio.to_thread(f)`).
    ///
    /// Dropping the future while queued gives up the place; dropping it while
    /// `f` runs lets `f` finish in the background, still holding its thread.
    pub async fn run<F, R>(&self, f: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = self.acquire().await;
        permit.spawn(f).await.map_err(PoolError::from)
    }

    /// Occupies one of the pool's threads for `duration`, the way a blocking
    /// `time.sleep` in `to_thread` does, but cancellable: [`Cancelled`] as soon as
    /// `cancel` fires (while queued or while sleeping).
    ///
    /// The thread waits with `recv_timeout` on a channel that the async side
    /// drops on cancel, so it wakes at once; never an uncancellable
    /// `thread::sleep`. In a [`BlockingPool::simulated`] pool the permit is held
    /// while waiting on the tokio timer instead.
    pub async fn sleep(&self, duration: Duration, cancel: &CancellationToken) -> Result<(), Cancelled> {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Cancelled),
            p = self.acquire() => p,
        };
        if self.inner.simulated {
            let _permit = permit;
            return tokio::select! {
                biased;
                _ = cancel.cancelled() => Err(Cancelled),
                _ = tokio::time::sleep(duration) => Ok(()),
            };
        }
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let mut thread = permit.spawn(move || {
            // Timeout = slept the whole time; a message or a dropped sender =
            // cancelled (the sender is dropped with the attempt's future).
            matches!(woken.recv_timeout(duration), Err(std::sync::mpsc::RecvTimeoutError::Timeout))
        });
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                drop(wake);
                // The thread wakes at once; wait for it so the permit is
                // released before the caller hears "cancelled".
                let _ = (&mut thread).await;
                Err(Cancelled)
            }
            done = &mut thread => match done {
                Ok(true) => Ok(()),
                Ok(false) | Err(_) => Err(Cancelled),
            },
        }
    }
}

impl From<tokio::task::JoinError> for PoolError {
    fn from(e: tokio::task::JoinError) -> PoolError {
        if !e.is_panic() {
            return PoolError::ShutDown;
        }
        let payload = e.into_panic();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        PoolError::Panicked(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::time::Instant;

    #[test]
    fn default_size_follows_asyncio() {
        let n = BlockingPool::default_size();
        assert!((5..=32).contains(&n), "{n}");
    }

    #[test]
    fn size_is_at_least_one_and_clones_share() {
        let pool = BlockingPool::new(0);
        assert_eq!(pool.size(), 1);
        let other = pool.clone();
        assert!(Arc::ptr_eq(&pool.inner, &other.inner));
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_pool_of_two_runs_five_one_second_sleeps_in_three_seconds() {
        let pool = BlockingPool::simulated(2);
        let cancel = CancellationToken::new();
        let max_busy = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..5 {
            let (pool, cancel, max_busy) = (pool.clone(), cancel.clone(), Arc::clone(&max_busy));
            set.spawn(async move {
                let watch = async {
                    loop {
                        max_busy.fetch_max(pool.busy(), Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    r = pool.sleep(Duration::from_secs(1), &cancel) => r,
                    _ = watch => unreachable!(),
                }
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap(), Ok(()));
        }
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert_eq!(max_busy.load(Ordering::SeqCst), 2);
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permits_are_granted_first_come_first_served() {
        let pool = BlockingPool::simulated(1);
        let cancel = CancellationToken::new();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..4 {
            let (pool, cancel, order) = (pool.clone(), cancel.clone(), Arc::clone(&order));
            set.spawn(async move {
                pool.sleep(Duration::from_secs(1), &cancel).await.unwrap();
                order.lock().unwrap().push((i, Instant::now()));
            });
            // Make the queue order the spawn order.
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        while set.join_next().await.is_some() {}
        let order = order.lock().unwrap();
        let ids: Vec<_> = order.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        let ends: Vec<_> = order.iter().map(|(_, t)| *t - start).collect();
        assert_eq!(ends, [1, 2, 3, 4].map(Duration::from_secs).to_vec(), "one at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_while_queued_gives_up_the_place() {
        let pool = BlockingPool::simulated(1);
        let never = CancellationToken::new();
        let cancel = CancellationToken::new();
        let holder = {
            let pool = pool.clone();
            let never = never.clone();
            tokio::spawn(async move { pool.sleep(Duration::from_secs(10), &never).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(pool.busy(), 1);
        let start = Instant::now();
        let queued = {
            let (pool, cancel) = (pool.clone(), cancel.clone());
            tokio::spawn(async move { pool.sleep(Duration::from_secs(1), &cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
        assert_eq!(queued.await.unwrap(), Err(Cancelled));
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert_eq!(holder.await.unwrap(), Ok(()));
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocked_pool_threads_never_stall_async_work() {
        let pool = BlockingPool::new(2);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut blocked = Vec::new();
        for _ in 0..2 {
            let (rx, started) = (Arc::clone(&release_rx), started_tx.clone());
            let pool = pool.clone();
            blocked.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = started.send(());
                    // Blocks this pool thread until the test says so.
                    let _ = rx.lock().map(|rx| rx.recv());
                })
                .await
            }));
        }
        started_rx.recv().await.unwrap();
        started_rx.recv().await.unwrap();
        assert_eq!(pool.busy(), 2);

        // Both pool threads are stuck; async work still runs to the end.
        let r = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::task::yield_now().await;
            "async done"
        })
        .await
        .unwrap();
        assert_eq!(r, "async done");
        // And a third blocking job queues rather than starting a thread.
        let third = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|| "third").await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!third.is_finished());
        assert_eq!(pool.busy(), 2);

        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        for b in blocked {
            b.await.unwrap().unwrap();
        }
        assert_eq!(third.await.unwrap(), Ok("third"));
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test]
    async fn real_blocking_sleep_is_cancellable() {
        let pool = BlockingPool::new(1);
        let cancel = CancellationToken::new();
        let sleeper = {
            let (pool, cancel) = (pool.clone(), cancel.clone());
            tokio::spawn(async move { pool.sleep(Duration::from_secs(300), &cancel).await })
        };
        while pool.busy() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        // A bound, not a speed assert: a 300 s sleep must not run to the end.
        let r = tokio::time::timeout(Duration::from_secs(30), sleeper).await.expect("cancelled blocking sleep returns");
        assert_eq!(r.unwrap(), Err(Cancelled));
        assert_eq!(pool.busy(), 0, "the permit is released before returning");
    }

    #[tokio::test]
    async fn a_panic_is_reported() {
        let pool = BlockingPool::new(1);
        let err = pool.run(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err, PoolError::Panicked("boom".into()));
        assert_eq!(pool.busy(), 0);
    }
}
