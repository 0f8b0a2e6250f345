//! What the notifications say: subject, body and a one-line hint, in English and Japanese.
//!
//! Every template lives here. Each names the tenant (display name and name), the product, the
//! subscription, the date of the next step and what the administrator must do. Instants are
//! written in UTC with the zone spelled out, so nobody has to guess.
//!
//! `wording` holds what each milestone kind says, language by language, side by side; `notice`
//! frames it with the greeting, the late-notice line and the signature, the same for every kind
//! and language, so only the phrases differ.

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::api::Locale;
use crate::engine::MilestoneKind;

/// What a notification is about: one milestone of one tenant, with the dates it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub kind: MilestoneKind,
    /// `status.milestones[].id`.
    pub milestone_id: String,
    /// The tenant's `metadata.name`.
    pub tenant: String,
    /// `spec.displayName`, or the name when there is none.
    pub display_name: String,
    /// Product id, e.g. `email-safeguard`.
    pub product: String,
    /// The product is the base service: its lapse concerns the whole tenant.
    pub base: bool,
    /// The subscription to renew, when there is one.
    pub subscription: Option<String>,
    /// When the milestone was due.
    pub due_at: DateTime<Utc>,
    /// The end of coverage the milestone is about.
    pub effective_end_at: Option<DateTime<Utc>>,
    /// When the service is (or was) suspended unless renewed.
    pub suspends_at: Option<DateTime<Utc>>,
    /// Announced late (the operator was not running when it was due).
    pub late: bool,
    /// For a transfer: the other tenant.
    pub peer: Option<String>,
}

/// The next thing that happens unless the administrator acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextStep {
    /// Settings freeze (read-only) at this instant.
    ReadOnly(DateTime<Utc>),
    /// The service (or add-on) is suspended at this instant.
    Suspended(DateTime<Utc>),
    /// The trial licence ends at this instant.
    TrialEnds(DateTime<Utc>),
}

impl NextStep {
    pub fn kind(self) -> &'static str {
        match self {
            Self::ReadOnly(_) => "ReadOnly",
            Self::Suspended(_) => "Suspended",
            Self::TrialEnds(_) => "TrialEnds",
        }
    }

    pub fn at(self) -> DateTime<Utc> {
        match self {
            Self::ReadOnly(t) | Self::Suspended(t) | Self::TrialEnds(t) => t,
        }
    }
}

/// A rendered notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    pub subject: String,
    /// Plain text, lines separated by `\n`.
    pub body: String,
    /// What to do, in one sentence (also sent in the webhook body).
    pub hint: String,
}

/// The next step of a milestone, from its dates.
pub fn next_step(f: &Facts) -> Option<NextStep> {
    match f.kind {
        MilestoneKind::ExpiringSoon => f.effective_end_at.map(NextStep::ReadOnly),
        MilestoneKind::ReadOnly | MilestoneKind::SubscriptionMissing => {
            f.suspends_at.map(NextStep::Suspended)
        }
        MilestoneKind::TrialLicense => f.effective_end_at.map(NextStep::TrialEnds),
        MilestoneKind::Suspended
        | MilestoneKind::Renewed
        | MilestoneKind::SeatLimitExceeded
        | MilestoneKind::TransferredIn
        | MilestoneKind::TransferredOut
        | MilestoneKind::PossibleDuplicate => None,
    }
}

