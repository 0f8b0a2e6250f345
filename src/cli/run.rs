//! `mailsec-operator run`: the operator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use kube::client::ClientBuilder;

use super::{PolicyArgs, SettingsError};
use crate::controller::api_counter::{ApiCounters, CountingLayer};
use crate::controller::{self, Settings};
use crate::engine::parse_period;
use crate::notify::smtp::SmtpServer;
use crate::notify::webhook::Webhook;
use crate::notify::{EmailChannel, NotifierConfig, NotifyError, Retry, parse_kinds};
use crate::telemetry::{self, LogFormat};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Reconciles in flight at once, per controller.
    #[arg(long, env = "MAILSEC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "MAILSEC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Name of this instance in Events (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// The notifier: milestone e-mails and webhook calls. Off unless `--smtp-url` or
/// `--webhook-url` is given.
#[derive(Args, Debug, Clone)]
pub struct NotifyArgs {
    /// SMTP server for milestone e-mails: smtp://host:25 (plain), smtp://host:587?tls=starttls
    /// (STARTTLS required), smtp://host?tls=opportunistic, smtps://host:465 (TLS).
    #[arg(long, env = "MAILSEC_SMTP_URL", help_heading = "Notifications")]
    pub smtp_url: Option<String>,
    /// Sender of the e-mails, e.g. "Licensing <licensing@example.com>"; its domain also names
    /// the Message-IDs. Required with --smtp-url.
    #[arg(long, env = "MAILSEC_SMTP_FROM", help_heading = "Notifications")]
    pub smtp_from: Option<String>,
    /// Reply-To of the e-mails, e.g. your support desk.
    #[arg(long, env = "MAILSEC_SMTP_REPLY_TO", help_heading = "Notifications")]
    pub smtp_reply_to: Option<String>,
    /// A directory holding the files `username` and `password` (a kubernetes.io/basic-auth
    /// Secret mounted as a volume). Or set MAILSEC_SMTP_USERNAME and MAILSEC_SMTP_PASSWORD.
    #[arg(
        long,
        env = "MAILSEC_SMTP_CREDENTIALS_FILE",
        help_heading = "Notifications"
    )]
    pub smtp_credentials_file: Option<PathBuf>,
    /// Give up on an SMTP conversation after this long (it is retried later).
    #[arg(long, env = "MAILSEC_SMTP_TIMEOUT", default_value = "30s", value_parser = parse_period, help_heading = "Notifications")]
    pub smtp_timeout: chrono::TimeDelta,
    /// Webhook called (HTTP POST, signed JSON) for every notified milestone.
    #[arg(long, env = "MAILSEC_WEBHOOK_URL", help_heading = "Notifications")]
    pub webhook_url: Option<String>,
    /// A file holding the webhook's HMAC-SHA256 secret (e.g. a mounted Secret key). Or set
    /// MAILSEC_WEBHOOK_SECRET. Required with --webhook-url.
    #[arg(
        long,
        env = "MAILSEC_WEBHOOK_SECRET_FILE",
        help_heading = "Notifications"
    )]
    pub webhook_secret_file: Option<PathBuf>,
    /// Milestones that are notified, comma-separated, from: ExpiringSoon, ReadOnly, Suspended,
    /// SubscriptionMissing, Renewed, TrialLicense, SeatLimitExceeded, TransferredIn,
    /// TransferredOut.
    #[arg(
        long,
        env = "MAILSEC_NOTIFY_MILESTONES",
        default_value = "ExpiringSoon,ReadOnly,Suspended,Renewed,TransferredIn,TransferredOut",
        help_heading = "Notifications"
    )]
    pub notify_milestones: String,
    /// Run without the notifier even when --smtp-url or --webhook-url is set.
    #[arg(long, env = "MAILSEC_NO_NOTIFY", help_heading = "Notifications")]
    pub no_notify: bool,
    /// Wait after the first failed delivery attempt; doubled after each further one.
    #[arg(long, env = "MAILSEC_NOTIFY_RETRY_BASE", default_value = "10s", value_parser = parse_period, help_heading = "Notifications")]
    pub notify_retry_base: chrono::TimeDelta,
    /// The longest wait between attempts; failed notifications keep being retried at it.
    #[arg(long, env = "MAILSEC_NOTIFY_RETRY_CAP", default_value = "10m", value_parser = parse_period, help_heading = "Notifications")]
    pub notify_retry_cap: chrono::TimeDelta,
    /// Mark a notification Failed (Warning Event NotificationFailed) after this many attempts.
    #[arg(
        long,
        env = "MAILSEC_NOTIFY_FAILED_AFTER",
        default_value_t = 8,
        help_heading = "Notifications"
    )]
    pub notify_failed_after: u32,
    /// Milestones announced longer ago than this are not notified (e.g. history, when the
    /// notifier is first switched on); delivered records are kept this long.
    #[arg(long, env = "MAILSEC_NOTIFY_MAX_AGE", default_value = "7d", value_parser = parse_period, help_heading = "Notifications")]
    pub notify_max_age: chrono::TimeDelta,
}

