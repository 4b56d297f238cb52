//! The bounded blocking pool: `asyncio.to_thread` with a fixed number of threads.
//! (Stub — filled in by the pool work.)

/// A bounded pool for blocking work.
#[derive(Debug, Clone)]
pub struct BlockingPool {
    size: usize,
}

impl BlockingPool {
    /// A pool of `size` threads (at least 1).
    pub fn new(size: usize) -> BlockingPool {
        BlockingPool { size: size.max(1) }
    }

    /// How many threads it has.
    pub fn size(&self) -> usize {
        self.size
    }
}
