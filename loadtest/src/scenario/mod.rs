//! Staged scenarios (`--scenario FILE`): the YAML file format, its
//! validation, and the per-second schedule derived from it.

mod schedule;
mod summary;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use schedule::{Schedule, Slice};
pub use summary::ScenarioSummary;

/// Most producer or consumer clients one stage may ask for (as `--producers`).
const MAX_CLIENTS: u32 = 1024;
/// Longest accepted scenario: one day.
const MAX_TOTAL_SECS: f64 = 86_400.0;

/// Why a scenario file was refused. Every variant names the file and, where
/// it applies, the stage (1-based) at fault; the message includes the
/// underlying error, so it is not repeated as a `source`.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading scenario {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not valid YAML or does not match the format.
    #[error("parsing scenario {path}: {cause}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The YAML error, with line and column where known.
        cause: serde_yaml::Error,
    },
    /// The file parsed but describes an impossible run.
    #[error("scenario {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the stage.
        message: String,
    },
}

/// Shape of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// The rate moves linearly from the previous stage's rate (0 before the
    /// first stage) to this stage's rate.
    Ramp,
    /// The rate is this stage's rate (or the previous one when omitted)
    /// throughout the stage.
    Steady,
    /// The rate jumps to this stage's rate at once and holds it; a spike is a
    /// steady stage that the report marks as a spike.
    Spike,
}

impl StageKind {
    /// Lower-case name as written in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ramp => "ramp",
            Self::Steady => "steady",
            Self::Spike => "spike",
        }
    }
}

/// A stage as written in the file: optional fields inherit from the previous
/// stage (or, for the first stage, from the command line).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageSpec {
    name: Option<String>,
    kind: StageKind,
    rate: Option<f64>,
    duration_secs: f64,
    producers: Option<u32>,
    consumers: Option<u32>,
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    name: Option<String>,
    description: Option<String>,
    stages: Vec<StageSpec>,
}

/// A validated stage with every field resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Display name (`<kind> <n>` when the file gives none).
    pub name: String,
    /// Shape of the stage.
    pub kind: StageKind,
    /// Target rate in records/s at the end of the stage (throughout it for
    /// steady and spike stages).
    pub rate: f64,
    /// Length in seconds (> 0).
    pub duration_secs: f64,
    /// Producer clients sending during the stage (>= 1).
    pub producers: u32,
    /// Consumer clients reading during the stage (0 pauses consuming).
    pub consumers: u32,
}

/// A validated scenario: at least one stage, every stage resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Scenario name (the file stem when the file gives none).
    pub name: String,
    /// Free text from the file.
    pub description: Option<String>,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

/// Stage defaults taken from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `--producers`.
    pub producers: u32,
    /// `--consumers`.
    pub consumers: u32,
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path, defaults: Defaults) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ScenarioError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let fallback_name = path.file_stem().map_or_else(
            || "scenario".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self::parse(&text, &fallback_name, defaults).map_err(|e| e.with_path(path))
    }

    /// Parses and validates scenario text; errors carry an empty path until
    /// [`Scenario::load`] fills it in.
    pub fn parse(
        text: &str,
        fallback_name: &str,
        defaults: Defaults,
    ) -> Result<Self, ScenarioError> {
        let spec: ScenarioSpec =
            serde_yaml::from_str(text).map_err(|cause| ScenarioError::Parse {
                path: PathBuf::new(),
                cause,
            })?;
        let stages = resolve(&spec.stages, defaults).map_err(|message| ScenarioError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(Self {
            name: spec.name.unwrap_or_else(|| fallback_name.to_string()),
            description: spec.description,
            stages,
        })
    }

    /// Most producers any stage uses.
    pub fn max_producers(&self) -> u32 {
        self.stages.iter().map(|s| s.producers).max().unwrap_or(1)
    }

    /// Most consumers any stage uses.
    pub fn max_consumers(&self) -> u32 {
        self.stages.iter().map(|s| s.consumers).max().unwrap_or(0)
    }
}

impl ScenarioError {
    fn with_path(self, p: &Path) -> Self {
        let path = p.to_path_buf();
        match self {
            Self::Read { cause, .. } => Self::Read { path, cause },
            Self::Parse { cause, .. } => Self::Parse { path, cause },
            Self::Invalid { message, .. } => Self::Invalid { path, message },
        }
    }
}

