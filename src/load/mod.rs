//! Files → [`crate::job::Job`] (stub; filled in by the loader work).
