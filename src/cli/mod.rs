//! The command line: `run` (the operator), `evaluate`, `report`, `crd`, and the cluster-side
//! tools that the `kubectl mailsec` plugin also offers: `status`, `what-if`, `check`,
//! `completion`, `version`. Both binaries parse the same [`Cli`] and run [`entry::main`].

pub mod check;
pub mod cluster;
pub mod entry;
pub mod evaluate;
pub mod human;
pub mod report;
pub mod run;
pub mod status;
pub mod version;
pub mod whatif;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::engine::policy::{Catalogue, PeriodError, Policy, parse_period};

/// mailsec-operator: licensing lifecycle of the email-security service on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "mailsec-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the operator: reconcile Tenants and Subscriptions in the cluster of the current
    /// kubeconfig (or in-cluster service account).
    Run(Box<run::RunArgs>),
    /// Print Tenants and Subscriptions from manifests with the status the operator would set at
    /// a given instant ("what happens to my tenants on date X").
    Evaluate(EvaluateArgs),
    /// The service subscriptions report: every subscription with its tenant, product, plan,
    /// start and end dates, effective end, status, days left, seats and sharing, at an instant.
    /// From the cluster (kubeconfig), or from manifests with -f.
    Report(ReportArgs),
    /// Print the CustomResourceDefinitions (YAML) generated from the API types.
    Crd,
    /// Status of one Tenant or Subscription: phase, conditions, each service with the
    /// subscription covering it, days left, the next change and what it does, what to do,
    /// undelivered notifications and recent Events. Exit code: 0 Active, 1 Warning
    /// (ExpiringSoon), 3 ReadOnly (GracePeriod), 4 Suspended (Expired), 5 not found, 6 unknown
    /// (no status yet, or the cluster could not be asked); 2 is a usage error.
    Status(status::StatusArgs),
    /// The Tenants and Subscriptions of the cluster, as stored, evaluated at another instant:
    /// which phase each one will be in then.
    WhatIf(whatif::WhatIfArgs),
    /// Check the installation: CRDs established, the read-only admission policy installed and
    /// bound, a leader holding the Lease and ready, versions. Exit code 1 when a check fails.
    Check(check::CheckArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(CompletionArgs),
    /// Print the versions of this CLI, the Kubernetes API server and the operator.
    Version(version::VersionArgs),
}

/// `completion SHELL`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The licensing policy, shared by every subcommand that evaluates. Precedence: flag, then
/// environment variable, then the `--config` file, then the built-in default.
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    /// How long before the end of a subscription the tenant is warned, e.g. 30d, 12h, 90s [default: 30d].
    #[arg(long, env = "MAILSEC_WARNING_PERIOD", value_parser = parse_period)]
    pub warning_period: Option<chrono::TimeDelta>,
    /// How long a tenant stays read-only after its subscription ended, before suspension [default: 30d].
    #[arg(long, env = "MAILSEC_GRACE_PERIOD", value_parser = parse_period)]
    pub grace_period: Option<chrono::TimeDelta>,
    /// The base product: when it lapses the whole tenant becomes read-only, then suspended [default: email-safeguard].
    #[arg(long, env = "MAILSEC_BASE_PRODUCT")]
    pub base_product: Option<String>,
    /// The add-on products, comma-separated: when one lapses only that add-on is restricted
    /// [default: email-threat-detection-response,email-threat-isolation].
    #[arg(long, env = "MAILSEC_ADD_ONS", value_delimiter = ',')]
    pub add_ons: Option<Vec<String>>,
    /// A YAML file with any of: warningPeriod, gracePeriod, lateAfter, baseProduct, addOns.
    #[arg(long, env = "MAILSEC_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The `--config` file.
#[derive(Deserialize, Debug, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyFile {
    pub warning_period: Option<String>,
    pub grace_period: Option<String>,
    pub late_after: Option<String>,
    pub base_product: Option<String>,
    pub add_ons: Option<Vec<String>>,
}

/// Why the policy settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {source}")]
    Period {
        path: String,
        field: &'static str,
        source: PeriodError,
    },
}

