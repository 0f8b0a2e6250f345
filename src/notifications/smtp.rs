//! E-mail over SMTP (lettre): the server URL, the transport, and the message.

use std::time::Duration;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::NotifyError;
use super::text::Text;

/// How the connection to the SMTP server is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// No TLS (a relay on the same host or pod network only).
    None,
    /// STARTTLS, required: the message is never sent in clear.
    StartTls,
    /// STARTTLS when the server offers it, clear text otherwise.
    Opportunistic,
    /// Implicit TLS from the first byte (`smtps://`, usually port 465).
    Tls,
}

/// Where and how to send mail.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpServer {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// User name and password, when the server wants authentication.
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// Parses `smtp://host[:port][?tls=none|starttls|opportunistic]` or `smtps://host[:port]`.
///
/// `smtp://` without `tls` is plain SMTP on port 25; `?tls=starttls` (also `required`) upgrades
/// with STARTTLS and refuses to send in clear (default port 587); `smtps://` is implicit TLS
/// (default port 465). Credentials do not belong in the URL: see `--smtp-credentials-file`.
pub fn parse_url(url: &str) -> Result<(String, u16, SmtpTls), NotifyError> {
    let bad = |why: &str| NotifyError::Config(format!("--smtp-url {url:?}: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad("write smtp://host:port, smtp://host:587?tls=starttls or smtps://host:465")
    })?;
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a.trim_end_matches('/'), Some(q)),
        None => (rest.trim_end_matches('/'), None),
    };
    if authority.contains('@') {
        return Err(bad(
            "put the user name and password in --smtp-credentials-file or MAILSEC_SMTP_USERNAME/MAILSEC_SMTP_PASSWORD, not in the URL",
        ));
    }
    let mut tls = match scheme {
        "smtp" => SmtpTls::None,
        "smtps" => SmtpTls::Tls,
        other => return Err(bad(&format!("unknown scheme {other:?} (smtp or smtps)"))),
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("tls", v)) if scheme == "smtp" => {
                tls = match v {
                    "none" => SmtpTls::None,
                    "starttls" | "required" => SmtpTls::StartTls,
                    "opportunistic" => SmtpTls::Opportunistic,
                    other => {
                        return Err(bad(&format!(
                            "tls={other}: use none, starttls or opportunistic"
                        )));
                    }
                }
            }
            _ => return Err(bad(&format!("unknown parameter {pair:?}"))),
        }
    }
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| bad(&format!("{p:?} is not a port")))
    };
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (h, after) = inner.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(parse_port(p)?)),
            None if after.is_empty() => (h, None),
            None => return Err(bad("text after the IPv6 address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port.unwrap_or(match tls {
        SmtpTls::Tls => 465,
        SmtpTls::StartTls => 587,
        SmtpTls::None | SmtpTls::Opportunistic => 25,
    });
    Ok((host.to_string(), port, tls))
}

/// An SMTP client for one server (a new connection per message: notifications are few).
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpServer {
    /// Refuses a configuration that would send the credentials without TLS: with a user name
    /// and password, the connection must be TLS from the start (`smtps://`) or upgraded with
    /// STARTTLS, required (`?tls=starttls`). Plain SMTP and opportunistic STARTTLS (clear text
    /// when the server, or someone in between, does not offer it) are for relays without
    /// authentication.
    pub fn check(&self) -> Result<(), NotifyError> {
        match (&self.credentials, self.tls) {
            (Some(_), SmtpTls::None | SmtpTls::Opportunistic) => Err(NotifyError::Config(format!(
                "SMTP credentials would be sent to {}:{} without TLS ({}): use \
                 smtp://{}:587?tls=starttls (STARTTLS required) or smtps://{}:465, or remove \
                 the credentials (--smtp-credentials-file, MAILSEC_SMTP_USERNAME/PASSWORD) for \
                 a relay that needs none",
                self.host,
                self.port,
                match self.tls {
                    SmtpTls::None => "plain smtp://",
                    _ => "tls=opportunistic falls back to clear text",
                },
                self.host,
                self.host
            ))),
            _ => Ok(()),
        }
    }
}

impl Mailer {
    /// A client for `server`, once [`SmtpServer::check`] accepts it.
    pub fn new(server: &SmtpServer) -> Result<Self, NotifyError> {
        server.check()?;
        let tls_params = || {
            TlsParameters::new(server.host.clone())
                .map_err(|e| NotifyError::Config(format!("TLS for {}: {e}", server.host)))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)
            .port(server.port)
            .timeout(Some(server.timeout));
        builder = match server.tls {
            SmtpTls::None => builder.tls(Tls::None),
            SmtpTls::StartTls => builder.tls(Tls::Required(tls_params()?)),
            SmtpTls::Opportunistic => builder.tls(Tls::Opportunistic(tls_params()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_params()?)),
        };
        if let Some((user, password)) = &server.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
        })
    }

    /// Sends `message`; Ok once the server accepted it.
    pub async fn send(&self, message: Message) -> Result<(), NotifyError> {
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| NotifyError::Smtp(e.to_string()))
    }
}

