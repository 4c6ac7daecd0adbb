//! A rule set on disk, as operators keep it in version control and as the templates in
//! `rules/examples/` ship: `ruleset.toml` (settings and the site facts fixtures default to),
//! `rules.rhai` (the script) and `tests.toml` (`[[test]]` fixtures).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use berth_kernel::rules::{
    AdjustmentSettings, CompiledRules, ErrorPolicy, Guardrails, Params, RuleError, RuleTest, SiteFacts, TestOutcome,
    TestSetting, run_test,
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::RhaiRules;

/// `ruleset.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetFile {
    pub name: String,
    pub currency: String,
    #[serde(default)]
    pub holidays: BTreeSet<NaiveDate>,
    #[serde(default = "deny")]
    pub error_policy: ErrorPolicy,
    #[serde(default)]
    pub guardrails: Guardrails,
    /// What fixtures know of the site unless they say otherwise.
    #[serde(default)]
    pub site: Option<SiteFacts>,
    /// The version's parameters (`ctx.params`).
    #[serde(default)]
    pub params: Params,
    #[serde(default)]
    pub adjustment: AdjustmentSettings,
}

fn deny() -> ErrorPolicy {
    ErrorPolicy::Deny
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    #[serde(default)]
    test: Vec<RuleTest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {error}")]
    Rule { path: PathBuf, error: RuleError },
}

/// A loaded rule set directory.
#[derive(Debug, Clone)]
pub struct RuleProject {
    pub dir: PathBuf,
    pub settings: RuleSetFile,
    pub source: String,
    pub tests: Vec<RuleTest>,
}

impl RuleProject {
    pub fn load(dir: &Path) -> Result<Self, ProjectError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|error| ProjectError::Read { path, message: error.to_string() })
        };
        let parse_error = |name: &str, error: toml::de::Error| ProjectError::Read {
            path: dir.join(name),
            message: error.to_string(),
        };
        let settings: RuleSetFile =
            toml::from_str(&read("ruleset.toml")?).map_err(|error| parse_error("ruleset.toml", error))?;
        let invalid = |error: berth_kernel::ValidationError| ProjectError::Read {
            path: dir.join("ruleset.toml"),
            message: error.to_string(),
        };
        berth_kernel::pricing::validate_settings(&settings.error_policy, &settings.guardrails).map_err(invalid)?;
        settings.adjustment.validate().map_err(invalid)?;
        let source = read("rules.rhai")?;
        let tests = if dir.join("tests.toml").exists() {
            let file: TestsFile =
                toml::from_str(&read("tests.toml")?).map_err(|error| parse_error("tests.toml", error))?;
            file.test
        } else {
            Vec::new()
        };
        Ok(Self { dir: dir.to_owned(), settings, source, tests })
    }

    /// A rule set from its three files' texts (`tests` may be empty), e.g. a bundled template.
    pub fn from_texts(label: &str, ruleset: &str, source: &str, tests: &str) -> Result<Self, ProjectError> {
        let dir = PathBuf::from(label);
        let settings: RuleSetFile = toml::from_str(ruleset)
            .map_err(|error| ProjectError::Read { path: dir.join("ruleset.toml"), message: error.to_string() })?;
        let file: TestsFile = toml::from_str(tests)
            .map_err(|error| ProjectError::Read { path: dir.join("tests.toml"), message: error.to_string() })?;
        Ok(Self { dir, settings, source: source.to_owned(), tests: file.test })
    }

    /// Every rule set under `dir`: `dir` itself if it holds a `ruleset.toml`, else its
    /// subdirectories that do, in name order.
    pub fn discover(dir: &Path) -> Result<Vec<Self>, ProjectError> {
        if dir.join("ruleset.toml").exists() {
            return Ok(vec![Self::load(dir)?]);
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|error| ProjectError::Read { path: dir.to_owned(), message: error.to_string() })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.join("ruleset.toml").exists())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(ProjectError::Read {
                path: dir.to_owned(),
                message: "no ruleset.toml here or in any subdirectory".into(),
            });
        }
        dirs.iter().map(|dir| Self::load(dir)).collect()
    }

    pub fn compile(&self, engine: &RhaiRules) -> Result<std::sync::Arc<crate::Script>, ProjectError> {
        engine
            .compile_rules(&self.source)
            .map_err(|error| ProjectError::Rule { path: self.dir.join("rules.rhai"), error })
    }

    /// Where this rule set's fixtures get their defaults.
    pub fn setting(&self) -> TestSetting<'_> {
        TestSetting {
            site: self.settings.site.as_ref(),
            currency: &self.settings.currency,
            holidays: &self.settings.holidays,
            guardrails: &self.settings.guardrails,
            params: &self.settings.params,
        }
    }

    /// Runs every fixture against the compiled script.
    pub fn run_tests(&self, rules: &dyn CompiledRules) -> Vec<TestOutcome> {
        let setting = self.setting();
        self.tests.iter().map(|test| run_test(rules, test, &setting)).collect()
    }
}
