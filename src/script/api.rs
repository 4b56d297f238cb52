//! The asyncio-style API of Rhai jobs (stub).
