//! The command line: `crd`, `evaluate` (and, as the operator grows, `run`).

pub mod evaluate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::policy::{
    Catalogue, DEFAULT_ADD_ONS, DEFAULT_BASE_PRODUCT, Policy, parse_period,
};

/// mailsec-operator: licensing lifecycle of the email-security service on Kubernetes.
#[derive(Parser, Debug)]
#[command(name = "mailsec-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions (YAML) generated from the API types.
    Crd,
    /// Print Tenants and Subscriptions from manifests with the status the operator would set at
    /// a given instant ("what happens to my tenants on date X").
    Evaluate(EvaluateArgs),
}

/// The licensing policy, shared by every subcommand that evaluates.
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// How long before the end of a subscription the tenant is warned (30d, 12h, 90s).
    #[arg(long, env = "MAILSEC_WARNING_PERIOD", default_value = "30d", value_parser = parse_period)]
    pub warning_period: chrono::TimeDelta,
    /// How long a tenant stays read-only after its subscription ended, before suspension.
    #[arg(long, env = "MAILSEC_GRACE_PERIOD", default_value = "30d", value_parser = parse_period)]
    pub grace_period: chrono::TimeDelta,
    /// The base product: when it lapses the whole tenant becomes read-only, then suspended.
    #[arg(long, env = "MAILSEC_BASE_PRODUCT", default_value = DEFAULT_BASE_PRODUCT)]
    pub base_product: String,
    /// The add-on products (comma-separated): when one lapses only that add-on is restricted.
    #[arg(long, env = "MAILSEC_ADD_ONS", value_delimiter = ',', default_values_t = DEFAULT_ADD_ONS.map(String::from))]
    pub add_ons: Vec<String>,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            warning_period: self.warning_period,
            grace_period: self.grace_period,
            catalogue: Catalogue {
                base: self.base_product.clone(),
                add_ons: self.add_ons.clone(),
            },
            ..Policy::default()
        }
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A human summary.
    Table,
    /// Multi-document YAML, the objects with their status.
    Yaml,
    /// A `v1` `List` with `items`.
    Json,
}
