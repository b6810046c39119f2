//! The resolved scenario as reported (JSON, `--print-scenario`, HTML).

use serde::Serialize;

use super::{Scenario, Schedule, StageKind};

/// One stage with its place on the time axis and its records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageSummary {
    /// Display name.
    pub name: String,
    /// `ramp`, `steady` or `spike`.
    pub kind: StageKind,
    /// Rate at the start of the stage, records/s.
    pub start_rate: f64,
    /// Rate at the end of the stage (throughout, unless a ramp), records/s.
    pub rate: f64,
    /// Start, seconds from the start of the measured phase.
    pub start_secs: f64,
    /// End, seconds.
    pub end_secs: f64,
    /// Records due in the stage.
    pub records: u64,
    /// Producers sending.
    pub producers: u32,
    /// Consumers reading.
    pub consumers: u32,
}

/// A scenario with every figure a reader needs to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioSummary {
    /// Scenario name.
    pub name: String,
    /// Free text from the file.
    pub description: Option<String>,
    /// Length in seconds.
    pub total_secs: f64,
    /// Records sent in all.
    pub total_records: u64,
    /// The stages in order.
    pub stages: Vec<StageSummary>,
}

impl ScenarioSummary {
    /// Summarises `scenario`, whose schedule is `schedule`.
    pub fn new(scenario: &Scenario, schedule: &Schedule) -> Self {
        let bounds = schedule.boundaries();
        let total = schedule.total_records();
        let stages = scenario
            .stages
            .iter()
            .zip(bounds.windows(2))
            .map(|(s, w)| StageSummary {
                name: s.name.clone(),
                kind: s.kind,
                start_rate: schedule.rate_at(w[0]),
                rate: s.rate,
                start_secs: w[0],
                end_secs: w[1],
                records: schedule.records_between(w[0], w[1]),
                producers: s.producers,
                consumers: s.consumers,
            })
            .collect();
        Self {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            total_secs: schedule.total_secs(),
            total_records: total,
            stages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fixtures::scenario;

    #[test]
    fn stages_tile_the_time_axis_and_the_records() {
        let text = "name: s\nstages:\n\
                    - {kind: ramp, rate: 100, duration_secs: 2}\n\
                    - {kind: spike, rate: 300, duration_secs: 1}\n\
                    - {kind: ramp, rate: 100, duration_secs: 2}\n";
        let sc = scenario(text);
        let sum = ScenarioSummary::new(&sc, &Schedule::new(&sc));
        let times: Vec<(f64, f64)> = sum
            .stages
            .iter()
            .map(|s| (s.start_secs, s.end_secs))
            .collect();
        assert_eq!(times, vec![(0.0, 2.0), (2.0, 3.0), (3.0, 5.0)]);
        let records: Vec<u64> = sum.stages.iter().map(|s| s.records).collect();
        assert_eq!(records, vec![100, 300, 400]);
        assert_eq!(sum.total_records, 800);
        // The last ramp starts from the spike's rate.
        assert_eq!(
            (sum.stages[2].start_rate, sum.stages[2].rate),
            (300.0, 100.0)
        );
    }
}