/// What goes into one e-mail besides its text.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    pub from: &'a Mailbox,
    pub reply_to: Option<&'a Mailbox>,
    pub to_address: &'a str,
    pub to_name: Option<&'a str>,
    /// The stable `Message-ID` (`<...@domain>`).
    pub message_id: &'a str,
    pub tenant: &'a str,
    pub milestone: &'a str,
}

/// Builds the e-mail: plain text UTF-8, a stable `Message-ID`, `Auto-Submitted:
/// auto-generated` (RFC 3834: no auto-replies) and `X-Mailsec-Tenant`/`X-Mailsec-Milestone`
/// for filtering.
pub fn build_message(env: &Envelope<'_>, text: &Text) -> Result<Message, NotifyError> {
    let address = env
        .to_address
        .parse()
        .map_err(|e| NotifyError::Address(format!("{}: {e}", env.to_address)))?;
    let to = Mailbox::new(env.to_name.map(str::to_string), address);
    let mut builder = Message::builder()
        .from(env.from.clone())
        .to(to)
        .subject(text.subject.clone())
        .message_id(Some(env.message_id.to_string()))
        .date_now()
        .header(ContentType::TEXT_PLAIN)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Mailsec-Tenant"),
            env.tenant.to_string(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Mailsec-Milestone"),
            env.milestone.to_string(),
        ));
    if let Some(r) = env.reply_to {
        builder = builder.reply_to(r.clone());
    }
    builder
        .body(text.body.clone())
        .map_err(|e| NotifyError::Address(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let ok = [
            (
                "smtp://mail.example:2525",
                ("mail.example", 2525, SmtpTls::None),
            ),
            ("smtp://mail.example", ("mail.example", 25, SmtpTls::None)),
            (
                "smtp://mail.example?tls=starttls",
                ("mail.example", 587, SmtpTls::StartTls),
            ),
            (
                "smtp://mail.example:25?tls=required",
                ("mail.example", 25, SmtpTls::StartTls),
            ),
            (
                "smtp://mail.example?tls=opportunistic",
                ("mail.example", 25, SmtpTls::Opportunistic),
            ),
            ("smtps://mail.example", ("mail.example", 465, SmtpTls::Tls)),
            (
                "smtps://mail.example:4650/",
                ("mail.example", 4650, SmtpTls::Tls),
            ),
            ("smtp://127.0.0.1:1025", ("127.0.0.1", 1025, SmtpTls::None)),
            ("smtp://[::1]:1025", ("::1", 1025, SmtpTls::None)),
        ];
        for (url, (host, port, tls)) in ok {
            assert_eq!(
                parse_url(url).unwrap(),
                (host.to_string(), port, tls),
                "{url}"
            );
        }
        for bad in [
            "mail.example:25",
            "http://mail.example",
            "smtp://user:pw@mail.example",
            "smtp://mail.example:port",
            "smtp://mail.example?tls=maybe",
            "smtps://mail.example?tls=none",
            "smtp://:25",
        ] {
            let err = parse_url(bad).unwrap_err().to_string();
            assert!(err.contains("--smtp-url"), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_only_over_tls() {
        let server = |tls, credentials: bool| SmtpServer {
            host: "mail.example".into(),
            port: 587,
            tls,
            credentials: credentials.then(|| ("user".to_string(), "secret".to_string())),
            timeout: Duration::from_secs(5),
        };
        for tls in [SmtpTls::None, SmtpTls::Opportunistic] {
            let err = Mailer::new(&server(tls, true))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("without TLS") && err.contains("tls=starttls"),
                "{tls:?}: {err}"
            );
            assert!(!err.contains("secret"), "never the password: {err}");
            assert!(
                Mailer::new(&server(tls, false)).is_ok(),
                "{tls:?} without credentials"
            );
        }
        for tls in [SmtpTls::StartTls, SmtpTls::Tls] {
            assert!(Mailer::new(&server(tls, true)).is_ok(), "{tls:?}");
        }
    }

    #[test]
    fn message_has_the_stable_id_and_utf8_text() {
        let from: Mailbox = "Licensing <licensing@ops.example>".parse().unwrap();
        let reply: Mailbox = "support@ops.example".parse().unwrap();
        let env = Envelope {
            from: &from,
            reply_to: Some(&reply),
            to_address: "joho@globex.example",
            to_name: Some("情報システム部"),
            message_id: "<mailsec.abc@ops.example>",
            tenant: "globex",
            milestone: "ReadOnly/email-safeguard/2027-01-01T00:00:00Z",
        };
        let text = Text {
            subject: "【要対応】テスト".into(),
            body: "本文\n".into(),
            hint: String::new(),
        };
        let msg = build_message(&env, &text).unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        assert!(
            raw.contains("Message-ID: <mailsec.abc@ops.example>"),
            "{raw}"
        );
        assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
        assert!(raw.contains("X-Mailsec-Tenant: globex"), "{raw}");
        assert!(raw.contains("Reply-To: support@ops.example"), "{raw}");
        assert!(raw.contains("charset=utf-8"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?"), "encoded subject: {raw}");
        assert!(matches!(
            build_message(
                &Envelope {
                    to_address: "not an address",
                    ..env
                },
                &text
            ),
            Err(NotifyError::Address(_))
        ));
    }
}