/// Resolves inherited fields and checks every stage.
fn resolve(specs: &[StageSpec], defaults: Defaults) -> Result<Vec<Stage>, String> {
    if specs.is_empty() {
        return Err("needs at least one stage".to_string());
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(specs.len());
    let mut total_secs = 0.0;
    for (n, spec) in (1usize..).zip(specs) {
        let prev = stages.last();
        let at = format!("stage {n}");
        let rate = match (spec.kind, spec.rate, prev) {
            (_, Some(r), _) => r,
            (StageKind::Steady, None, Some(p)) => p.rate,
            (kind, None, _) => {
                return Err(format!("{at}: a {} stage needs a rate", kind.as_str()));
            }
        };
        if !rate.is_finite() || rate < 0.0 {
            return Err(format!(
                "{at}: rate must be a finite number >= 0, got {rate}"
            ));
        }
        let d = spec.duration_secs;
        if !d.is_finite() || d <= 0.0 {
            return Err(format!("{at}: duration_secs must be a number > 0, got {d}"));
        }
        total_secs += d;
        if total_secs > MAX_TOTAL_SECS {
            return Err(format!(
                "{at}: the stages last longer than {MAX_TOTAL_SECS} s"
            ));
        }
        let producers = spec
            .producers
            .unwrap_or_else(|| prev.map_or(defaults.producers, |p| p.producers));
        if !(1..=MAX_CLIENTS).contains(&producers) {
            return Err(format!(
                "{at}: producers must be 1..={MAX_CLIENTS}, got {producers}"
            ));
        }
        let consumers = spec
            .consumers
            .unwrap_or_else(|| prev.map_or(defaults.consumers, |p| p.consumers));
        if consumers > MAX_CLIENTS {
            return Err(format!(
                "{at}: consumers must be 0..={MAX_CLIENTS}, got {consumers}"
            ));
        }
        stages.push(Stage {
            name: spec
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {n}", spec.kind.as_str())),
            kind: spec.kind,
            rate,
            duration_secs: d,
            producers,
            consumers,
        });
    }
    Ok(stages)
}

/// Scenarios for tests of this and other modules.
#[cfg(test)]
pub mod fixtures {
    use super::{Defaults, Scenario};

    /// Parses `text` with one producer and one consumer as the defaults;
    /// panics on an invalid scenario.
    pub fn scenario(text: &str) -> Scenario {
        let defaults = Defaults {
            producers: 1,
            consumers: 1,
        };
        Scenario::parse(text, "fixture", defaults).expect("valid scenario")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        producers: 2,
        consumers: 3,
    };

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "file-stem", DEFAULTS)
    }

    fn invalid(text: &str) -> String {
        match parse(text) {
            Err(ScenarioError::Invalid { message, .. }) => message,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_inherits() {
        let s = parse(
            "name: rss\nstages:\n\
             - {kind: ramp, rate: 1000, duration_secs: 10, producers: 4}\n\
             - {kind: steady, duration_secs: 20, consumers: 1}\n\
             - {name: burst, kind: spike, rate: 5000, duration_secs: 5}\n",
        )
        .expect("valid");
        assert_eq!(s.name, "rss");
        assert_eq!(s.stages.len(), 3);
        let [ramp, steady, spike] = &s.stages[..] else {
            panic!("three stages")
        };
        assert_eq!(
            (ramp.kind, ramp.rate, ramp.producers, ramp.consumers),
            (StageKind::Ramp, 1000.0, 4, 3)
        );
        assert_eq!(ramp.name, "ramp 1");
        // Steady without a rate keeps the previous one; clients are inherited.
        assert_eq!(
            (steady.rate, steady.producers, steady.consumers),
            (1000.0, 4, 1)
        );
        assert_eq!(
            (
                spike.name.as_str(),
                spike.rate,
                spike.producers,
                spike.consumers
            ),
            ("burst", 5000.0, 4, 1)
        );
        assert_eq!(Schedule::new(&s).total_secs(), 35.0);
        assert_eq!((s.max_producers(), s.max_consumers()), (4, 3));
    }

    #[test]
    fn name_falls_back_to_file_stem() {
        let s = parse("stages: [{kind: steady, rate: 1, duration_secs: 1}]").expect("valid");
        assert_eq!(s.name, "file-stem");
        assert_eq!((s.stages[0].producers, s.stages[0].consumers), (2, 3));
    }

    #[test]
    fn refuses_bad_scenarios_with_clear_messages() {
        assert_eq!(invalid("stages: []"), "needs at least one stage");
        assert!(invalid("stages: [{kind: steady, duration_secs: 1}]")
            .contains("stage 1: a steady stage needs a rate"));
        assert!(invalid(
            "stages: [{kind: steady, rate: 1, duration_secs: 1}, {kind: spike, duration_secs: 1}]"
        )
        .contains("stage 2: a spike stage needs a rate"));
        assert!(
            invalid("stages: [{kind: ramp, rate: -5, duration_secs: 1}]")
                .contains("stage 1: rate must be")
        );
        assert!(invalid("stages: [{kind: ramp, rate: 5, duration_secs: 0}]")
            .contains("duration_secs must be"));
        assert!(
            invalid("stages: [{kind: ramp, rate: 5, duration_secs: 1, producers: 0}]")
                .contains("producers must be")
        );
        assert!(
            invalid("stages: [{kind: ramp, rate: 5, duration_secs: 1, consumers: 5000}]")
                .contains("consumers must be")
        );
        assert!(
            invalid("stages: [{kind: ramp, rate: 5, duration_secs: 90000}]")
                .contains("longer than")
        );
        // Unknown kinds and fields are YAML errors naming the culprit.
        let e = parse("stages: [{kind: wave, rate: 5, duration_secs: 1}]").expect_err("bad kind");
        assert!(
            matches!(e, ScenarioError::Parse { .. }) && e.to_string().contains("wave"),
            "{e}"
        );
        let e = parse("stages: [{kind: ramp, rate: 5, duration: 1}]").expect_err("bad field");
        assert!(e.to_string().contains("duration"), "{e}");
        assert!(parse("stages: [").is_err());
    }

    #[test]
    fn load_names_the_file() {
        let e = Scenario::load(Path::new("/nonexistent/s.yaml"), DEFAULTS).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("reading scenario /nonexistent/s.yaml"),
            "{e}"
        );
    }

    #[test]
    fn checked_in_examples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let s = Scenario::load(&path, DEFAULTS).expect("valid example");
                assert!(Schedule::new(&s).total_records() > 0, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 2, "expected example scenarios in {}", dir.display());
    }
}
