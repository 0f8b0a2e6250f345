//! `mailsec-operator run`: the operator.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::client::ClientBuilder;

use super::{PolicyArgs, SettingsError};
use crate::controller::api_counter::{ApiCounters, CountingLayer};
use crate::controller::clock::{Clock, ClockError};
use crate::controller::leader::{self, LeaderElection, MIN_LEASE_DURATION};
use crate::controller::{self, DeletionGuard, Settings};
use crate::engine::parse_period;
use crate::metrics::{Metrics, Role};
use crate::notifications::smtp::SmtpServer;
use crate::notifications::webhook::Webhook;
use crate::notifications::{EmailChannel, NotifierConfig, NotifyError, Retry, parse_kinds};
use crate::server::{BindError, Server};
use crate::telemetry::{self, LogFormat};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Reconciles in flight at once, per controller (the tenant and the subscription
    /// controllers lend each other what they do not use).
    #[arg(long, env = "MAILSEC_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Threads that run the controllers. The operator mostly waits on the API server: on one
    /// thread (the default) its tasks never wake each other across threads, which made a
    /// measured cold start of 30,000 objects 0.85× as long, for 0.6× of the operator's CPU, as
    /// on two. More threads only help when one CPU cannot keep up with the reconciles.
    #[arg(long, env = "MAILSEC_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: u16,
    /// Log format.
    #[arg(long, env = "MAILSEC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Name of this instance in Events and in the leader Lease (in a cluster: the pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Run the controllers only while holding the leader Lease, so that several replicas can
    /// run with one active (the Helm chart turns it on).
    #[arg(long, env = "MAILSEC_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "MAILSEC_LEASE_NAME", default_value = "mailsec-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease [default: POD_NAMESPACE, else `default`].
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid after a renewal: a standby takes over at most this long
    /// after the leader died (whole seconds, at least 2s).
    #[arg(long, env = "MAILSEC_LEASE_DURATION", default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// Where to serve /metrics, /healthz and /readyz (port 0: any free port, logged at start).
    #[arg(long, env = "MAILSEC_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// What keeps a tenant that is frozen or holds licences from being deleted: `finalizer`
    /// (one metadata write per tenant; nothing else needed) or `admission` (the
    /// `mailsec-tenant-deletion` ValidatingAdmissionPolicy, which the Helm chart installs and
    /// selects; no write per tenant).
    #[arg(long, env = "MAILSEC_DELETION_GUARD", value_enum, default_value_t = DeletionGuard::Finalizer)]
    pub deletion_guard: DeletionGuard,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub time_lapse: TimeLapseArgs,
}

/// A time lapse, for demos and staging clusters only: the controllers' clock starts at
/// `--time-lapse-from` and runs `--time-lapse-speed` times faster than real time, so subscriptions
/// play out their real lifecycle (30-day periods and all) in minutes. Off unless
/// `--time-lapse-from` is given; logged as a WARN at start and every minute, and exported as
/// `mailsec_clock_speed`.
#[derive(Args, Debug, Clone, Default)]
pub struct TimeLapseArgs {
    /// Run on a time-lapse clock starting at this instant: `now`, a date (YYYY-MM-DD, its start,
    /// UTC) or an RFC 3339 time. Never use it in production.
    #[arg(long, env = "MAILSEC_TIME_LAPSE_FROM", value_parser = parse_lapse_from, help_heading = "Time lapse (demos and staging only)")]
    pub time_lapse_from: Option<LapseFrom>,
    /// Clock seconds per real second under the time lapse [default: 86400, one day per second].
    #[arg(long, env = "MAILSEC_TIME_LAPSE_SPEED", requires = "time_lapse_from", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Time lapse (demos and staging only)")]
    pub time_lapse_speed: Option<u32>,
}

/// Where a time lapse starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapseFrom {
    /// The real time when the operator starts.
    Now,
    At(chrono::DateTime<chrono::Utc>),
}

/// Parses `--time-lapse-from`: `now`, `YYYY-MM-DD` or RFC 3339.
pub fn parse_lapse_from(text: &str) -> Result<LapseFrom, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(LapseFrom::Now);
    }
    super::evaluate::parse_at(text.trim()).map(LapseFrom::At)
}

/// The default time-lapse speed: one day per second.
pub const DEFAULT_LAPSE_SPEED: u32 = 86_400;

