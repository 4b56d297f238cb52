//! A run's report built from its events (stub).

/// A run's report.
#[derive(Debug, Default)]
pub struct RunReport;

/// One step's line in a report.
#[derive(Debug, Default)]
pub struct StepReport;