fn read_secret(path: &Path) -> Result<String, NotifyError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| NotifyError::Config(format!("{}: {e}", path.display())))
}

impl NotifyArgs {
    /// The notifier these settings describe; None when it is off.
    pub fn config(&self) -> Result<Option<NotifierConfig>, NotifyError> {
        if self.no_notify || (self.smtp_url.is_none() && self.webhook_url.is_none()) {
            return Ok(None);
        }
        let email = match &self.smtp_url {
            None => None,
            Some(url) => {
                let (host, port, tls) = crate::notify::smtp::parse_url(url)?;
                let from = self.smtp_from.as_deref().ok_or_else(|| {
                    NotifyError::Config("--smtp-url needs --smtp-from (the sender address)".into())
                })?;
                let credentials = match &self.smtp_credentials_file {
                    Some(dir) => Some((
                        read_secret(&dir.join("username"))?,
                        read_secret(&dir.join("password"))?,
                    )),
                    None => match (
                        std::env::var("MAILSEC_SMTP_USERNAME").ok(),
                        std::env::var("MAILSEC_SMTP_PASSWORD").ok(),
                    ) {
                        (Some(u), Some(p)) => Some((u, p)),
                        (None, None) => None,
                        _ => {
                            return Err(NotifyError::Config(
                                "set both MAILSEC_SMTP_USERNAME and MAILSEC_SMTP_PASSWORD, or neither".into(),
                            ));
                        }
                    },
                };
                let server = SmtpServer {
                    host,
                    port,
                    tls,
                    credentials,
                    timeout: self.smtp_timeout.to_std().unwrap_or_default(),
                };
                Some(EmailChannel::new(
                    &server,
                    from,
                    self.smtp_reply_to.as_deref(),
                )?)
            }
        };
        let webhook = match &self.webhook_url {
            None => None,
            Some(url) => {
                let secret = match &self.webhook_secret_file {
                    Some(path) => read_secret(path)?,
                    None => std::env::var("MAILSEC_WEBHOOK_SECRET").map_err(|_| {
                        NotifyError::Config(
                            "--webhook-url needs a signing secret: --webhook-secret-file or MAILSEC_WEBHOOK_SECRET".into(),
                        )
                    })?,
                };
                Some(Webhook::new(
                    url,
                    secret.into_bytes(),
                    std::time::Duration::from_secs(10),
                )?)
            }
        };
        let mut config = NotifierConfig::new(email, webhook);
        config.kinds = parse_kinds(&self.notify_milestones)?;
        config.retry = Retry {
            base: self.notify_retry_base,
            cap: self.notify_retry_cap.max(self.notify_retry_base),
            failed_after: self.notify_failed_after.max(1),
        };
        config.max_age = self.notify_max_age;
        Ok(Some(config))
    }
}

/// Why the operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("could not build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
}

/// Starts the operator and runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    telemetry::init(args.log_format);
    let policy = args.policy.policy()?;
    let notifier = args.notify.config()?;
    let config = kube::Config::infer().await?;
    let counters = Arc::new(ApiCounters::default());
    let client = ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    tracing::info!(
        warning_period = %crate::engine::policy::format_period(policy.warning_period),
        grace_period = %crate::engine::policy::format_period(policy.grace_period),
        base_product = %policy.catalogue.base,
        "mailsec-operator starting"
    );
    match &notifier {
        Some(n) => tracing::info!(
            email = ?n.email.as_ref().map(|e| e.from.to_string()),
            webhook = n.webhook.is_some(),
            milestones = ?n.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "notifier on"
        ),
        None if args.notify.no_notify => tracing::info!("notifier off (--no-notify)"),
        None => tracing::info!(
            "notifier off: no --smtp-url or --webhook-url; milestones are only Events and status.milestones"
        ),
    }
    let settings = Settings {
        policy,
        concurrency: args.concurrency,
        instance: args.instance,
        notifier,
    };
    controller::run(client, settings, shutdown_signal()).await;
    tracing::info!(
        writes = counters.writes(),
        reads = counters.reads(),
        watches = counters.watches(),
        "mailsec-operator stopped"
    );
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