impl TimeLapseArgs {
    /// The clock these settings describe, started now.
    pub fn clock(&self) -> Result<Clock, ClockError> {
        match self.time_lapse_from {
            None => Ok(Clock::Real),
            Some(from) => {
                let from = match from {
                    LapseFrom::Now => chrono::Utc::now(),
                    LapseFrom::At(t) => t,
                };
                Clock::lapse(from, self.time_lapse_speed.unwrap_or(DEFAULT_LAPSE_SPEED))
            }
        }
    }
}

/// The runtime the operator runs on with `worker_threads` threads: one is tokio's
/// current-thread runtime (see [`RunArgs::worker_threads`]), more its multi-threaded one.
/// Blocking work (a `/metrics` scrape) runs on the runtime's blocking threads either way.
pub fn runtime(worker_threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(worker_threads))
            .enable_all()
            .build()
    }
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
    /// Sent only over TLS: needs smtps:// or ?tls=starttls.
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
    /// TransferredOut, PossibleDuplicate (to the admins of the tenant in use only).
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
                let (host, port, tls) = crate::notifications::smtp::parse_url(url)?;
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

/// Parses `--lease-duration`: a period like `15s`, whole seconds, at least 2 s.
pub fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let d = crate::engine::parse_period(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| "the lease duration must be positive".to_string())?;
    if d < MIN_LEASE_DURATION || d.subsec_nanos() != 0 {
        return Err(format!(
            "the lease duration must be whole seconds, at least {}s",
            MIN_LEASE_DURATION.as_secs()
        ));
    }
    Ok(d)
}

/// Everything the operator runs with, resolved from the command line.
#[derive(Clone, Debug)]
pub struct Operator {
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
    /// `None`: no leader election, this instance always runs the controllers.
    pub leader_election: Option<LeaderElection>,
}