/// `s` made safe for one line of human text (an e-mail subject or body, an Event note): line
/// breaks (also U+2028/U+2029), tabs and other whitespace become one space; other control
/// characters (C0 such as NUL, DEL, C1) and bidirectional formatting characters (which can make
/// a text read differently from what it says, e.g. U+202E) are removed; runs of spaces become
/// one, and the ends are trimmed. User fields (`displayName`, admin names) go through this
/// before they are written into a message.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let blank = c.is_whitespace() || matches!(c, '\u{2028}' | '\u{2029}');
        if blank {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_format_control(c) {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Invisible formatting characters that change how text is shown: bidirectional marks,
/// embeddings, overrides and isolates, the zero-width space, invisible operators and the
/// byte-order mark (not the zero-width joiners, which some scripts and emoji need).
fn is_format_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'
            | '\u{200E}'
            | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// The product's name as sold, for the known catalogue; the id otherwise.
pub fn product_name(id: &str) -> String {
    match id {
        "email-safeguard" => "Email Safeguard".into(),
        "email-threat-detection-response" => "Email Threat Detection and Response".into(),
        "email-threat-isolation" => "Email Threat Isolation".into(),
        other => other.into(),
    }
}

/// An instant as people read it: `2027-01-01 00:00 UTC` / `2027年1月1日 00:00 (UTC)`.
pub fn format_date(locale: Locale, t: DateTime<Utc>) -> String {
    match locale {
        Locale::En => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        Locale::Ja => format!(
            "{}年{}月{}日 {:02}:{:02} (UTC)",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minute()
        ),
    }
}

/// Renders the notification of `f` in `locale`, greeting `name` when it is known.
/// Every field that comes from users (display name, admin name, names) is [`sanitize`]d first:
/// none can add a line to the subject or body, or hide text.
pub fn render(locale: Locale, f: &Facts, name: Option<&str>) -> Text {
    let clean = |s: &Option<String>| s.as_deref().map(sanitize).filter(|s| !s.is_empty());
    let f = &Facts {
        display_name: match sanitize(&f.display_name) {
            d if d.is_empty() => sanitize(&f.tenant),
            d => d,
        },
        tenant: sanitize(&f.tenant),
        product: sanitize(&f.product),
        subscription: clean(&f.subscription),
        peer: clean(&f.peer),
        milestone_id: sanitize(&f.milestone_id),
        ..f.clone()
    };
    let name = name.map(sanitize).filter(|n| !n.is_empty());
    let name = name.as_deref();
    notice(locale, f, name)
}

/// The strings every template uses.
struct Parts {
    peer: String,
    display: String,
    tenant: String,
    product: String,
    sub: String,
    due: String,
    end: String,
    susp: String,
    /// What is restricted: the whole tenant for the base service, else only the add-on.
    scope: String,
    /// [`Parts::scope`] at the start of a sentence (English only; Japanese has no capitals).
    scope_cap: String,
    /// There is a subscription to name ([`Parts::sub`] is not a placeholder).
    has_sub: bool,
}

fn parts(locale: Locale, f: &Facts) -> Parts {
    let unknown = match locale {
        Locale::En => "(unknown)",
        Locale::Ja => "(不明)",
    };
    let date = |t: Option<DateTime<Utc>>| {
        t.map(|t| format_date(locale, t))
            .unwrap_or_else(|| unknown.to_string())
    };
    let product = product_name(&f.product);
    let display = f.display_name.clone();
    let (scope, scope_cap) = match (locale, f.base) {
        (Locale::En, true) => (
            format!("the service of tenant {display}"),
            format!("The service of tenant {display}"),
        ),
        (Locale::En, false) => (
            format!("the add-on {product}"),
            format!("The add-on {product}"),
        ),
        (Locale::Ja, true) => (
            "テナントのサービス".to_string(),
            "テナントのサービス".to_string(),
        ),
        (Locale::Ja, false) => (
            format!("アドオン {product} "),
            format!("アドオン {product} "),
        ),
    };
    Parts {
        peer: f.peer.clone().unwrap_or_else(|| unknown.to_string()),
        display,
        tenant: f.tenant.clone(),
        product,
        sub: f.subscription.clone().unwrap_or_else(|| match locale {
            Locale::En => "(none)".into(),
            Locale::Ja => "(なし)".into(),
        }),
        due: format_date(locale, f.due_at),
        end: date(f.effective_end_at),
        susp: date(f.suspends_at),
        scope,
        scope_cap,
        has_sub: f.subscription.is_some(),
    }
}

/// What one milestone's notice says, before the greeting and the signature are added.
struct Wording {
    subject: String,
    /// What happened and what happens next (may span lines).
    what: String,
    /// What the administrator must do.
    todo: String,
    /// [`Text::hint`].
    hint: String,
}

impl Wording {
    fn new(subject: String, what: String, todo: String, hint: String) -> Self {
        Self {
            subject,
            what,
            todo,
            hint,
        }
    }
}

/// The notice in `locale`: the wording of the milestone, framed by greeting and signature.
fn notice(locale: Locale, f: &Facts, name: Option<&str>) -> Text {
    let p = parts(locale, f);
    let w = wording(locale, f.kind, &p);
    let mut body = greeting(locale, name);
    body.push_str(&w.what);
    body.push_str(match locale {
        Locale::En => "\n\nWhat to do: ",
        Locale::Ja => "\n\n必要な対応: ",
    });
    body.push_str(&w.todo);
    body.push('\n');
    if f.late {
        body.push_str(&late_line(locale, &p.due));
    }
    body.push_str(&signature(locale, &p.tenant, &f.milestone_id));
    Text {
        subject: w.subject,
        body,
        hint: w.hint,
    }
}

fn greeting(locale: Locale, name: Option<&str>) -> String {
    match (locale, name) {
        (Locale::En, Some(n)) => format!("Hello {n},\n\n"),
        (Locale::En, None) => "Hello,\n\n".to_string(),
        (Locale::Ja, Some(n)) => format!("{n} 様\n\n"),
        (Locale::Ja, None) => "ご担当者様\n\n".to_string(),
    }
}

/// Said when a notice goes out after `due`, because the operator was not running then.
fn late_line(locale: Locale, due: &str) -> String {
    match locale {
        Locale::En => format!(
            "\n(This notice is late: it was due on {due}, while the licensing operator was not running.)\n"
        ),
        Locale::Ja => format!("\n(この通知は遅れて送信されています。本来の通知日時: {due})\n"),
    }
}

fn signature(locale: Locale, tenant: &str, milestone_id: &str) -> String {
    match locale {
        Locale::En => format!(
            "\n-- \nSent automatically by the mailsec licensing operator for tenant {tenant}.\n\
             Milestone: {milestone_id}\n"
        ),
        Locale::Ja => format!(
            "\n-- \nこのメールはテナント {tenant} のため mailsec ライセンス管理オペレーターが自動送信しています。\n\
             マイルストーン: {milestone_id}\n"
        ),
    }
}

/// What a read-only service still does, and what it no longer allows.
const EN_FROZEN: &str = "mail is still filtered, but settings can not be changed";
const JA_FROZEN: &str = "メールのフィルタリングは継続しますが、設定は変更できません";

/// What the notice of `kind` says in `locale`.
fn wording(locale: Locale, kind: MilestoneKind, p: &Parts) -> Wording {
    match locale {
        Locale::En => wording_en(kind, p),
        Locale::Ja => wording_ja(kind, p),
    }
}

/// The English notices.
fn wording_en(kind: MilestoneKind, p: &Parts) -> Wording {
    use MilestoneKind as K;
    let Parts {
        peer,
        display,
        tenant,
        product,
        sub,
        due,
        end,
        susp,
        scope,
        scope_cap,
        has_sub,
    } = p;
    match kind {
        K::ExpiringSoon => Wording::new(
            format!("[Action required] {product} for {display} ends on {end}"),
            format!(
                "Subscription {sub} for {product} of tenant {display} ({tenant}) ends on {end}.\n\
                 From then on {scope} is read-only for a grace period ({EN_FROZEN}). \
                 On {susp} {scope} is suspended."
            ),
            format!(
                "Renew subscription {sub} before {end} (ask your reseller or sales representative)."
            ),
            format!("Renew subscription {sub} before {end} to avoid read-only mode."),
        ),
        K::ReadOnly => Wording::new(
            format!("[Action required] {product} for {display} is read-only since {end}"),
            format!(
                "Subscription {sub} for {product} of tenant {display} ({tenant}) ended on {end}.\n\
                 {scope_cap} is read-only for the grace period: {EN_FROZEN}. \
                 On {susp} {scope} will be suspended."
            ),
            format!(
                "Renew subscription {sub} before {susp}. If the renewal takes longer, \
                 ask your reseller for a temporary extension."
            ),
            format!("Renew subscription {sub} before {susp} to avoid suspension."),
        ),
        K::Suspended => Wording::new(
            format!("[Action required] {product} for {display} is suspended"),
            format!(
                "The grace period after subscription {sub} for {product} of tenant {display} \
                 ({tenant}) ended on {susp}: {scope} is suspended and no longer filters mail.\n\
                 No data and no settings are lost."
            ),
            format!("Renew subscription {sub} (or buy a new one) to restore the service."),
            format!("Renew or buy a subscription for {product} to restore the service."),
        ),
        K::SubscriptionMissing => Wording::new(
            format!("[Action required] {product} for {display} has no subscription"),
            format!(
                "Tenant {display} ({tenant}) uses {product} but holds no subscription for it \
                 (since {due}).\n{scope_cap} is read-only ({EN_FROZEN}). \
                 On {susp} {scope} will be suspended."
            ),
            format!(
                "Buy a subscription for {product}, or transfer one to tenant {tenant}, before {susp}."
            ),
            format!("Get a subscription for {product} before {susp} to avoid suspension."),
        ),
        K::Renewed => Wording::new(
            format!("{product} for {display} is active again"),
            format!(
                "{product} of tenant {display} ({tenant}) is covered again by subscription {sub}, \
                 until {end}. Settings can be changed again and the service runs as usual."
            ),
            "Nothing.".to_string(),
            "No action needed.".to_string(),
        ),
        K::TrialLicense => Wording::new(
            format!("{product} for {display} runs on a trial licence until {end}"),
            format!(
                "{product} of tenant {display} ({tenant}) is covered only by the trial \
                 subscription {sub}, which ends on {end}."
            ),
            format!("Buy a paid subscription for {product} before {end} to keep the service."),
            format!("Buy a paid subscription before {end}."),
        ),
        K::SeatLimitExceeded => Wording::new(
            format!("[Action required] Subscription {sub} of {display} exceeds its seats"),
            format!(
                "Subscription {sub} ({product}), which covers tenant {display} ({tenant}), \
                 is used by more users than it licenses."
            ),
            "Buy more seats, or reduce the users (spec.users) of the tenants that share it."
                .to_string(),
            format!("Buy more seats for subscription {sub} or reduce its users."),
        ),
        K::TransferredIn => Wording::new(
            format!("Subscription {sub} ({product}) was transferred to {display}"),
            format!(
                "Subscription {sub} for {product} was transferred from tenant {peer} to tenant \
                 {display} ({tenant}) on {due}. It now covers {display}, until {end}."
            ),
            "Nothing. If you did not expect this transfer, contact your reseller or support."
                .to_string(),
            "No action needed.".to_string(),
        ),
        K::TransferredOut => Wording::new(
            format!("Subscription {sub} ({product}) was transferred away from {display}"),
            format!(
                "Subscription {sub} for {product} was transferred from tenant {display} \
                 ({tenant}) to tenant {peer} on {due}. It no longer covers {display}."
            ),
            format!(
                "If {display} still uses {product}, make sure another subscription covers it; \
                 a tenant that is no longer used can be deleted."
            ),
            format!("If {display} still uses {product}, make sure another subscription covers it."),
        ),
        K::PossibleDuplicate if *has_sub => Wording::new(
            format!("[Action required] {display} may have a duplicate tenant: {peer}"),
            format!(
                "{risk}\nTenant {peer} holds subscription {sub} ({product}), valid until {end}, \
                 which {display} is not covered by for as long.",
                risk = duplicate_risk(Locale::En, p),
            ),
            format!(
                "Move subscription {sub} to tenant {tenant} (spec.tenantRef: {tenant}), then \
                 delete tenant {peer} once it owns nothing in force. {annotate}",
                annotate = not_duplicate_advice(Locale::En),
            ),
            format!("Move subscription {sub} to tenant {tenant}, then delete tenant {peer}."),
        ),
        K::PossibleDuplicate => Wording::new(
            format!("{display} may have a duplicate tenant: {peer}"),
            duplicate_risk(Locale::En, p),
            format!(
                "If tenant {peer} is not used, delete it once it owns nothing in force. {annotate}",
                annotate = not_duplicate_advice(Locale::En),
            ),
            format!("Check whether tenant {peer} duplicates {display}."),
        ),
    }
}

/// The Japanese notices.
fn wording_ja(kind: MilestoneKind, p: &Parts) -> Wording {
    use MilestoneKind as K;
    let Parts {
        peer,
        display,
        tenant,
        product,
        sub,
        due,
        end,
        susp,
        scope,
        has_sub,
        ..
    } = p;
    match kind {
        K::ExpiringSoon => Wording::new(
            format!(
                "【要対応】{display}: {product} のサブスクリプションは {end} に有効期限を迎えます"
            ),
            format!(
                "テナント「{display}」({tenant}) の {product} のサブスクリプション {sub} は \
                 {end} に有効期限を迎えます。\n\
                 有効期限後は猶予期間として{scope}が読み取り専用になります ({JA_FROZEN})。\
                 {susp} に{scope}が停止されます。"
            ),
            format!(
                "{end} までにサブスクリプション {sub} を更新してください \
                 (購入元の販売代理店または担当営業にお問い合わせください)。"
            ),
            format!(
                "読み取り専用を避けるため、{end} までにサブスクリプション {sub} を更新してください。"
            ),
        ),
        K::ReadOnly => Wording::new(
            format!("【要対応】{display}: {product} は {end} から読み取り専用です"),
            format!(
                "テナント「{display}」({tenant}) の {product} のサブスクリプション {sub} は \
                 {end} に有効期限が切れました。\n\
                 猶予期間中のため{scope}は読み取り専用です ({JA_FROZEN})。\
                 {susp} に{scope}が停止されます。"
            ),
            format!(
                "{susp} までにサブスクリプション {sub} を更新してください。\
                 更新手続きに時間がかかる場合は、購入元の販売代理店に一時的なサービスの延長を申請してください。"
            ),
            format!(
                "サービス停止を避けるため、{susp} までにサブスクリプション {sub} を更新してください。"
            ),
        ),
        K::Suspended => Wording::new(
            format!("【要対応】{display}: {product} は停止されました"),
            format!(
                "テナント「{display}」({tenant}) の {product} のサブスクリプション {sub} の\
                 猶予期間が {susp} に終了し、{scope}は停止されました。\n\
                 データや設定が失われることはありません。"
            ),
            format!(
                "サブスクリプション {sub} を更新 (または新たに購入) すると、サービスが再開されます。"
            ),
            format!(
                "{product} のサブスクリプションを更新または購入すると、サービスが再開されます。"
            ),
        ),
        K::SubscriptionMissing => Wording::new(
            format!("【要対応】{display}: {product} のサブスクリプションがありません"),
            format!(
                "テナント「{display}」({tenant}) は {product} を利用していますが、\
                 有効なサブスクリプションがありません ({due} 以降)。\n\
                 {scope}は読み取り専用です ({JA_FROZEN})。{susp} に{scope}が停止されます。"
            ),
            format!(
                "{susp} までに {product} のサブスクリプションを購入するか、\
                 テナント {tenant} へサブスクリプションを転送してください。"
            ),
            format!(
                "サービス停止を避けるため、{susp} までに {product} のサブスクリプションを用意してください。"
            ),
        ),
        K::Renewed => Wording::new(
            format!("{display}: {product} は再び有効になりました"),
            format!(
                "テナント「{display}」({tenant}) の {product} は、サブスクリプション {sub} により \
                 {end} まで有効になりました。設定の変更も再び可能で、サービスは通常どおり動作します。"
            ),
            "ありません。".to_string(),
            "対応は不要です。".to_string(),
        ),
        K::TrialLicense => Wording::new(
            format!("{display}: {product} は {end} まで試用版ライセンスで利用中です"),
            format!(
                "テナント「{display}」({tenant}) の {product} は、試用版のサブスクリプション {sub} \
                 のみで有効になっています ({end} まで)。"
            ),
            format!(
                "サービスを継続するには、{end} までに {product} の有償サブスクリプションを購入してください。"
            ),
            format!("{end} までに有償サブスクリプションを購入してください。"),
        ),
        K::SeatLimitExceeded => Wording::new(
            format!("【要対応】{display}: サブスクリプション {sub} のライセンス数を超えています"),
            format!(
                "テナント「{display}」({tenant}) が利用するサブスクリプション {sub} ({product}) の\
                 利用ユーザー数がライセンス数を超えています。"
            ),
            "ライセンス数を追加購入するか、このサブスクリプションを共有するテナントのユーザー数 (spec.users) を減らしてください。"
                .to_string(),
            format!("サブスクリプション {sub} のライセンス数を追加するか、ユーザー数を減らしてください。"),
        ),
        K::TransferredIn => Wording::new(
            format!("{display}: サブスクリプション {sub} ({product}) が転送されました"),
            format!(
                "サブスクリプション {sub} ({product}) は {due} にテナント {peer} から\
                 テナント「{display}」({tenant}) へ転送されました。\
                 今後はこのテナントで {end} まで有効です。"
            ),
            "ありません。心当たりのない転送の場合は、購入元の販売代理店またはサポートセンターにお問い合わせください。"
                .to_string(),
            "対応は不要です。".to_string(),
        ),
        K::TransferredOut => Wording::new(
            format!(
                "{display}: サブスクリプション {sub} ({product}) が他のテナントへ転送されました"
            ),
            format!(
                "サブスクリプション {sub} ({product}) は {due} にテナント「{display}」({tenant}) から\
                 テナント {peer} へ転送されました。このテナントでは無効になりました。"
            ),
            format!(
                "このテナントで引き続き {product} を利用する場合は、別のサブスクリプションを用意してください。\
                 利用していないテナントであれば削除できます。"
            ),
            format!(
                "このテナントで {product} を引き続き利用する場合は、別のサブスクリプションを用意してください。"
            ),
        ),
        K::PossibleDuplicate if *has_sub => Wording::new(
            format!("【要対応】{display}: 重複したテナント {peer} がある可能性があります"),
            format!(
                "{risk}\nテナント {peer} は、このテナントでは同じ期間有効でない {product} の\
                 サブスクリプション {sub} ({end} まで) を保有しています。",
                risk = duplicate_risk(Locale::Ja, p),
            ),
            format!(
                "サブスクリプション {sub} をテナント {tenant} へ移行 (spec.tenantRef: {tenant}) し、\
                 テナント {peer} が有効なサブスクリプションを保有しなくなった後で削除してください。{annotate}",
                annotate = not_duplicate_advice(Locale::Ja),
            ),
            format!(
                "サブスクリプション {sub} をテナント {tenant} へ移行し、テナント {peer} を削除してください。"
            ),
        ),
        K::PossibleDuplicate => Wording::new(
            format!("{display}: 重複したテナント {peer} がある可能性があります"),
            duplicate_risk(Locale::Ja, p),
            format!(
                "テナント {peer} を利用していない場合は、有効なサブスクリプションを保有しなくなった後で\
                 削除してください。{annotate}",
                annotate = not_duplicate_advice(Locale::Ja),
            ),
            format!("テナント {peer} が重複したテナントでないか確認してください。"),
        ),
    }
}

/// Why two tenants that list the same administrator are a risk.
fn duplicate_risk(locale: Locale, p: &Parts) -> String {
    let Parts {
        peer,
        display,
        tenant,
        ..
    } = p;
    match locale {
        Locale::En => format!(
            "Tenant {display} ({tenant}) and tenant {peer} list the same administrator address. \
             A renewal processed late can create a second tenant that holds the new contract, \
             while the tenant in use warns, becomes read-only and is suspended although the \
             licence was paid."
        ),
        Locale::Ja => format!(
            "テナント「{display}」({tenant}) とテナント {peer} に同じ管理者のメールアドレスが\
             登録されています。更新手続きが遅れた場合、新しい契約が別の新しいテナントに登録され、\
             利用中のテナントは契約済みにもかかわらず警告、読み取り専用、停止へと進むことがあります。"
        ),
    }
}

/// How to say that two tenants are used on purpose.
fn not_duplicate_advice(locale: Locale) -> String {
    match locale {
        Locale::En => format!(
            "If both tenants are used on purpose, ask your platform team to annotate \
             one of them {annotation} with the other's name.",
            annotation = crate::api::labels::NOT_DUPLICATE_ANNOTATION,
        ),
        Locale::Ja => format!(
            "両方のテナントを意図して利用している場合は、どちらかのテナントに \
             {annotation} アノテーション (値はもう一方のテナント名) を\
             設定するようプラットフォーム管理者に依頼してください。",
            annotation = crate::api::labels::NOT_DUPLICATE_ANNOTATION,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn sanitize_removes_line_breaks_controls_and_bidi_characters() {
        assert_eq!(
            sanitize("Globex\r\nBcc: evil@example.com"),
            "Globex Bcc: evil@example.com"
        );
        assert_eq!(sanitize("  a\tb\n\n c  "), "a b c");
        assert_eq!(
            sanitize("nul\0byte\u{7f}del\u{85}nel\u{1b}[31mred"),
            // U+0085 (next line) is a line break: a space.
            "nulbytedel nel[31mred"
        );
        // Right-to-left override makes "exe.pdf" read as "fdp.exe"; isolates, marks, BOM.
        assert_eq!(
            sanitize("invoice\u{202E}fdp.exe\u{2066}x\u{2069}\u{200F}\u{FEFF}\u{200B}"),
            "invoicefdp.exex"
        );
        assert_eq!(sanitize("line\u{2028}para\u{2029}end"), "line para end");
        // Text in any script, and joiners that scripts and emoji need, are kept.
        assert_eq!(
            sanitize("情報システム部 👩\u{200D}💻"),
            "情報システム部 👩\u{200D}💻"
        );
        assert_eq!(sanitize("\n\r\0"), "");
    }

    #[test]
    fn user_fields_can_not_add_lines_or_hide_text() {
        let hostile = "Globex\r\nX-Injected: yes\n\nFake body\u{202E}\0";
        for kind in MilestoneKind::ALL {
            for locale in [Locale::En, Locale::Ja] {
                let mut f = facts(kind, true);
                f.display_name = hostile.into();
                f.peer = Some("old\ntenant".into());
                let t = render(locale, &f, Some("Alice\r\nBcc: x@evil.example\u{2066}"));
                for text in [&t.subject, &t.hint] {
                    assert!(
                        !text.chars().any(|c| c.is_control() || is_format_control(c)),
                        "{kind:?} {locale:?}: {text:?}"
                    );
                }
                assert!(
                    !t.body.contains('\r') && !t.body.contains('\0'),
                    "{:?}",
                    t.body
                );
                assert!(!t.body.contains('\u{202E}') && !t.body.contains('\u{2066}'));
                assert!(
                    t.body.lines().all(|l| !l.starts_with("X-Injected")
                        && !l.starts_with("Fake body")
                        && !l.starts_with("Bcc:")
                        && !l.starts_with("tenant")),
                    "{kind:?} {locale:?}: {}",
                    t.body
                );
                if t.subject.contains("Globex") {
                    assert!(
                        t.subject.contains("Globex X-Injected: yes Fake body"),
                        "{}",
                        t.subject
                    );
                }
            }
        }
        // Only blanks: the tenant's name is used instead.
        let mut f = facts(MilestoneKind::ReadOnly, true);
        f.display_name = "\r\n\u{202E}".into();
        assert!(render(Locale::En, &f, None).subject.contains("for globex "));
    }

    fn facts(kind: MilestoneKind, base: bool) -> Facts {
        let end = at(2027, 1, 1);
        let susp = at(2027, 1, 31);
        Facts {
            kind,
            milestone_id: format!("{}/email-safeguard/x", kind.as_str()),
            tenant: "globex".into(),
            display_name: "Globex Japan".into(),
            product: if base {
                "email-safeguard".into()
            } else {
                "email-threat-isolation".into()
            },
            base,
            subscription: Some("globex-esg-2026".into()),
            due_at: match kind {
                MilestoneKind::ExpiringSoon => at(2026, 12, 2),
                MilestoneKind::ReadOnly => end,
                MilestoneKind::Suspended => susp,
                _ => at(2026, 12, 15),
            },
            effective_end_at: Some(end),
            suspends_at: Some(susp),
            late: false,
            peer: Some("globex-old".into()),
        }
    }

    /// Every kind in both languages: (kind, locale, subject must contain, body must contain).
    #[test]
    fn every_kind_in_both_languages_names_tenant_product_subscription_date_and_action() {
        use MilestoneKind::*;
        let cases: &[(MilestoneKind, Locale, &[&str], &[&str])] = &[
            (
                ExpiringSoon,
                Locale::En,
                &[
                    "[Action required]",
                    "Email Safeguard",
                    "Globex Japan",
                    "2027-01-01 00:00 UTC",
                ],
                &[
                    "globex-esg-2026",
                    "(globex)",
                    "ends on 2027-01-01 00:00 UTC",
                    "read-only",
                    "2027-01-31 00:00 UTC",
                    "What to do: Renew subscription globex-esg-2026 before 2027-01-01 00:00 UTC",
                ],
            ),
            (
                ExpiringSoon,
                Locale::Ja,
                &[
                    "【要対応】",
                    "Email Safeguard",
                    "Globex Japan",
                    "2027年1月1日 00:00 (UTC)",
                ],
                &[
                    "テナント「Globex Japan」(globex)",
                    "globex-esg-2026",
                    "読み取り専用",
                    "2027年1月31日 00:00 (UTC) にテナントのサービスが停止",
                    "必要な対応: 2027年1月1日 00:00 (UTC) までにサブスクリプション globex-esg-2026 を更新",
                ],
            ),
            (
                ReadOnly,
                Locale::En,
                &[
                    "[Action required]",
                    "read-only since 2027-01-01 00:00 UTC",
                    "Globex Japan",
                ],
                &[
                    "ended on 2027-01-01 00:00 UTC",
                    "settings can not be changed",
                    "What to do: Renew subscription globex-esg-2026 before 2027-01-31 00:00 UTC",
                ],
            ),
            (
                ReadOnly,
                Locale::Ja,
                &["【要対応】", "読み取り専用", "Globex Japan"],
                &[
                    "有効期限が切れました",
                    "globex-esg-2026",
                    "必要な対応: 2027年1月31日 00:00 (UTC) までにサブスクリプション globex-esg-2026 を更新",
                    "延長",
                ],
            ),
            (
                Suspended,
                Locale::En,
                &["[Action required]", "is suspended", "Globex Japan"],
                &[
                    "ended on 2027-01-31 00:00 UTC",
                    "No data and no settings are lost",
                    "What to do: Renew subscription globex-esg-2026",
                ],
            ),
            (
                Suspended,
                Locale::Ja,
                &["【要対応】", "停止されました", "Globex Japan"],
                &[
                    "2027年1月31日 00:00 (UTC) に終了",
                    "データや設定が失われることはありません",
                    "必要な対応: サブスクリプション globex-esg-2026 を更新",
                ],
            ),
            (
                SubscriptionMissing,
                Locale::En,
                &["has no subscription", "Email Safeguard", "Globex Japan"],
                &[
                    "holds no subscription",
                    "since 2026-12-15 00:00 UTC",
                    "What to do: Buy a subscription for Email Safeguard, or transfer one to tenant globex, before 2027-01-31 00:00 UTC",
                ],
            ),
            (
                SubscriptionMissing,
                Locale::Ja,
                &["サブスクリプションがありません", "Globex Japan"],
                &[
                    "有効なサブスクリプションがありません",
                    "必要な対応: 2027年1月31日 00:00 (UTC) までに Email Safeguard のサブスクリプションを購入",
                ],
            ),
            (
                Renewed,
                Locale::En,
                &["is active again", "Email Safeguard", "Globex Japan"],
                &[
                    "covered again by subscription globex-esg-2026",
                    "until 2027-01-01 00:00 UTC",
                    "What to do: Nothing.",
                ],
            ),
            (
                Renewed,
                Locale::Ja,
                &["再び有効", "Globex Japan"],
                &[
                    "サブスクリプション globex-esg-2026 により 2027年1月1日 00:00 (UTC) まで有効",
                    "必要な対応: ありません。",
                ],
            ),
            (
                TrialLicense,
                Locale::En,
                &["trial licence until 2027-01-01 00:00 UTC", "Globex Japan"],
                &[
                    "trial subscription globex-esg-2026",
                    "What to do: Buy a paid subscription for Email Safeguard before 2027-01-01 00:00 UTC",
                ],
            ),
            (
                TrialLicense,
                Locale::Ja,
                &["試用版ライセンス", "Globex Japan"],
                &[
                    "試用版のサブスクリプション globex-esg-2026",
                    "必要な対応: サービスを継続するには、2027年1月1日 00:00 (UTC) までに",
                ],
            ),
            (
                SeatLimitExceeded,
                Locale::En,
                &["globex-esg-2026", "exceeds its seats", "Globex Japan"],
                &["more users than it licenses", "What to do: Buy more seats"],
            ),
            (
                SeatLimitExceeded,
                Locale::Ja,
                &[
                    "globex-esg-2026",
                    "ライセンス数を超えています",
                    "Globex Japan",
                ],
                &[
                    "利用ユーザー数がライセンス数を超えています",
                    "必要な対応: ライセンス数を追加購入",
                ],
            ),
            (
                TransferredIn,
                Locale::En,
                &["globex-esg-2026", "was transferred to Globex Japan"],
                &[
                    "from tenant globex-old to tenant Globex Japan (globex) on 2026-12-15 00:00 UTC",
                    "until 2027-01-01 00:00 UTC",
                    "What to do: Nothing.",
                ],
            ),
            (
                TransferredIn,
                Locale::Ja,
                &["globex-esg-2026", "転送されました", "Globex Japan"],
                &[
                    "テナント globex-old からテナント「Globex Japan」(globex) へ転送されました",
                    "2027年1月1日 00:00 (UTC) まで有効",
                    "必要な対応: ありません。",
                ],
            ),
            (
                TransferredOut,
                Locale::En,
                &["globex-esg-2026", "was transferred away from Globex Japan"],
                &[
                    "from tenant Globex Japan (globex) to tenant globex-old on 2026-12-15 00:00 UTC",
                    "no longer covers",
                    "What to do: If Globex Japan still uses Email Safeguard",
                ],
            ),
            (
                TransferredOut,
                Locale::Ja,
                &[
                    "globex-esg-2026",
                    "他のテナントへ転送されました",
                    "Globex Japan",
                ],
                &[
                    "テナント「Globex Japan」(globex) からテナント globex-old へ転送されました",
                    "必要な対応: このテナントで引き続き Email Safeguard を利用する場合",
                ],
            ),
            (
                PossibleDuplicate,
                Locale::En,
                &[
                    "[Action required]",
                    "Globex Japan",
                    "duplicate tenant: globex-old",
                ],
                &[
                    "Tenant Globex Japan (globex) and tenant globex-old list the same administrator address",
                    "Tenant globex-old holds subscription globex-esg-2026 (Email Safeguard), valid until 2027-01-01 00:00 UTC",
                    "What to do: Move subscription globex-esg-2026 to tenant globex (spec.tenantRef: globex), then delete tenant globex-old once it owns nothing in force",
                    "mailsec.io/not-duplicate-of",
                ],
            ),
            (
                PossibleDuplicate,
                Locale::Ja,
                &["【要対応】", "Globex Japan", "重複したテナント globex-old"],
                &[
                    "テナント「Globex Japan」(globex) とテナント globex-old に同じ管理者のメールアドレス",
                    "サブスクリプション globex-esg-2026 (2027年1月1日 00:00 (UTC) まで)",
                    "必要な対応: サブスクリプション globex-esg-2026 をテナント globex へ移行 (spec.tenantRef: globex)",
                    "mailsec.io/not-duplicate-of",
                ],
            ),
        ];
        // Every kind is covered in both languages.
        for kind in MilestoneKind::ALL {
            for locale in [Locale::En, Locale::Ja] {
                assert!(
                    cases.iter().any(|c| c.0 == kind && c.1 == locale),
                    "no case for {kind:?} in {locale:?}"
                );
            }
        }
        for (kind, locale, subject_has, body_has) in cases {
            let text = render(*locale, &facts(*kind, true), Some("情報システム部"));
            for s in *subject_has {
                assert!(
                    text.subject.contains(s),
                    "{kind:?} {locale:?}: subject {:?} lacks {s:?}",
                    text.subject
                );
            }
            for s in *body_has {
                assert!(
                    text.body.contains(s),
                    "{kind:?} {locale:?}: body lacks {s:?}:\n{}",
                    text.body
                );
            }
            assert!(
                text.body.contains("情報システム部"),
                "{kind:?} {locale:?}: greets the admin"
            );
            assert!(
                text.body
                    .contains(&format!("{}/email-safeguard/x", kind.as_str()))
            );
            assert!(!text.hint.is_empty());
            assert!(!text.subject.contains('\n'), "one-line subject");
            assert!(!text.body.contains("(unknown)") && !text.body.contains("(不明)"));
        }
    }

    /// Every text of every kind in both languages, whole, as `notification_texts.txt` pins it:
    /// for the base service and an add-on, with and without a subscription, late or on time,
    /// with and without the admin's name. After a deliberate change of wording, rewrite the
    /// file with `MAILSEC_BLESS_TEXTS=1 cargo test --lib notifications::text` and review its diff.
    #[test]
    fn every_text_is_as_pinned() {
        let mut all = String::new();
        for kind in MilestoneKind::ALL {
            for locale in [Locale::En, Locale::Ja] {
                for base in [true, false] {
                    for has_sub in [true, false] {
                        let mut f = facts(kind, base);
                        if !has_sub {
                            f.subscription = None;
                            f.peer = None;
                            f.effective_end_at = None;
                        }
                        f.late = base != has_sub;
                        let name = has_sub.then_some("情報システム部");
                        let t = render(locale, &f, name);
                        all.push_str(&format!(
                            "=== {kind:?} {locale:?} base={base} subscription={has_sub} late={} name={name:?}\n\
                             subject: {}\nhint: {}\n{}\n",
                            f.late, t.subject, t.hint, t.body
                        ));
                    }
                }
            }
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/notifications/notification_texts.txt"
        );
        if std::env::var_os("MAILSEC_BLESS_TEXTS").is_some() {
            std::fs::write(path, &all).expect("write the pinned texts");
        }
        let pinned = include_str!("notification_texts.txt");
        for (got, want) in all.split("=== ").zip(pinned.split("=== ")) {
            assert_eq!(got, want);
        }
        assert_eq!(all, pinned);
    }

    #[test]
    fn add_ons_name_only_the_add_on_and_late_notices_say_so() {
        let mut f = facts(MilestoneKind::ReadOnly, false);
        f.late = true;
        let en = render(Locale::En, &f, None);
        assert!(en.body.starts_with("Hello,\n"));
        assert!(
            en.body
                .contains("The add-on Email Threat Isolation is read-only")
        );
        assert!(
            en.body
                .contains("This notice is late: it was due on 2027-01-01 00:00 UTC")
        );
        let ja = render(Locale::Ja, &f, None);
        assert!(ja.body.starts_with("ご担当者様\n"));
        assert!(
            ja.body
                .contains("アドオン Email Threat Isolation は読み取り専用")
        );
        assert!(ja.body.contains("この通知は遅れて送信されています"));
    }

    #[test]
    fn next_steps() {
        use MilestoneKind::*;
        let end = at(2027, 1, 1);
        let susp = at(2027, 1, 31);
        let cases = [
            (ExpiringSoon, Some(NextStep::ReadOnly(end))),
            (ReadOnly, Some(NextStep::Suspended(susp))),
            (SubscriptionMissing, Some(NextStep::Suspended(susp))),
            (TrialLicense, Some(NextStep::TrialEnds(end))),
            (Suspended, None),
            (Renewed, None),
            (SeatLimitExceeded, None),
            (TransferredIn, None),
            (TransferredOut, None),
        ];
        for (kind, want) in cases {
            assert_eq!(next_step(&facts(kind, true)), want, "{kind:?}");
        }
    }
}