impl PolicyArgs {
    /// The policy from flags, environment, the config file and defaults.
    pub fn policy(&self) -> Result<Policy, SettingsError> {
        let (file, path) = match &self.config {
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| SettingsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file: PolicyFile =
                    serde_yaml::from_str(&text).map_err(|e| SettingsError::Parse {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                (file, path)
            }
            None => (PolicyFile::default(), String::new()),
        };
        let period = |field: &'static str,
                      v: &Option<String>|
         -> Result<Option<chrono::TimeDelta>, SettingsError> {
            v.as_deref()
                .map(parse_period)
                .transpose()
                .map_err(|source| SettingsError::Period {
                    path: path.clone(),
                    field,
                    source,
                })
        };
        let defaults = Policy::default();
        Ok(Policy {
            warning_period: self
                .warning_period
                .or(period("warningPeriod", &file.warning_period)?)
                .unwrap_or(defaults.warning_period),
            grace_period: self
                .grace_period
                .or(period("gracePeriod", &file.grace_period)?)
                .unwrap_or(defaults.grace_period),
            late_after: period("lateAfter", &file.late_after)?.unwrap_or(defaults.late_after),
            catalogue: Catalogue {
                base: self
                    .base_product
                    .clone()
                    .or(file.base_product)
                    .unwrap_or(defaults.catalogue.base),
                add_ons: self
                    .add_ons
                    .clone()
                    .or(file.add_ons)
                    .unwrap_or(defaults.catalogue.add_ons),
            },
        })
    }
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The instant to evaluate at: RFC 3339 time or YYYY-MM-DD (00:00 UTC). Default: now.
    #[arg(long, value_parser = evaluate::parse_at)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Manifest files or directories (recursively: *.yaml, *.yml, *.json); `-` for standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// How `report` and `what-if` write their table of objects.
#[derive(Args, Debug)]
pub struct TableOutputArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
    /// Leave out the title and header lines (table, wide, csv).
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The instant of the report: RFC 3339 time or YYYY-MM-DD (00:00 UTC). Default: now.
    #[arg(long, value_parser = evaluate::parse_at)]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Manifest files or directories (recursively: *.yaml, *.yml, *.json); `-` for standard
    /// input. Without it, Tenants and Subscriptions are read from the cluster (kubeconfig).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub table: TableOutputArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub cluster: cluster::ClusterArgs,
}

/// The output formats of the commands that list objects (`report`, `what-if`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Aligned columns for a terminal.
    Table,
    /// The table with more columns (exact instants).
    Wide,
    /// RFC 4180 CSV with a header row (for spreadsheets).
    Csv,
    /// The data as JSON (`report`: `{"at": ..., "subscriptions": [...]}` with instants as well
    /// as the dates as written; `what-if`: a `v1` `List` of the objects with the status then).
    Json,
    /// The same as YAML.
    Yaml,
    /// `KIND.mailsec.io/NAME`, one a line (for `xargs kubectl ...`).
    Name,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A human summary.
    Table,
    /// Multi-document YAML, the objects with their status.
    Yaml,
    /// A `v1` `List` with `items`.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.yaml");
        std::fs::write(
            &path,
            "warningPeriod: 10d\ngracePeriod: 5d\nbaseProduct: core\n",
        )
        .expect("write");
        let args = PolicyArgs {
            grace_period: Some(chrono::TimeDelta::seconds(3)),
            config: Some(path.clone()),
            ..Default::default()
        };
        let p = args.policy().expect("policy");
        assert_eq!(p.warning_period, chrono::TimeDelta::days(10));
        assert_eq!(p.grace_period, chrono::TimeDelta::seconds(3));
        assert_eq!(p.catalogue.base, "core");
        assert_eq!(p.catalogue.add_ons, Catalogue::default().add_ons);

        std::fs::write(&path, "warningPeriod: soon\n").expect("write");
        let err = PolicyArgs {
            config: Some(path.clone()),
            ..Default::default()
        }
        .policy()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("warningPeriod") && err.contains("e.g. 30d"),
            "{err}"
        );
        std::fs::write(&path, "warnigPeriod: 3d\n").expect("write");
        let err = PolicyArgs {
            config: Some(path),
            ..Default::default()
        }
        .policy()
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }
}