impl RunArgs {
    /// Resolves the policy, the notifier and the leader-election settings.
    pub fn operator(&self) -> Result<Operator, RunError> {
        let policy = self.policy.policy()?;
        let notifier = self.notify.config()?;
        let clock = self.time_lapse.clock()?;
        let leader_election = self.leader_election.then(|| LeaderElection {
            lease_name: self.lease_name.clone(),
            lease_namespace: self
                .lease_namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            identity: leader::identity(self.instance.as_deref()),
            lease_duration: self.lease_duration,
        });
        Ok(Operator {
            settings: Settings {
                policy,
                concurrency: self.concurrency,
                instance: self.instance.clone(),
                notifier,
                clock,
                deletion_guard: self.deletion_guard,
            },
            metrics_addr: self.metrics_addr,
            leader_election,
        })
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
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
    #[error("time lapse: {0}")]
    Clock(#[from] ClockError),
}

/// Starts the operator and runs until SIGTERM or Ctrl-C.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    telemetry::init(args.log_format);
    crate::allocator::pin_mmap_threshold();
    let operator = args.operator()?;
    match &operator.settings.notifier {
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
    let config = kube::Config::infer().await?;
    let counters = Arc::new(ApiCounters::default());
    let client = ClientBuilder::try_from(config)?
        .with_layer(&CountingLayer {
            counters: counters.clone(),
        })
        .build();
    serve(client, counters, operator, shutdown_signal()).await
}

/// Runs the operator with `client` (whose requests `counters` count) until `shutdown`
/// resolves: the metrics and health endpoint, and the controllers (under leader election when
/// configured).
pub async fn serve(
    client: kube::Client,
    counters: Arc<ApiCounters>,
    operator: Operator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let Operator {
        settings,
        metrics_addr,
        leader_election,
    } = operator;
    let policy = &settings.policy;
    tracing::info!(
        warning_period = %crate::engine::policy::format_period(policy.warning_period),
        grace_period = %crate::engine::policy::format_period(policy.grace_period),
        base_product = %policy.catalogue.base,
        leader_election = leader_election.is_some(),
        clock_speed = settings.clock.speed(),
        "mailsec-operator starting"
    );
    let metrics = Arc::new(Metrics::new(Some(counters.clone())));
    metrics.set_clock_speed(settings.clock.speed());
    let lapse_warnings = warn_about_time_lapse(settings.clock.clone());
    let server = Server::bind(metrics_addr).await?;
    tracing::info!(addr = %server.local_addr(), "serving /metrics, /healthz and /readyz");
    let serving = server.serve(metrics.clone());
    let operating = async {
        match leader_election {
            None => {
                metrics.set_role(Role::Leading);
                controller::run_observed(client, settings, metrics.clone(), shutdown).await;
            }
            Some(election) => {
                leader::run(
                    client.clone(),
                    election,
                    metrics.clone(),
                    shutdown,
                    |stop| {
                        controller::run_observed(
                            client.clone(),
                            settings.clone(),
                            metrics.clone(),
                            stop,
                        )
                    },
                )
                .await;
            }
        }
    };
    tokio::select! {
        _ = operating => {}
        _ = serving => {}
        _ = lapse_warnings => {}
    }
    tracing::info!(
        writes = counters.writes(),
        reads = counters.reads(),
        watches = counters.watches(),
        "mailsec-operator stopped"
    );
    Ok(())
}

/// How often a time lapse is logged again while the operator runs.
pub const LAPSE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Under a time lapse: a WARN at start and every [`LAPSE_WARNING_INTERVAL`], with what the
/// controllers' clock reads. Never resolves (also not on real time).
async fn warn_about_time_lapse(clock: Clock) {
    let Clock::Lapse(lapse) = &clock else {
        return std::future::pending().await;
    };
    tracing::warn!(
        time_lapse_from = %crate::api::date::format_instant(lapse.from()),
        time_lapse_speed = lapse.speed(),
        clock = %crate::api::date::format_instant(clock.now()),
        "TIME LAPSE: the operator's clock is NOT real time: it started at time_lapse_from and runs \
         time_lapse_speed times faster; licences expire, warn and suspend on that clock. For demos \
         and staging only"
    );
    let mut tick = tokio::time::interval(LAPSE_WARNING_INTERVAL);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        tracing::warn!(
            clock = %crate::api::date::format_instant(clock.now()),
            time_lapse_speed = lapse.speed(),
            real_elapsed_s = lapse.real_elapsed().as_secs(),
            "TIME LAPSE still on: the operator's clock is not real time"
        );
    }
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

#[cfg(test)]
mod time_lapse_tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["mailsec-operator", "run"].iter().chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(args) => Ok(*args),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn real_time_unless_a_time_lapse_is_asked_for() {
        let args = run_args(&[]).expect("defaults");
        assert!(!args.time_lapse.clock().expect("clock").is_lapse());

        let args = run_args(&["--time-lapse-from", "2026-12-01"]).expect("lapse");
        let clock = args.time_lapse.clock().expect("clock");
        assert_eq!(clock.speed(), DEFAULT_LAPSE_SPEED);
        let now = clock.now();
        assert!(now >= crate::cli::evaluate::parse_at("2026-12-01").expect("date"));

        let args =
            run_args(&["--time-lapse-from", "now", "--time-lapse-speed", "3600"]).expect("lapse");
        assert_eq!(args.time_lapse.time_lapse_from, Some(LapseFrom::Now));
        assert_eq!(args.time_lapse.clock().expect("clock").speed(), 3600);

        // A speed alone, a zero speed and a bad date are refused.
        assert!(run_args(&["--time-lapse-speed", "86400"]).is_err());
        assert!(run_args(&["--time-lapse-from", "now", "--time-lapse-speed", "0"]).is_err());
        assert!(run_args(&["--time-lapse-from", "tomorrow"]).is_err());
    }
}

#[cfg(test)]
mod notify_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        notify: NotifyArgs,
    }

    /// The notifier settings of `args`, with SMTP credentials in a mounted-Secret directory.
    fn config_with_credentials(args: &[&str]) -> Result<Option<NotifierConfig>, NotifyError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("username"), "user\n").expect("username");
        std::fs::write(dir.path().join("password"), "s3cret\n").expect("password");
        let dir = dir.path().to_string_lossy().into_owned();
        let mut argv = vec!["run", "--smtp-from", "licensing@example.com"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--smtp-credentials-file", &dir]);
        Cli::try_parse_from(argv)
            .expect("arguments")
            .notify
            .config()
    }

    #[test]
    fn smtp_credentials_without_tls_are_refused_at_startup() {
        for url in [
            "smtp://mail.example:25",
            "smtp://mail.example?tls=opportunistic",
        ] {
            let err = config_with_credentials(&["--smtp-url", url])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("without TLS"), "{url}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        for url in [
            "smtp://mail.example:587?tls=starttls",
            "smtps://mail.example:465",
        ] {
            let config = config_with_credentials(&["--smtp-url", url]);
            assert!(matches!(config, Ok(Some(_))), "{url}: {config:?}");
        }
    }
}
